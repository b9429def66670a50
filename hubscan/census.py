"""Model-tree census: a base model's descendants on the Hub, each analyzed, and each (child, parent) edge
analyzed as per-layer deltas.

Steps (:func:`census`):

1. **Lineage** — :func:`hubscan.sources.lineage.enumerate_lineage` walks the tree breadth-first from the
   root through the Hub's ``base_model:<relation>:<id>`` tags and pins every node.
2. **Nodes** — every node analyzed as a survey analyzes a model (:func:`hubscan.survey.analyze_model`:
   ``models`` / ``layers`` / ``esd`` rows); nodes the dataset already holds (same revision and options)
   are not analyzed again.
3. **Edges** — one ``lineage`` row per edge; and per edge the rows of
   ``hubscan.analyze(CHILD, base=PARENT)`` (ESD of ΔW = W_child − W_parent per matched tensor, quantized
   children dequantized first, adapters as ΔW = s·B·A plus W + ΔW; distance columns) into ``deltas``.

**The parent is read once per batch of children.** The children of one parent are taken in batches of
``batch_size``; the parent is opened once per batch and each of its tensors is read the first time a
child of the batch pairs with it and kept until every child of the batch has taken it
(:class:`SharedParent`), so a batch reads the parent's tensors once and each child's own tensors once.
Memory: the batch runs its children one after another, so up to the parent's matched tensors are held
until the batch's last child (for models larger than memory, use ``batch_size=1``: one parent read per
child).

``hubscan survey --source hf --lineage ROOT`` analyzes the nodes with the survey machinery (:class:`TreeSurvey`:
Ray actors, a ``surveys`` row whose table versions include ``lineage`` and ``deltas``); the edges' deltas are
computed in the driver. A plain :func:`census` call without ``survey=`` does everything in the calling process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import uuid
from collections import Counter, defaultdict
from typing import Iterable

from hubscan.analysis import AnalysisResult, AnalyzeOptions, analyze, open_with_base
from hubscan.hub import HubClient
from hubscan.sources.lineage import RELATIONS, Edge, Tree, enumerate_lineage
from hubscan.store import Dataset, config_hash, model_key, rows_to_table
from hubscan.survey import Survey
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.layouts import resolve_layouts

log = logging.getLogger(__name__)


class SharedParent:
    """A parent's tensors read once for ``uses`` children (module docstring).

    Parameters
    ----------
    ws : WeightSet
        The parent, opened.
    uses : int
        Children that will pair with it; a tensor is dropped from memory after the ``uses``-th read.

    Attributes
    ----------
    reads : Counter
        Tensor name → times read from the parent's files (1 each when shared as intended).
    """

    def __init__(self, ws: WeightSet, uses: int):
        self.ws, self.uses = ws, max(1, int(uses))
        self.entries = resolve_layouts(ws.entries())
        self._cache: dict = {}
        self._taken: Counter = Counter()
        self.reads: Counter = Counter()

    def _load(self, e: TensorEntry):
        if e.name not in self._cache:
            self._cache[e.name] = e.load()
            self.reads[e.name] += 1
        self._taken[e.name] += 1
        t = self._cache[e.name]
        if self._taken[e.name] % self.uses == 0:
            del self._cache[e.name]
        return t

    def weightset(self) -> WeightSet:
        """A view for one child: entries whose ``load`` goes through the shared cache; closing it does
        not close the parent (:meth:`close` does)."""
        entries = [dataclasses.replace(e, load=lambda e=e: self._load(e)) for e in self.entries]
        return WeightSet(files=list(self.ws.files), format=self.ws.format, entries=lambda: iter(entries),
                         missing=list(self.ws.missing), close=lambda: None, stats={})

    def close(self) -> None:
        self._cache.clear()
        self.ws.close()

    @property
    def bytes_read(self) -> int:
        """Bytes of the parent's files read so far."""
        return int(self.ws.stats.get("bytes_read", 0))


def pair_key(child_key: str, parent: str, parent_revision: str | None) -> str:
    """The ``deltas`` key of one (child analysis, parent revision) pair: sha256 of the three, 16 hex digits."""
    return hashlib.sha256(f"{child_key}\0{parent}\0{parent_revision or ''}".encode()).hexdigest()[:16]


def edge_key(root: str, child: str, parent: str) -> str:
    """The ``lineage`` key of one edge of a root's tree: sha256 of the three, 16 hex digits."""
    return hashlib.sha256(f"{root}\0{child}\0{parent}".encode()).hexdigest()[:16]


def analyze_edges(tree: Tree, edges: Iterable[Edge] | None = None, *, client: HubClient | None = None,
                  options: AnalyzeOptions | None = None, batch_size: int = 8):
    """Delta analyses of a tree's edges, the parent read once per batch of its children.

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
        opened); the dict holds ``error`` (a one-line reason or None), ``bytes_read`` (the child's files,
        this pair) and ``parent_bytes_read`` (the parent's files read during this pair: the tensors no
        earlier child of the batch needed; summed over a batch, the parent's tensors once).
    """
    from hubscan.sources import open_model
    from hubscan.errors import HubscanError

    client = client or HubClient()
    options = options or AnalyzeOptions()
    by_parent: dict[str, list[Edge]] = defaultdict(list)
    for e in (tree.edges if edges is None else edges):
        by_parent[e.parent].append(e)
    for parent, children in by_parent.items():
        pref = tree.nodes[parent][0]
        for i in range(0, len(children), batch_size):
            batch = children[i:i + batch_size]
            try:
                shared = SharedParent(open_model(pref, client)[0], len(batch))
            except HubscanError as exc:
                for e in batch:
                    yield e, None, {"error": f"parent {parent}: {exc}", "bytes_read": 0, "parent_bytes_read": 0}
                continue
            try:
                for e in batch:
                    before = shared.bytes_read
                    try:
                        ws, _, _ = open_with_base(tree.nodes[e.child][0], shared.weightset(), client)
                        result = analyze(ws, options)
                    except HubscanError as exc:
                        yield e, None, {"error": str(exc), "bytes_read": 0, "parent_bytes_read": 0}
                        continue
                    yield e, result, {"error": None, "bytes_read": int(result.summary.get("bytes_read") or 0),
                                      "parent_bytes_read": shared.bytes_read - before}
            finally:
                shared.close()


def write_edges(ds: Dataset, tree: Tree, *, client: HubClient, options: AnalyzeOptions, survey_id: str,
                batch_size: int = 8) -> dict:
    """Write a tree's ``lineage`` rows and its edges' ``deltas`` rows (:func:`analyze_edges`) into a dataset.

    Returns
    -------
    dict
        ``deltas`` (rows written), ``failed_edges`` (list of (child, parent, reason)), ``bytes_per_child``
        (child → bytes its delta analyses read), ``parent_reads`` (parent → bytes read for its children).
    """
    cfg = config_hash(options)
    rev = {mid: ref.revision for mid, (ref, _) in tree.nodes.items()}
    keys = {mid: model_key(ref.source, ref.id, ref.revision, cfg) for mid, (ref, _) in tree.nodes.items()}
    lineage = [{"edge_key": edge_key(tree.root, e.child, e.parent), "root": tree.root, "child": e.child,
                "parent": e.parent, "relation": e.relation, "depth": e.depth, "found_by": e.found_by,
                "child_revision": rev[e.child], "parent_revision": rev[e.parent], "survey_id": survey_id}
               for e in tree.edges]
    ds.write("lineage", rows_to_table(lineage, "lineage"), replace=("edge_key", [r["edge_key"] for r in lineage]),
             survey_id=survey_id)
    rows, pairs, failed = [], [], []
    per_child, parent_reads = {}, Counter()
    for e, result, info in analyze_edges(tree, client=client, options=options, batch_size=batch_size):
        parent_reads[e.parent] += info["parent_bytes_read"]
        if result is None:
            failed.append((e.child, e.parent, info["error"]))
            log.warning("%s <- %s: delta not analyzed: %s", e.child, e.parent, info["error"])
            continue
        per_child[e.child] = per_child.get(e.child, 0) + info["bytes_read"]
        ref = tree.nodes[e.child][0]
        pk = pair_key(keys[e.child], e.parent, rev[e.parent])
        pairs.append(pk)
        ident = {"pair_key": pk, "model_key": keys[e.child], "source": ref.source, "model_id": ref.id,
                 "revision": ref.revision, "parent_id": e.parent, "parent_revision": rev[e.parent],
                 "relation": e.relation, "survey_id": survey_id}
        rows.extend({**ident, **r} for r in result.rows)
    if pairs:
        ds.write("deltas", rows_to_table(rows, "deltas"), replace=("pair_key", pairs), survey_id=survey_id)
    return {"deltas": len(rows), "failed_edges": failed, "bytes_per_child": per_child,
            "parent_reads": dict(parent_reads)}


class TreeSurvey(Survey):
    """A :class:`~hubscan.survey.Survey` of a model tree's nodes (Ray actors, the driver the only committer,
    resumable) that writes the tree's ``lineage`` and ``deltas`` in the driver before its ``surveys`` row,
    so the row's table versions include them.

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
        self.tree, self.batch_size, self.edges = tree, batch_size, {}

    def enumerate(self) -> list:
        return list(self.tree.nodes.values())

    def summary(self) -> dict:
        if self.dataset is not None and not self.interrupted:
            self.edges = write_edges(self.dataset, self.tree, client=self.client, options=self.options,
                                     survey_id=self.survey_id, batch_size=self.batch_size)
        return super().summary()


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
        Analyze the nodes with the survey machinery (:class:`TreeSurvey`: Ray actors, progress, a ``surveys``
        row, compaction); ``out``, ``storage_options``, ``force`` and the hub settings come from it. Without
        it the nodes are analyzed one after another in this process (no Ray) and no ``surveys`` row is written.

    Returns
    -------
    dict
        ``survey_id``, ``nodes``, ``edges``, ``analyzed`` (nodes analyzed now), ``deltas`` (rows written),
        ``failed_edges``, ``bytes_per_child``, ``parent_reads`` (:func:`write_edges`), ``seconds``, ``tree``,
        and with ``survey`` its ``surveys`` row as ``survey``.

    Raises
    ------
    hubscan.errors.HubscanError
        The root cannot be resolved or the Hub cannot be listed.
    """
    from hubscan.survey import analyze_model

    t0 = time.perf_counter()
    if survey is not None:
        client = HubClient(**survey.hub)
    client = client or HubClient()
    tree = enumerate_lineage(root, client, depth=depth, relations=relations, limit=limit)
    if survey is not None:
        run = TreeSurvey(survey, tree, batch_size)
        row = run.run()
        n = sum(row.get(k) or 0 for k in ("num_success", "num_incomplete", "num_failed", "num_skipped"))
        return {"survey_id": run.survey_id, "nodes": len(tree.nodes), "edges": len(tree.edges), "analyzed": n,
                **run.edges, "seconds": time.perf_counter() - t0, "tree": tree, "survey": row}
    options = options or AnalyzeOptions()
    survey_id = time.strftime("%Y%m%dT%H%M%SZ-", time.gmtime()) + uuid.uuid4().hex[:6]
    ds = Dataset(out, **(storage_options or {}))
    cfg = config_hash(options)
    done = ds.done()
    analyzed = 0
    for mid, (ref, meta) in tree.nodes.items():
        key = model_key(ref.source, ref.id, ref.revision, cfg)
        if key in done and not force:
            continue
        res = analyze_model(ref, meta, key, options=options, cfg_hash=cfg, survey_id=survey_id, client=client,
                            keep_esd=True)
        for table in ("esd", "layers", "models"):
            if res[table] is not None:
                ds.write(table, res[table], replace=("model_key", [key]), survey_id=survey_id)
        analyzed += 1
    edges = write_edges(ds, tree, client=client, options=options, survey_id=survey_id, batch_size=batch_size)
    return {"survey_id": survey_id, "nodes": len(tree.nodes), "edges": len(tree.edges), "analyzed": analyzed,
            **edges, "seconds": time.perf_counter() - t0, "tree": tree}
