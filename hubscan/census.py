"""Model-tree census: a base model's descendants on the Hub, each analyzed, and each (child, parent) edge
analyzed as per-layer deltas.

Steps (:func:`census`):

1. **Lineage** — :func:`hubscan.sources.lineage.enumerate_lineage` walks the tree breadth-first from the
   root through the Hub's ``base_model:<relation>:<id>`` tags and pins every node; one ``lineage`` row
   per edge.
2. **Nodes with their edge** — every node is analyzed as a survey analyzes a model (``models`` /
   ``layers`` / ``esd`` rows) and, for its first edge, the rows of ``hubscan.analyze(CHILD, base=PARENT)``
   (ESD of ΔW = W_child − W_parent per matched tensor, quantized children dequantized first, adapters as
   ΔW = s·B·A plus W + ΔW; distance columns) into ``deltas`` — **in one pass over the child's files**
   (:func:`hubscan.sources.open_model` ``own=True``): each of the child's tensors is read once for both.
3. **The parent once per batch** — the children of one parent are taken in batches of ``batch_size``
   (:func:`family_tasks`); a batch is one call of :func:`hubscan.survey.analyze_batch`, which opens the
   parent once (:func:`hubscan.sources.open_shared`) and holds each of its tensors until every child of the
   batch has taken it (:class:`~hubscan.weights.shared.SharedReads`). So a batch reads the parent's tensors
   once and each child's tensors once. Memory: up to the parent's matched tensors until the batch's last child (for
   models larger than memory, ``batch_size=1``: one parent read per child).
4. **Other edges** — an edge whose child is not analyzed now (the dataset holds it) but whose delta is
   missing, and a merge's second parent, are analyzed after the nodes (:func:`analyze_edges`; the child is
   read once more for each such edge).

Nodes the dataset already holds (same revision and options) are not analyzed again (unless ``force``).
``hubscan survey --source hf --lineage ROOT`` runs steps 2–3 on the survey's Ray actors
(:class:`TreeSurvey`; ``deltas`` committed with the nodes, before their ``models`` rows) and writes a
``surveys`` row whose table versions include ``lineage`` and ``deltas``. A plain :func:`census` call
without ``survey=`` does everything in the calling process.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter, defaultdict
from typing import Iterable

from hubscan.analysis import AnalyzeOptions
from hubscan.hub import HubClient
from hubscan.sources.lineage import RELATIONS, Edge, Tree, enumerate_lineage
from hubscan.store import Dataset, config_hash, model_key, pair_key, rows_to_table
from hubscan.survey import Survey, Task, pair_table

log = logging.getLogger(__name__)

__all__ = ["census", "TreeSurvey", "family_tasks", "analyze_edges", "write_lineage", "write_deltas", "edge_key",
           "pair_key"]


def edge_key(root: str, child: str, parent: str) -> str:
    """The ``lineage`` key of one edge of a root's tree: sha256 of the three, 16 hex digits."""
    return hashlib.sha256(f"{root}\0{child}\0{parent}".encode()).hexdigest()[:16]


def _batches(pairs, batch_size: int):
    """``(item, parent)`` pairs grouped by parent, in batches of at most ``batch_size``: ``(parent, [item …])``."""
    by_parent: dict = defaultdict(list)
    for item, parent in pairs:
        by_parent[parent].append(item)
    for parent, items in by_parent.items():
        for i in range(0, len(items), max(1, batch_size)):
            yield parent, items[i:i + max(1, batch_size)]


def analyze_edges(tree: Tree, edges: Iterable[Edge] | None = None, *, client: HubClient | None = None,
                  options: AnalyzeOptions | None = None, batch_size: int = 8):
    """Delta analyses of a tree's edges alone (the children's own analyses not redone), the parent read
    once per batch of its children (:func:`hubscan.survey.analyze_batch`).

    Parameters
    ----------
    tree : Tree
        Nodes pinned (:func:`~hubscan.sources.lineage.enumerate_lineage`).
    edges : iterable of Edge, optional
        Default: all of ``tree.edges``.
    client : HubClient, optional
    options : AnalyzeOptions, optional
    batch_size : int
        Children per parent read.

    Yields
    ------
    (Edge, AnalysisResult or None, dict)
        The result equals ``hubscan.analyze(child, base=parent)``'s (None when the pair could not be
        analyzed); the dict holds ``error`` (a one-line reason or None), ``bytes_read`` (the child's files,
        this pair) and ``parent_bytes_read`` (the parent's files read during this pair: the tensors no
        earlier child of the batch needed; summed over a batch, the parent's tensors once).
    """
    from hubscan.survey import analyze_batch

    client = client or HubClient()
    options = options or AnalyzeOptions()
    edges = tree.edges if edges is None else list(edges)
    for parent, batch in _batches(((e, e.parent) for e in edges), batch_size):
        by_child = {e.child: e for e in batch}
        models = [(tree.nodes[e.child][0], {}, e.child) for e in batch]
        for a in analyze_batch(models, client=client, options=options, parent=tree.nodes[parent][0], own=False):
            info = {"error": None, "bytes_read": 0, "parent_bytes_read": a.parent_bytes_read}
            if isinstance(a.delta, Exception):
                yield by_child[a.key], None, {**info, "error": str(a.delta)}
            else:
                yield by_child[a.key], a.delta, {**info, "bytes_read": int(a.delta.summary.get("bytes_read") or 0)}


def family_tasks(tree: Tree, nodes: list, batch_size: int) -> list:
    """Group the nodes to analyze by parent: each node with an edge in the tree goes with its first edge's
    parent, up to ``batch_size`` children per task (one actor call, the parent read once); the root (and
    any node without an edge) is a task of its own.

    Parameters
    ----------
    tree : Tree
    nodes : list of hubscan.survey.Task
        One model each (the survey's plan).
    batch_size : int

    Returns
    -------
    list of hubscan.survey.Task
        Tasks whose ``parent`` / ``more`` / ``relations`` carry the batches; every node in exactly one.
    """
    first: dict[str, Edge] = {}
    for e in tree.edges:
        first.setdefault(e.child, e)
    tasks = [t for t in nodes if t.ref.id not in first]
    for parent, batch in _batches((((t, first[t.ref.id].relation), first[t.ref.id].parent) for t in nodes
                                   if t.ref.id in first), batch_size):
        head = batch[0][0]
        tasks.append(Task(head.ref, head.meta, head.key, head.attempts, parent=tree.nodes[parent][0],
                          more=tuple((t.ref, t.meta, t.key) for t, _ in batch[1:]),
                          relations={t.key: rel for t, rel in batch}))
    return tasks


def _keys(tree: Tree, options: AnalyzeOptions) -> dict:
    cfg = config_hash(options)
    return {mid: model_key(ref.source, ref.id, ref.revision, cfg) for mid, (ref, _) in tree.nodes.items()}


def other_edges(tree: Tree, tasks: list, ds: Dataset, options: AnalyzeOptions, force: bool) -> list:
    """The edges :func:`family_tasks`' tasks do not analyze and whose delta is still needed: the child's
    pair with this parent is missing from ``deltas`` (or ``force``, or the child is analyzed now, which
    replaces its older delta rows)."""
    covered = {(ref.id, t.parent.id) for t in tasks if t.parent is not None for ref, _, _ in t.models}
    now = {ref.id for t in tasks for ref, _, _ in t.models}
    keys = _keys(tree, options)
    have = ds.keys("deltas", "pair_key") if ds.table("deltas") is not None else set()
    return [e for e in tree.edges if (e.child, e.parent) not in covered
            and (force or e.child in now or pair_key(keys[e.child], e.parent, tree.nodes[e.parent][0].revision) not in have)]


def write_lineage(ds: Dataset, tree: Tree, survey_id: str) -> int:
    """Write a tree's ``lineage`` rows (one per edge, replacing the same edges' older rows); returns their number."""
    rev = {mid: ref.revision for mid, (ref, _) in tree.nodes.items()}
    lineage = [{"edge_key": edge_key(tree.root, e.child, e.parent), "root": tree.root, "child": e.child,
                "parent": e.parent, "relation": e.relation, "depth": e.depth, "found_by": e.found_by,
                "child_revision": rev[e.child], "parent_revision": rev[e.parent], "survey_id": survey_id}
               for e in tree.edges]
    ds.write("lineage", rows_to_table(lineage, "lineage"), replace=("edge_key", [r["edge_key"] for r in lineage]),
             survey_id=survey_id)
    return len(lineage)


def write_deltas(ds: Dataset, tree: Tree, edges: Iterable[Edge], *, client: HubClient, options: AnalyzeOptions,
                 survey_id: str, batch_size: int = 8) -> dict:
    """Analyze edges alone (:func:`analyze_edges`) into ``deltas`` (replacing the same pairs' older rows).

    Returns
    -------
    dict
        ``deltas`` (rows written), ``failed_edges`` (list of (child, parent, reason)), ``bytes_per_child``
        (child → bytes its delta analyses read), ``parent_reads`` (parent → bytes read for its children).
    """
    keys = _keys(tree, options)
    tables, pairs, failed = [], [], []
    per_child, parent_reads = {}, Counter()
    for e, result, info in analyze_edges(tree, list(edges), client=client, options=options, batch_size=batch_size):
        parent_reads[e.parent] += info["parent_bytes_read"]
        if result is None:
            failed.append((e.child, e.parent, info["error"]))
            log.warning("%s <- %s: delta not analyzed: %s", e.child, e.parent, info["error"])
            continue
        per_child[e.child] = per_child.get(e.child, 0) + info["bytes_read"]
        pref = tree.nodes[e.parent][0]
        tables.append(pair_table(keys[e.child], tree.nodes[e.child][0], pref, e.relation, survey_id, result.rows))
        pairs.append(pair_key(keys[e.child], pref.id, pref.revision))
    rows = 0
    if pairs:
        import pyarrow as pa
        table = pa.concat_tables(tables)
        rows = table.num_rows
        ds.write("deltas", table, replace=("pair_key", pairs), survey_id=survey_id)
    return {"deltas": rows, "failed_edges": failed, "bytes_per_child": per_child, "parent_reads": dict(parent_reads)}


class TreeSurvey(Survey):
    """A :class:`~hubscan.survey.Survey` of a model tree (Ray actors, the driver the only committer,
    resumable): its nodes, each with its first edge's delta in the same pass over the child's files and
    the children of one parent batched (:func:`family_tasks`); the ``lineage`` rows and the other edges'
    deltas (:func:`other_edges`) are written in the driver before the ``surveys`` row, so the row's table
    versions include them (the actors stopped by then: the driver's requests take the survey's Hub budget,
    handed back to it by :meth:`~hubscan.survey.Survey._stop_pool`). Edges not analyzed are counted in the
    row's ``num_failed_edges``.

    Parameters
    ----------
    config : SurveyConfig
        Its ``source`` / ``filters`` are recorded in the ``surveys`` row (the CLI: ``hf`` and
        ``{"lineage": ROOT, …}``); the models surveyed are ``tree``'s nodes.
    tree : Tree
    batch_size : int
    """

    def __init__(self, config, tree: Tree, batch_size: int = 8):
        super().__init__(config)
        self.tree, self.batch_size, self.edges, self.others = tree, batch_size, {}, []

    def enumerate(self) -> list:
        return list(self.tree.nodes.values())

    def plan(self) -> None:
        super().plan()
        self.work = type(self.work)(family_tasks(self.tree, list(self.work), self.batch_size))
        self.others = other_edges(self.tree, list(self.work), self.dataset, self.config.options, self.config.force)

    def summary(self) -> dict:
        if self.dataset is not None and not self.interrupted and self.write_error is None:
            write_lineage(self.dataset, self.tree, self.survey_id)
            self.edges = write_deltas(self.dataset, self.tree, self.others, client=self.client, options=self.options,
                                      survey_id=self.survey_id, batch_size=self.batch_size)
            self.edges["failed_edges"] = _dedupe(self.failed_edges + self.edges["failed_edges"])
            self.stats["num_failed_edges"] = len(self.edges["failed_edges"])  # counted in the surveys row
            import pyarrow.dataset as pds
            self.edges["deltas"] = 0 if self.dataset.table("deltas") is None else self.dataset.read(
                "deltas", columns=["survey_id"], filter=pds.field("survey_id") == self.survey_id).num_rows
        return super().summary()


def _dedupe(failed: list) -> list:
    """One (child, parent, reason) per edge, the last reason kept (a retried task reports again)."""
    return list({(c, p): (c, p, r) for c, p, r in failed}.values())


def census(root: str, out: str, *, client: HubClient | None = None, options: AnalyzeOptions | None = None,
           depth: int | None = None, relations=RELATIONS, limit: int | None = None, batch_size: int = 8,
           force: bool = False, storage_options: dict | None = None, survey=None) -> dict:
    """Survey a base model's tree into a dataset: nodes into ``models``/``layers``/``esd``, edges into
    ``lineage``, per-edge deltas into ``deltas`` (module docstring).

    Parameters
    ----------
    root : str
        Hub repo id of the base model.
    out : str
        Dataset path or URL.
    client : HubClient, optional
        For the enumeration and (without ``survey``) the analyses.
    options : AnalyzeOptions, optional
        Without ``survey``; with it, ``survey.options``.
    depth, relations, limit
        As :func:`~hubscan.sources.lineage.enumerate_lineage`.
    batch_size : int
        Children per read of their parent.
    force : bool
        Re-analyze nodes the dataset already holds (without ``survey``; with it, ``survey.force``).
    storage_options : dict, optional
    survey : SurveyConfig, optional
        Analyze with the survey machinery (:class:`TreeSurvey`: Ray actors, progress, a ``surveys``
        row, compaction); ``out``, ``storage_options``, ``force`` and the hub settings come from it. Without
        it everything runs one task after another in this process (no Ray) and no ``surveys`` row is written.

    Returns
    -------
    dict
        ``survey_id``, ``nodes``, ``edges``, ``analyzed`` (nodes analyzed now), ``deltas`` (rows written),
        ``failed_edges`` (list of (child, parent, reason)), ``bytes_per_child`` (child → bytes read from its
        files now, its own analysis and deltas together), ``seconds``, ``tree``, and with ``survey`` its
        ``surveys`` row as ``survey``.

    Raises
    ------
    hubscan.errors.HubscanError
        The root cannot be resolved or the Hub cannot be listed.
    """
    from hubscan.survey import WRITE_ORDER, analyze_models

    t0 = time.perf_counter()
    if survey is not None:  # the survey machinery's entry point: its hub settings, its HTTP client
        from hubscan.hub import install_http_client
        client = HubClient(**survey.hub)
        install_http_client(client.timeout)
    client = client or HubClient()
    tree = enumerate_lineage(root, client, depth=depth, relations=relations, limit=limit)
    if survey is not None:
        run = TreeSurvey(survey, tree, batch_size)
        row = run.run()
        n = sum(row.get(k) or 0 for k in ("num_success", "num_incomplete", "num_failed", "num_skipped"))
        return {"survey_id": run.survey_id, "nodes": len(tree.nodes), "edges": len(tree.edges), "analyzed": n,
                "failed_edges": [], "deltas": 0, **run.edges, "seconds": time.perf_counter() - t0, "tree": tree,
                "survey": row}
    options = options or AnalyzeOptions()
    survey_id = time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime()) + uuid.uuid4().hex[:6]
    ds = Dataset(out, **(storage_options or {}))
    cfg = config_hash(options)
    done = ds.done()
    keys = _keys(tree, options)
    nodes = [Task(ref, meta, keys[mid]) for mid, (ref, meta) in tree.nodes.items() if force or keys[mid] not in done]
    tasks = family_tasks(tree, nodes, batch_size)
    others = other_edges(tree, tasks, ds, options, force)
    rows, failed, per_child = 0, [], Counter()
    for task in tasks:
        for out_ in analyze_models(task.models, parent=task.parent, relations=task.relations, client=client,
                                   options=options, cfg_hash=cfg, survey_id=survey_id, keep_esd=True):
            r = out_["row"]
            per_child[r["model_id"]] += int(r.get("bytes_read") or 0)
            if out_["delta_error"]:
                failed.append((r["model_id"], task.parent.id, out_["delta_error"]))
            for table in WRITE_ORDER:
                if out_.get(table) is not None and out_[table].num_rows:
                    ds.write(table, out_[table], replace=("model_key", [r["model_key"]]), survey_id=survey_id)
            rows += out_["deltas"].num_rows if out_["deltas"] is not None else 0
    write_lineage(ds, tree, survey_id)
    edges = write_deltas(ds, tree, others, client=client, options=options, survey_id=survey_id, batch_size=batch_size)
    for child, n in edges["bytes_per_child"].items():
        per_child[child] += n
    return {"survey_id": survey_id, "nodes": len(tree.nodes), "edges": len(tree.edges), "analyzed": len(nodes),
            "deltas": rows + edges["deltas"], "failed_edges": _dedupe(failed + edges["failed_edges"]),
            "bytes_per_child": dict(per_child), "parent_reads": edges["parent_reads"],
            "seconds": time.perf_counter() - t0, "tree": tree}
