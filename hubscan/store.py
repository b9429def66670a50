"""The survey dataset: Delta Lake tables (delta-rs, the ``deltalake`` package; no JVM).

Layout::

    DATASET/models/    one row per analysis of a model revision       partitioned by source
    DATASET/layers/    one row per matrix                             partitioned by source
    DATASET/esd/       eigenvalues per matrix (float32 list)          partitioned by source
    DATASET/accuracy/  reported accuracy (:mod:`hubscan.accuracy`)   partitioned by source
    DATASET/surveys/   one row per survey run

Each folder is a Delta table: Parquet data files plus a ``_delta_log`` of JSON commits. Its schema
(with every column's description and ``hubscan.schema_version``) comes from :mod:`hubscan.schema`;
columns added to hubscan later are added to an existing table before the next commit.

``model_key`` = sha256 of (source, model id, revision, analysis-config hash), 16 hex digits: a
new revision or new analysis settings give a new key.

Writers and the committer (how concurrent writers on S3 need no lock service):

- :meth:`Dataset.write_files` writes data files (many models per file) and returns Delta
  ``AddAction`` s; the files are invisible to every reader until committed. Survey actors call it.
- :meth:`Dataset.commit` commits actions in one Delta transaction. Only one process commits to a
  dataset at a time (the survey driver, or the CLI command that writes), so commits never race and
  S3 needs no locking (``AWS_S3_ALLOW_UNSAFE_RENAME`` is safe with a single committer).
- ``replace=(column, keys)`` makes a commit a replace: files holding rows of those keys are
  removed and their other rows rewritten into a new file, in the same transaction as the adds, so
  no reader ever sees a key twice or not at all.
- The survey commits a batch's ``layers`` / ``esd`` before its ``models`` rows: the done-set
  (``models``) never names a model whose layers are not visible.

Maintenance: :meth:`Dataset.compact` runs Delta's ``optimize.compact`` (small files → few large
ones) and ``vacuum`` (deletes files no current version or kept survey version references: removed
files past the retention, and uncommitted files of killed actors / drivers). The table versions of
every survey are recorded in its ``surveys`` row and kept by vacuum, so each survey stays queryable
as it was (:func:`hubscan.query.connect` ``as_of``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Mapping
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hubscan.records import EsdRecord, LayerRecord, ModelRecord
from hubscan.schema import SCHEMA_VERSION, TABLES, rows_to_table, table_schema

log = logging.getLogger(__name__)

#: Partition columns of each table.
PARTITION_BY = {"models": ["source"], "layers": ["source"], "esd": ["source"], "accuracy": ["source"], "surveys": [],
                "lineage": [], "deltas": ["source"]}
#: Hours a removed file is kept by vacuum (Delta's default, 7 days): readers of an older snapshot
#: and ``--as-of`` of versions no survey recorded keep working that long.
DEFAULT_RETENTION_HOURS = 168

# pyarrow S3FileSystem option → object_store (delta-rs) option
_S3_KEYS = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN",
            "region": "AWS_REGION"}


def model_key(source: str, model_id: str, revision: str | None, config_hash: str) -> str:
    """The dataset key of one analysis of one model revision: sha256 of the four, 16 hex digits."""
    payload = json.dumps([source, model_id, revision or "", config_hash])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def config_hash(options) -> str:
    """Hash of the analysis settings that change the numbers (not the device), 12 hex digits.

    Parameters
    ----------
    options : hubscan.analysis.AnalyzeOptions or dict
    """
    import dataclasses
    d = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    for k in ("device", "keep_evals"):
        d.pop(k, None)
    from hubscan.analysis import ADDED_OPTIONS, AnalyzeOptions
    defaults = AnalyzeOptions()
    for k in ADDED_OPTIONS:  # new options at their default leave old hashes unchanged
        if k in d and d[k] == getattr(defaults, k):
            d.pop(k)
    d["schema_version"] = SCHEMA_VERSION
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _split_options(url: str, storage_options: dict) -> tuple[dict, dict]:
    """Storage options → (pyarrow filesystem options, delta-rs object_store options).

    Accepts pyarrow's S3 names (``endpoint_override``, ``scheme``, ``access_key``, ``secret_key``,
    ``region``) and object_store's (``AWS_ENDPOINT_URL`` …); each is translated to the other.
    """
    pa_opts, delta = {}, {}
    for k, v in storage_options.items():
        if k.isupper():
            delta[k] = str(v)
        else:
            pa_opts[k] = v
    if url.startswith("s3://"):
        if "endpoint_override" in pa_opts:
            scheme = pa_opts.get("scheme", "https")
            delta.setdefault("AWS_ENDPOINT_URL", f"{scheme}://{pa_opts['endpoint_override']}")
        for pk, dk in _S3_KEYS.items():
            if pk in pa_opts:
                delta.setdefault(dk, str(pa_opts[pk]))
            elif dk in delta:
                pa_opts.setdefault(pk, delta[dk])
        if "AWS_ENDPOINT_URL" in delta and "endpoint_override" not in pa_opts:
            scheme, _, host = delta["AWS_ENDPOINT_URL"].partition("://")
            pa_opts.update(endpoint_override=host, scheme=scheme)
        if delta.get("AWS_ENDPOINT_URL", "").startswith("http://"):
            delta.setdefault("AWS_ALLOW_HTTP", "true")
        delta.setdefault("AWS_S3_ALLOW_UNSAFE_RENAME", "true")  # one committer: no lock service needed
    return pa_opts, delta


def open_filesystem(url: str, **storage_options) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and base path for a dataset location (where data files are written).

    Parameters
    ----------
    url : str
        A local path or ``s3://bucket/prefix`` / ``gs://…`` (the object stores delta-rs reads).
    **storage_options
        Filesystem options (e.g. ``endpoint_override="127.0.0.1:9000", scheme="http"`` for
        S3-compatible servers; object_store's ``AWS_*`` names are accepted too).

    Returns
    -------
    (pyarrow.fs.FileSystem, str)

    Raises
    ------
    ValueError
        A URL scheme delta-rs cannot commit to.
    """
    if "://" not in url or url.startswith("file://"):
        return pafs.LocalFileSystem(), os.path.abspath(url.removeprefix("file://"))
    scheme, rest = url.split("://", 1)
    pa_opts, _ = _split_options(url, storage_options)
    if scheme == "s3":
        return pafs.S3FileSystem(**pa_opts), rest.rstrip("/")
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem(**pa_opts), rest.rstrip("/")
    raise ValueError(f"{url}: unsupported dataset location (a local path, s3:// or gs://)")


class Dataset:
    """A hubscan survey dataset: one Delta table per entry of :data:`TABLES` (see the module
    docstring for layout and guarantees).

    Parameters
    ----------
    url : str
        Local path or ``s3://`` / ``gs://`` URL.
    create : bool
        Create the (local) folder when writing; False for readers.
    **storage_options
        See :func:`open_filesystem`.
    """

    def __init__(self, url: str, *, create: bool = True, **storage_options):
        self.url = url
        self.storage_options = dict(storage_options)
        self.fs, self.root = open_filesystem(url, **storage_options)
        self.delta_options = _split_options(url, storage_options)[1]
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self._create = create
        self._tables: dict = {}

    # -- tables ----------------------------------------------------------------------------------
    def uri(self, table: str) -> str:
        """The table's location (a local path or a URL)."""
        if self.local:
            return posixpath.join(self.root, table)
        return f"{self.url.split('://', 1)[0]}://{posixpath.join(self.root, table)}"

    def table(self, table: str, version: int | None = None):
        """The table as a ``deltalake.DeltaTable`` (latest, or at ``version``); None when absent."""
        from deltalake import DeltaTable
        if version is None and table in self._tables:
            dt = self._tables[table]
            dt.update_incremental()
            return dt
        if not DeltaTable.is_deltatable(self.uri(table), storage_options=self.delta_options):
            return None
        dt = DeltaTable(self.uri(table), version=version, storage_options=self.delta_options)
        if version is None:
            self._tables[table] = dt
        return dt

    def require(self) -> "Dataset":
        """Raise a one-line error when there is no hubscan dataset here (no table exists).

        Raises
        ------
        hubscan.errors.DatasetNotFoundError
        """
        if not any(self.table(t) is not None for t in ("models", "layers", "accuracy", "surveys")):
            from hubscan.errors import DatasetNotFoundError
            hint = " (a schema-v1 dataset: convert it with `hubscan migrate`)" if self._is_v1() else \
                " (run `hubscan survey` first)"
            raise DatasetNotFoundError(self.url, "no hubscan dataset here" + hint)
        return self

    def _is_v1(self) -> bool:
        info = self.fs.get_file_info(posixpath.join(self.root, "table=models"))
        return info.type == pafs.FileType.Directory

    def version(self, table: str) -> int | None:
        """The table's latest version, None when absent."""
        dt = self.table(table)
        return None if dt is None else dt.version()

    def arrow_dataset(self, table: str, version: int | None = None):
        """A lazy ``pyarrow.dataset.Dataset`` of the table's live files (None when absent): what
        DuckDB, pandas or polars scan with projection and filter pushdown.

        Built from the Delta snapshot's add actions (the files and their partition values) on the
        dataset's pyarrow filesystem, with the Delta schema (columns older files lack read null) —
        what ``DeltaTable.to_pyarrow_dataset()`` builds, without routing reads through delta-rs.
        """
        dt = self.table(table, version)
        if dt is None:
            return None
        import pyarrow.dataset as pds
        schema = pa.schema(dt.schema().to_arrow())
        fmt = pds.ParquetFileFormat()
        frags = [fmt.make_fragment(path, filesystem=self.fs, partition_expression=expr)
                 for _, path, expr in self._live_files(table, dt)]
        return pds.FileSystemDataset(frags, schema, fmt, filesystem=self.fs)

    def _live_files(self, table: str, dt) -> list[tuple[dict, str, object]]:
        """(add action row, filesystem path, partition expression) of each live file."""
        import pyarrow.dataset as pds
        from urllib.parse import unquote
        parts = PARTITION_BY[table]
        adds = pa.table(dt.get_add_actions(flatten=True))
        out = []
        for row in adds.select(["path", "size_bytes"] + [f"partition.{p}" for p in parts]).to_pylist():
            expr = pds.scalar(True)
            for p in parts:
                expr = expr & (pds.field(p) == row[f"partition.{p}"])
            out.append((row, posixpath.join(self.root, table, unquote(row["path"])), expr))
        return out

    def read(self, table: str, columns: list[str] | None = None, version: int | None = None, filter=None) -> pa.Table:
        """Read a table (all partitions; ``columns`` that the table lacks are left out)."""
        ds = self.arrow_dataset(table, version)
        if ds is None:
            schema = TABLES.get(table)
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.select([c for c in columns if c in empty.column_names]) if columns else empty
        if columns is not None:
            columns = [c for c in columns if c in ds.schema.names]
        return ds.to_table(columns=columns, filter=filter)

    def files(self, table: str) -> list[str]:
        """The data files the table's latest version references (paths relative to the table)."""
        dt = self.table(table)
        return [] if dt is None else sorted(pa.table(dt.get_add_actions()).column("path").to_pylist())

    def done(self) -> dict[str, str]:
        """model_key → status of every model with a ``models`` row (committed)."""
        t = self.read("models", columns=["model_key", "status"])
        return dict(zip(t.column("model_key").to_pylist(), t.column("status").to_pylist()))

    def keys(self, table: str, column: str = "model_key") -> set:
        """The distinct values of a key column of a table (e.g. models with layer rows)."""
        import pyarrow.compute as pc
        t = self.read(table, columns=[column])
        return set(pc.unique(t.column(column)).to_pylist()) if t.num_rows else set()

    # -- writing ---------------------------------------------------------------------------------
    def write_files(self, table: str, data: pa.Table) -> list:
        """Write rows as data files of a table, one file per partition, NOT committed.

        Parameters
        ----------
        table : str
        data : pyarrow.Table
            Rows with the table's schema (:data:`TABLES`).

        Returns
        -------
        list of deltalake.transaction.AddAction
            To pass to :meth:`commit` (picklable: survey actors return them to the driver).
        """
        from deltalake.transaction import AddAction
        parts = PARTITION_BY[table]
        schema = TABLES[table]
        data = data.select(schema.names).cast(schema)
        groups = [((), data)]
        if parts:
            import pyarrow.compute as pc
            col = parts[0]
            groups = []
            for value in sorted(set(data.column(col).to_pylist())):
                if value is None:
                    raise ValueError(f"{table}: row without a {col}")
                groups.append(((value,), data.filter(pc.equal(data.column(col), value)).drop_columns(parts)))
        actions = []
        for values, rows in groups:
            if rows.num_rows == 0:
                continue
            rel = posixpath.join(*[f"{c}={v}" for c, v in zip(parts, values)],
                                 f"part-{uuid.uuid4().hex}.zstd.parquet")
            buf = io.BytesIO()
            pq.write_table(rows, buf, compression="zstd")
            payload = buf.getvalue()
            path = posixpath.join(self.root, table, rel)
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            with self.fs.open_output_stream(path) as out:
                out.write(payload)
            actions.append(AddAction(path=rel, size=len(payload), partition_values=dict(zip(parts, values)),
                                     modification_time=int(time.time() * 1000), data_change=True,
                                     stats=json.dumps({"numRecords": rows.num_rows})))
        return actions

    def commit(self, table: str, adds: list, *, replace: tuple[str, Iterable] | None = None,
               survey_id: str | None = None, operation: str | None = None,
               fresh: set[str] | None = None) -> int | None:
        """Commit added files (and a replace) to a table in one Delta transaction.

        Parameters
        ----------
        table : str
        adds : list of AddAction
            From :meth:`write_files`.
        replace : (column, keys), optional
            Rows whose ``column`` is in ``keys`` are removed in the same transaction (their files
            are removed; the files' other rows are rewritten into a new file).
        survey_id : str, optional
            Recorded in the commit's metadata (``hubscan.survey_id``).
        operation : str, optional
            Recorded in the commit's metadata (``hubscan.operation``).
        fresh : set of str, optional
            Paths of live files known to hold none of the replaced keys (files the caller added
            itself since): not scanned for them.

        Returns
        -------
        int or None
            The table's new version (None when there was nothing to commit).
        """
        from deltalake import DeltaTable
        from deltalake.transaction import CommitProperties
        schema = TABLES[table]
        keys = set(replace[1]) if replace else set()
        dt = self.table(table)
        if not adds and (dt is None or not keys):
            return None
        if dt is None:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
            DeltaTable.create(self.uri(table), schema, mode="ignore", partition_by=PARTITION_BY[table] or None,
                              name=table, description=(schema.metadata or {}).get(b"hubscan.table", b"").decode(),
                              configuration={"delta.checkpointInterval": "50"}, storage_options=self.delta_options)
            dt = self.table(table)
        self._evolve(dt, schema)
        actions = list(adds)
        if keys:
            actions += self._replace_actions(table, dt, replace[0], keys, fresh or set())
        if not actions:
            return None
        meta = {k: v for k, v in {"hubscan.survey_id": survey_id, "hubscan.operation": operation}.items() if v}
        dt.create_write_transaction(actions, mode="append", schema=schema, partition_by=PARTITION_BY[table] or None,
                                    commit_properties=CommitProperties(custom_metadata=meta or None))
        dt.update_incremental()
        return dt.version()

    def write(self, table: str, data: pa.Table, *, replace: tuple[str, Iterable] | None = None,
              survey_id: str | None = None) -> int | None:
        """:meth:`write_files` + :meth:`commit` (for a process that writes and commits itself)."""
        return self.commit(table, self.write_files(table, data) if data.num_rows else [], replace=replace,
                           survey_id=survey_id)

    def write_model(self, model: ModelRecord | Mapping, layers: Sequence[LayerRecord | Mapping] = (),
                    esd: Sequence[EsdRecord | Mapping] | None = None, *legacy, survey_id: str | None = None) -> None:
        """Write (replace) one model: its esd and layers rows, then its ``models`` row.

        The single write entry of a model's rows: records (or mappings of their columns) are
        converted by :func:`hubscan.schema.rows_to_table`, which refuses a column the schema lacks;
        the model's identity columns (and its ``survey_id``) are added to its layers and esd rows.

        Parameters
        ----------
        model : ModelRecord or mapping
            The ``models`` row; must hold ``model_key`` and ``source``.
        layers : sequence of LayerRecord or mapping
            The model's layer rows (none for a failed / skipped model).
        esd : sequence of EsdRecord or mapping, optional
            The eigenvalues per layer (None or empty: none).
        survey_id : str, optional
            Recorded in the commits' metadata (default: the model's ``survey_id``).

        The former call ``write_model(key, source, model_row, layer_rows, esd_rows)`` is still
        accepted.

        Raises
        ------
        hubscan.errors.SchemaMismatchError
            A row holds a column its table lacks.
        """
        if isinstance(model, str):  # former signature: (key, source, model_row, layer_rows, esd_rows)
            key, source = model, layers
            model, layers, esd = esd, (legacy[0] if legacy else ()), (legacy[1] if len(legacy) > 1 else None)
            model = {**model, "model_key": model.get("model_key", key), "source": source}
        tables = model_tables(model, layers, esd)
        survey_id = survey_id or model.get("survey_id")
        replace = ("model_key", [model["model_key"]])
        for table in ("esd", "layers", "models"):
            self.write(table, tables[table], replace=replace, survey_id=survey_id)

    def _evolve(self, dt, schema: pa.Schema) -> None:
        """Add the schema's columns that the table lacks (hubscan gained a column)."""
        from deltalake import Schema as DeltaSchema
        have = {f.name for f in dt.schema().fields}
        missing = [f for f in schema if f.name not in have]
        if missing:
            log.info("%s: adding columns %s", dt.table_uri, ", ".join(f.name for f in missing))
            dt.alter.add_columns(DeltaSchema.from_arrow(pa.schema(missing)).fields)

    def _replace_actions(self, table: str, dt, column: str, keys: set, fresh: set[str]) -> list:
        """Remove actions for the live files holding rows of ``keys``, and add actions for a
        rewrite of those files' other rows."""
        import pyarrow.compute as pc
        import pyarrow.dataset as pds
        from deltalake.transaction import RemoveAction
        parts = PARTITION_BY[table]
        value_set = pa.array(sorted(keys), type=pa.string())
        schema = pa.schema(dt.schema().to_arrow())
        fmt = pds.ParquetFileFormat()
        actions, kept = [], []
        now = int(time.time() * 1000)
        for row, path, expr in self._live_files(table, dt):
            if row["path"] in fresh:
                continue
            frag = fmt.make_fragment(path, filesystem=self.fs, partition_expression=expr)
            hit = frag.to_table(columns=[column], schema=schema).column(column)
            if not pc.any(pc.is_in(hit, value_set=value_set)).as_py():
                continue
            pv = {p: row[f"partition.{p}"] for p in parts}
            actions.append(RemoveAction(path=row["path"], data_change=True, deletion_timestamp=now,
                                        size=row["size_bytes"], partition_values=pv or None))
            rest = frag.to_table(schema=schema, filter=~pds.field(column).isin(value_set))
            if rest.num_rows:
                kept.append(rest)
        if kept:
            actions += self.write_files(table, pa.concat_tables(kept, promote_options="permissive"))
        return actions

    # -- maintenance -----------------------------------------------------------------------------
    def survey_versions(self) -> dict[str, set[int]]:
        """table → the versions recorded by surveys (kept by vacuum, queried by ``--as-of``)."""
        out: dict[str, set[int]] = {}
        t = self.read("surveys", columns=["table_versions"])
        for v in t.column("table_versions").to_pylist() if "table_versions" in t.column_names else []:
            for table, version in json.loads(v or "{}").items():
                out.setdefault(table, set()).add(int(version))
        return out

    def compact(self, tables: Iterable[str] | None = None, *, retention_hours: float = DEFAULT_RETENTION_HOURS,
                keep_versions: dict[str, set[int]] | None = None, survey_id: str | None = None) -> dict:
        """Compact small files into large ones and vacuum files no kept version references.

        Parameters
        ----------
        tables : iterable of str, optional
            Default: every table present.
        retention_hours : float
            Removed files younger than this are kept (readers of older snapshots); 0 deletes every
            unreferenced file now.
        keep_versions : dict, optional
            table → versions whose files vacuum keeps (default: the versions surveys recorded).
        survey_id : str, optional
            Recorded in the commits' metadata.

        Returns
        -------
        dict
            table → {"files_before", "files_after", "removed", "vacuumed"}.
        """
        from deltalake.transaction import CommitProperties
        keep = self.survey_versions() if keep_versions is None else keep_versions
        out = {}
        for table in tables or TABLES:
            dt = self.table(table)
            if dt is None:
                continue
            before = len(dt.file_uris())
            meta = {"hubscan.operation": "compact", **({"hubscan.survey_id": survey_id} if survey_id else {})}
            metrics = dt.optimize.compact(target_size=512 * 1024 * 1024,
                                          commit_properties=CommitProperties(custom_metadata=meta))
            dt.update_incremental()
            vacuumed = dt.vacuum(retention_hours=int(retention_hours), dry_run=False, enforce_retention_duration=False,
                                 full=True, keep_versions=sorted(keep.get(table, ())) or None)
            dt.update_incremental()
            out[table] = {"files_before": before, "files_after": len(dt.file_uris()),
                          "removed": int(metrics.get("numFilesRemoved", 0)), "vacuumed": len(vacuumed)}
        return out


def model_tables(model: ModelRecord | Mapping, layers: Sequence[LayerRecord | Mapping] = (),
                 esd: Sequence[EsdRecord | Mapping] | None = None) -> dict[str, pa.Table]:
    """One model's rows as the ``models``, ``layers`` and ``esd`` tables (the one conversion of a
    model's records; survey actors write these as data files, :meth:`Dataset.write_model` commits them).

    The model's identity (``model_key, source, model_id, revision``) is added to its layers and esd
    rows, and its ``survey_id`` to its layers.

    Raises
    ------
    hubscan.errors.SchemaMismatchError
        A row holds a column its table lacks.
    """
    identity = {k: model.get(k) for k in ("model_key", "source", "model_id", "revision")}
    return {"esd": rows_to_table(esd or (), table_schema("esd"), identity),
            "layers": rows_to_table(layers, table_schema("layers"), {**identity, "survey_id": model.get("survey_id")}),
            "models": rows_to_table([model], table_schema("models"))}


def pair_key(child_key: str, parent: str, parent_revision: str | None) -> str:
    """The ``deltas`` key of one (child analysis, parent revision) pair: sha256 of the three, 16 hex digits."""
    return hashlib.sha256(f"{child_key}\0{parent}\0{parent_revision or ''}".encode()).hexdigest()[:16]


def delta_table(child: Mapping, parent_id: str, parent_revision: str | None, relation: str | None,
                survey_id: str | None, rows: Sequence[LayerRecord | Mapping]) -> pa.Table:
    """One (child, parent) pair's delta rows as the ``deltas`` table: each :class:`LayerRecord` of
    ``hubscan analyze CHILD --base PARENT`` preceded by the pair's identity
    (:data:`hubscan.records.DELTA_PAIR_COLUMNS`; ``child`` gives ``model_key, source, model_id, revision``).

    Raises
    ------
    hubscan.errors.SchemaMismatchError
        A row holds a column the table lacks.
    """
    ident = {"pair_key": pair_key(child["model_key"], parent_id, parent_revision),
             **{k: child.get(k) for k in ("model_key", "source", "model_id", "revision")},
             "parent_id": parent_id, "parent_revision": parent_revision, "relation": relation, "survey_id": survey_id}
    return rows_to_table(rows, table_schema("deltas"), ident)


#: File types :func:`write_file` writes, by suffix.
FILE_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl")


def write_file(table: pa.Table, path: str, *, metadata: dict | None = None) -> str:
    """Write one table to one local file, its format chosen by the suffix (``hubscan analyze --out``).

    ``.parquet``: Parquet, the schema's column descriptions kept and ``metadata`` stored as JSON under
    the key ``hubscan.provenance`` of the file's key-value metadata; ``.csv``: CSV with a header
    (list columns such as ``shape`` written as JSON arrays); ``.json`` / ``.jsonl``: JSON lines, one
    object per row. Written under a temporary name and renamed into place.

    Parameters
    ----------
    table : pyarrow.Table
    path : str
        The file; its folder must exist (no folder is created).
    metadata : dict, optional
        Provenance (model id, revision, options, hubscan version …), JSON-serialisable.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    hubscan.errors.HubscanError
        Unknown suffix, or the folder does not exist.
    """
    import os

    from hubscan.errors import HubscanError
    suffix = posixpath.splitext(str(path).lower())[1]
    if suffix not in FILE_SUFFIXES:
        raise HubscanError(path, f"unknown file type {suffix or '(no suffix)'} (use {' / '.join(FILE_SUFFIXES)})")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise HubscanError(path, f"folder {folder} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if suffix == ".parquet":
            meta = dict(table.schema.metadata or {})
            if metadata is not None:
                meta[b"hubscan.provenance"] = json.dumps(metadata, default=str).encode()
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        else:
            rows = table.to_pylist()
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                if suffix == ".csv":
                    import csv
                    w = csv.writer(fh, lineterminator="\n")
                    w.writerow(table.column_names)
                    for r in rows:
                        w.writerow(["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v
                                    for v in r.values()])
                else:
                    for r in rows:  # JSON has no NaN / inf: null
                        r = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in r.items()}
                        fh.write(json.dumps(r, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def migrate(old: str, new: str, *, batch_files: int = 2000, storage_options: dict | None = None,
            new_storage_options: dict | None = None) -> dict[str, int]:
    """Convert a schema-v1 dataset (hive-partitioned loose Parquet,
    ``OLD/table=<t>/source=<s>/part-<key>.parquet``) into Delta tables at ``new``.

    Columns the old files lack are null; the tables are compacted at the end.

    Parameters
    ----------
    old, new : str
        Dataset locations.
    batch_files : int
        Old files read per commit.
    storage_options, new_storage_options : dict, optional
        Filesystem options of ``old`` and ``new``.

    Returns
    -------
    dict
        table → rows converted.

    Raises
    ------
    hubscan.errors.DatasetNotFoundError
        ``old`` holds no schema-v1 table.
    """
    from hubscan.errors import DatasetNotFoundError
    fs, root = open_filesystem(old, **(storage_options or {}))
    dest = Dataset(new, **(new_storage_options or {}))
    counts = {}
    for table, schema in TABLES.items():
        base = posixpath.join(root, f"table={table}")
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            continue
        files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
                       if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                       and not i.base_name.startswith("."))
        counts[table] = 0
        for start in range(0, len(files), batch_files):
            chunk = []
            for f in files[start:start + batch_files]:
                t = pq.read_table(f, filesystem=fs)
                if "source" in schema.names and "source" not in t.column_names:
                    source = next((p.split("=", 1)[1] for p in f.split("/") if p.startswith("source=")), None)
                    t = t.append_column("source", pa.array([source] * t.num_rows, pa.string()))
                chunk.append(t.select([c for c in t.column_names if c in schema.names]))
            data = pa.concat_tables(chunk, promote_options="permissive")
            for f in schema:
                if f.name not in data.column_names:
                    data = data.append_column(f.name, pa.nulls(data.num_rows, f.type))
            data = data.select(schema.names).cast(schema)
            dest.write(table, data)
            counts[table] += data.num_rows
    if not counts:
        raise DatasetNotFoundError(old, "no schema-v1 dataset here (no table=…/ folders)")
    dest.compact(retention_hours=0)
    return counts

