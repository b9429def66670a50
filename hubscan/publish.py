"""Publish a survey dataset as a Hugging Face dataset repository, and query a published one.

``hubscan publish DATASET hf://datasets/ORG/NAME`` writes every table of the dataset (its latest Delta
version) as Parquet shards ``data/<table>/part-<sha256[:16]>.parquet`` plus a dataset card (``README.md``)
whose YAML ``configs`` name one config per table (``data_files: data/<table>/*.parquet``, split ``train``),
so the Hub's dataset viewer and ``datasets.load_dataset("ORG/NAME", "<table>")`` read every table
(Hub docs, "Datasets: manual configuration"). The upload is one commit of ``huggingface_hub``'s public API
(``HfApi.create_commit`` with ``CommitOperationAdd`` / ``CommitOperationDelete``; the client pre-uploads
large files itself, through Xet or git-LFS as the Hub asks), based on the head it read
(``parent_commit``: a concurrent publish makes this one fail instead of undoing it).

Shards are content-addressed and their boundaries content-defined, so a later publish after a new survey
uploads only what changed: rows are ordered by model (the ``models`` row's ``analyzed_at``, then
``model_key``; new analyses come last) and a shard ends after a model whose key hashes to 0 modulo
:data:`GROUPS_PER_SHARD` (of that table). A new survey's models land in new shards at the end; a replaced
or removed model changes only the shard that held it. Unchanged shards keep their name and are neither
uploaded nor deleted; a shard whose content changed is deleted and its successor added in the same commit.
Tables without ``model_key`` are grouped by their own key (``survey_id``, ``model_id``, ``edge_key``).

``hubscan sql --dataset hf://datasets/ORG/NAME[@REV]`` downloads the shards (``snapshot_download``, into
the Hugging Face cache: a later query reads them from there) and opens one DuckDB view per table
(:func:`connect`).

The token is ``$HF_TOKEN`` or the saved login (``huggingface_hub``'s own lookup); it is never logged or
printed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hubscan.schema import TABLES
from hubscan.store import Dataset

log = logging.getLogger(__name__)

#: URL prefix of a published census.
PREFIX = "hf://datasets/"
#: Folder of the shards in the repository.
DATA_DIR = "data"
#: Expected number of groups (models; surveys, model ids or edges for the tables without ``model_key``)
#: per shard: a shard ends after a group whose sha256 is 0 modulo this. Chosen so that a shard of a
#: survey of 7B-class models stays within a few hundred MB (esd: 224 matrices × 4,096 float32 eigenvalues
#: ≈ 3.7 MB per model; layers: 224 rows of ~80 columns per model).
GROUPS_PER_SHARD = {"models": 100_000, "layers": 5_000, "esd": 100, "deltas": 2_000, "surveys": 100_000,
                    "accuracy": 100_000, "lineage": 100_000}
#: (group column, sort columns after the group order) per table.
ORDER = {
    "models": ("model_key", []),
    "layers": ("model_key", ["layer_id", "part"]),
    "esd": ("model_key", ["layer_id", "part"]),
    "deltas": ("model_key", ["pair_key", "layer_id", "part"]),
    "surveys": ("survey_id", ["started_at", "survey_id"]),
    "accuracy": ("model_id", ["source", "model_id", "revision", "benchmark", "split", "metric", "provenance_key"]),
    "lineage": ("edge_key", ["edge_key"]),
}
_MODEL_TABLES = ("models", "layers", "esd", "deltas")


@dataclasses.dataclass(frozen=True)
class Shard:
    """One Parquet file of a published table.

    Attributes
    ----------
    table : str
    path : str
        Path in the repository, ``data/<table>/part-<sha256 of the bytes, 16 hex>.parquet``.
    rows : int
    data : bytes
        The Parquet file (zstd).
    """

    table: str
    path: str
    rows: int
    data: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass
class PublishResult:
    """What :func:`publish` did.

    Attributes
    ----------
    url : str
        ``hf://datasets/ORG/NAME``.
    commit : str or None
        The new commit's sha; None when the repository already held exactly this census.
    added, deleted : list of str
        Shards added / deleted by the commit (the card is replaced whenever its text changed).
    unchanged : int
        Shards already in the repository (not uploaded again).
    rows, shards : dict
        table → rows / shards published.
    """

    url: str
    commit: str | None
    added: list[str]
    deleted: list[str]
    unchanged: int
    rows: dict[str, int]
    shards: dict[str, int]


def parse_url(url: str) -> tuple[str, str | None]:
    """``hf://datasets/ORG/NAME[@REV]`` → (``ORG/NAME``, revision or None).

    Raises
    ------
    ValueError
        Not a dataset URL of that form.
    """
    m = re.fullmatch(r"hf://datasets/([\w.\-]+/[\w.\-]+)(?:@([^/]+))?/?", url)
    if not m:
        raise ValueError(f"{url}: not a Hub dataset URL (hf://datasets/ORG/NAME or hf://datasets/ORG/NAME@REV)")
    return m.group(1), m.group(2)


# ------------------------------------------------------------------------------------------------ shards
def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with exactly ``schema``'s columns, in order and types (columns it lacks read null)."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _model_rank(data: Dataset) -> pa.Array:
    """Model keys in publication order: the ``models`` rows by (analyzed_at, model_key)."""
    m = data.read("models", columns=["model_key", "analyzed_at"])
    if m.num_rows == 0:
        return pa.array([], pa.string())
    return m.sort_by([("analyzed_at", "ascending"), ("model_key", "ascending")]).column("model_key").combine_chunks()


def _ordered(table: str, t: pa.Table, rank: pa.Array) -> pa.Table:
    """Rows in publication order (see the module docstring)."""
    group, then = ORDER[table]
    keys = [(c, "ascending") for c in then if c in t.column_names]
    if table in _MODEL_TABLES:
        r = pc.index_in(t.column("model_key"), value_set=rank)
        r = pc.if_else(pc.is_null(r), len(rank), r)  # rows of a model without a models row: last
        t = t.append_column("__rank", r)
        t = t.sort_by([("__rank", "ascending"), ("model_key", "ascending")] + keys).drop_columns(["__rank"])
    elif keys:
        t = t.sort_by(keys)
    return t


def _boundaries(groups: list, per_shard: int) -> list[int]:
    """Row indices where shards end (exclusive), content-defined: after each run of rows of a group whose
    sha256 is 0 modulo ``per_shard``, and at the end."""
    ends = []
    for i, g in enumerate(groups):
        last = i + 1 == len(groups) or groups[i + 1] != g
        if last and (i + 1 == len(groups) or int(hashlib.sha256(str(g).encode()).hexdigest()[:12], 16) % per_shard == 0):
            ends.append(i + 1)
    return ends


def _parquet(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return buf.getvalue()


def shards(data: Dataset, *, groups_per_shard: dict[str, int] | None = None) -> list[Shard]:
    """Every table of ``data`` (latest version) as Parquet shards, in publication order.

    Parameters
    ----------
    data : Dataset
    groups_per_shard : dict, optional
        table → expected groups per shard (default :data:`GROUPS_PER_SHARD`; tests use small numbers).

    Returns
    -------
    list of Shard
        Deterministic: the same rows give the same bytes and paths.
    """
    per = {**GROUPS_PER_SHARD, **(groups_per_shard or {})}
    rank = _model_rank(data)
    out = []
    for table in TABLES:
        if data.table(table) is None:
            continue
        t = _ordered(table, _conform(data.read(table), TABLES[table]), rank)
        if t.num_rows == 0:
            continue
        start = 0
        for end in _boundaries(t.column(ORDER[table][0]).to_pylist(), max(1, int(per[table]))):
            payload = _parquet(t.slice(start, end - start))
            path = f"{DATA_DIR}/{table}/part-{hashlib.sha256(payload).hexdigest()[:16]}.parquet"
            out.append(Shard(table, path, end - start, payload))
            start = end
    return out


# -------------------------------------------------------------------------------------------------- card
def card(repo_id: str, parts: list[Shard], data: Dataset) -> str:
    """The dataset card: YAML ``configs`` (one per table; ``models`` the default) and a description of the
    tables and their columns. Deterministic for the same shards (no dates but the surveys' own)."""
    import hubscan

    tables = list(dict.fromkeys(s.table for s in parts))
    lines = ["---", f"pretty_name: hubscan census {repo_id}", "tags:", "- hubscan", "- htsr", "- weightwatcher",
             "configs:"]
    for t in tables:
        lines += [f"- config_name: {t}", "  data_files:", "  - split: train", f"    path: {DATA_DIR}/{t}/*.parquet"]
        if t == "models":
            lines.append("  default: true")
    lines += ["---", "", f"# hubscan census: {repo_id}", "",
              "Heavy-Tailed Self-Regularization (HTSR) spectra of model weights, surveyed by hubscan "
              "(columns named as WeightWatcher's): one config per table.", ""]
    s = data.read("surveys", columns=["survey_id", "finished_at", "source", "num_models"])
    if s.num_rows:
        last = s.sort_by([("finished_at", "ascending")]).to_pylist()[-1]
        lines += [f"{s.num_rows} survey(s); the last, `{last['survey_id']}` of `{last['source']}`, finished "
                  f"{last['finished_at']}.", ""]
    lines += ["| table | rows | shards | what |", "|---|---|---|---|"]
    for t in tables:
        what = (TABLES[t].metadata or {}).get(b"hubscan.table", t.encode()).decode()
        rows = sum(p.rows for p in parts if p.table == t)
        lines.append(f"| `{t}` | {rows:,} | {sum(p.table == t for p in parts)} | {_TABLE_TEXT.get(t, what)} |")
    lines += ["", "## Query", "", "```bash",
              f'hubscan sql --dataset hf://datasets/{repo_id} "SELECT family, count(*), avg(alpha) FROM latest_models GROUP BY 1"',
              "```", "", "```python", "import datasets",
              f'layers = datasets.load_dataset("{repo_id}", "layers", split="train")', "```", "",
              f"Written by hubscan {hubscan.__version__} (schema version "
              f"{(TABLES['models'].metadata or {}).get(b'hubscan.schema_version', b'?').decode()}).", "",
              "## Columns", ""]
    for t in tables:
        lines += [f"### {t}", "", "| column | type | description |", "|---|---|---|"]
        for f in TABLES[t]:
            desc = ((f.metadata or {}).get(b"description") or b"").decode().replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{f.name}` | {f.type} | {desc} |")
        lines.append("")
    return "\n".join(lines)


_TABLE_TEXT = {"models": "one row per analysis of a model revision", "layers": "one row per weight matrix",
               "esd": "eigenvalues of X = WᵀW per matrix (float32, ascending)", "surveys": "one row per survey run",
               "accuracy": "reported accuracy", "lineage": "one row per (child, parent) edge of a model tree",
               "deltas": "per-layer ESD of ΔW = W_child − W_parent per edge"}


# ----------------------------------------------------------------------------------------------- publish
def publish(dataset: str, url: str, *, endpoint: str | None = None, token: str | None = None,
            private: bool = False, message: str | None = None, groups_per_shard: dict[str, int] | None = None,
            storage_options: dict | None = None) -> PublishResult:
    """Publish (or update) a census: the dataset's tables as shards + card, in one commit.

    Parameters
    ----------
    dataset : str
        The survey dataset (directory or URL).
    url : str
        ``hf://datasets/ORG/NAME`` (``@REV``: a branch to commit to). The repository is created when absent.
    endpoint, token : str, optional
        Hub URL (default ``$HF_ENDPOINT``) and token (default ``$HF_TOKEN`` or the saved login).
    private : bool
        Create the repository private.
    message : str, optional
        Commit message (default: "hubscan census: <tables and rows>").
    groups_per_shard : dict, optional
        See :func:`shards`.
    storage_options : dict, optional
        Filesystem options of ``dataset``.

    Returns
    -------
    PublishResult

    Raises
    ------
    hubscan.errors.DatasetNotFoundError
        No dataset at ``dataset``.
    hubscan.errors.SourceError
        The Hub refused (no write access: one line naming the repository; the token is never shown), or the
        branch moved while publishing.
    ValueError
        ``url`` is not a Hub dataset URL.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    repo_id, revision = parse_url(url)
    data = Dataset(dataset, create=False, **(storage_options or {})).require()
    parts = shards(data, groups_per_shard=groups_per_shard)
    text = card(repo_id, parts, data).encode()
    client = _client(endpoint, token)
    api = client.api
    what = f"{PREFIX}{repo_id}"
    _writing(client.call, api.create_repo, repo_id, repo_type="dataset", private=private, exist_ok=True,
             what=what, retry=False)
    head = client.call(api.dataset_info, repo_id, revision=revision, what=what).sha
    remote = set(client.call(api.list_repo_files, repo_id, repo_type="dataset", revision=head, what=what))
    wanted = {p.path for p in parts}
    adds = [p for p in parts if p.path not in remote]
    deletes = sorted(p for p in remote if p.startswith(f"{DATA_DIR}/") and p not in wanted)
    rows = {t: sum(p.rows for p in parts if p.table == t) for t in dict.fromkeys(p.table for p in parts)}
    ops = ([CommitOperationAdd(p.path, p.data) for p in adds] + [CommitOperationAdd("README.md", text)]
           + [CommitOperationDelete(p) for p in deletes])
    summary = ", ".join(f"{t} {n:,}" for t, n in rows.items())
    info = _writing(client.call, api.create_commit, repo_id, ops, repo_type="dataset", revision=revision,
                    parent_commit=head, commit_message=message or f"hubscan census: {summary} rows",
                    commit_description=f"{len(adds)} shard(s) added, {len(deletes)} removed, "
                                       f"{len(parts) - len(adds)} unchanged.", what=what, retry=False)
    new = info.oid if info.oid != head else None  # the client makes no commit when nothing changed
    log.info("%s: commit %s, %d shard(s) added, %d deleted", what, new, len(adds), len(deletes))
    return PublishResult(what, new, [p.path for p in adds], deletes, len(parts) - len(adds), rows,
                         {t: sum(p.table == t for p in parts) for t in rows})


def _client(endpoint: str | None, token: str | None):
    from hubscan.hub import HubClient
    return HubClient(endpoint=endpoint, token=token)


def _writing(call, fn, *args, what: str, **kwargs):
    """A write call: refused access in one line that says what is needed (never the token)."""
    from hubscan.errors import GatedModelError, SourceError
    try:
        return call(fn, *args, what=what, **kwargs)
    except GatedModelError as exc:
        raise SourceError(what, "no write access: set HF_TOKEN to a token that may write to this repository "
                                f"({exc.reason})") from None


# ------------------------------------------------------------------------------------------------- query
def download(url: str, *, endpoint: str | None = None, token: str | None = None,
             cache_dir: str | None = None) -> str:
    """Download a published census (shards and card) into the Hugging Face cache; returns its folder.

    Raises
    ------
    hubscan.errors.SourceError
        Not found (or private without a token), or the Hub unreachable.
    ValueError
        ``url`` is not a Hub dataset URL.
    """
    from huggingface_hub import snapshot_download

    repo_id, revision = parse_url(url)
    client = _client(endpoint, token)
    return client.call(snapshot_download, repo_id, repo_type="dataset", revision=revision,
                       allow_patterns=[f"{DATA_DIR}/**", "README.md"], endpoint=client.endpoint,
                       token=client.token, cache_dir=cache_dir, what=url)


def connect(url: str, *, endpoint: str | None = None, token: str | None = None, cache_dir: str | None = None):
    """A DuckDB connection with one view per table of a published census (see :func:`download`).

    Returns
    -------
    duckdb.DuckDBPyConnection

    Raises
    ------
    hubscan.errors.DatasetNotFoundError
        The repository holds no hubscan tables.
    """
    import duckdb

    from hubscan.errors import DatasetNotFoundError

    folder = download(url, endpoint=endpoint, token=token, cache_dir=cache_dir)
    con = duckdb.connect()
    found = 0
    for table in TABLES:
        d = os.path.join(folder, DATA_DIR, table)
        files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".parquet")) if os.path.isdir(d) else []
        if not files:
            continue
        found += 1
        lst = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{lst}], union_by_name=true)")
    if not found:
        raise DatasetNotFoundError(url, "no hubscan tables in this repository (publish one with `hubscan publish`)")
    return con
