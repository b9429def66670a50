"""The survey dataset: Delta Lake tables (delta-rs, the ``deltalake`` package; no JVM).

Layout::

    DATASET/models/    one row per analysis of a model revision       partitioned by source
    DATASET/layers/    one row per matrix                             partitioned by source
    DATASET/esd/       eigenvalues per matrix (float32 list)          partitioned by source
    DATASET/accuracy/  reported accuracy (:mod:`hubscan.accuracy`)   partitioned by source
    DATASET/surveys/   one row per survey run
    DATASET/training/  one row per matrix per analysis of a model during training (:mod:`hubscan.monitor`)

Each folder is a Delta table: Parquet data files plus a ``_delta_log`` of JSON commits. Its schema
(with every column's description and ``hubscan.schema_version``) comes from :mod:`hubscan.schema`;
columns added to hubscan later are added to an existing table before the next commit.
``DATASET/_lease/`` (not a view) holds the writer's lease (:class:`Lease`).

Faults: a write that fails raises :class:`~hubscan.errors.DatasetWriteError`; a table whose
``_delta_log`` holds a damaged file raises :class:`~hubscan.errors.DatasetCorruptError` naming the
file (:meth:`Dataset.log_damage`; :mod:`hubscan.doctor` repairs what it safely can).

``model_key`` = sha256 of (source, model id, revision, analysis-config hash), 16 hex digits: a
new revision or new analysis settings give a new key.

Writers and the committer:

- :meth:`Dataset.write_files` writes data files (many models per file) and returns Delta
  ``AddAction`` s; the files are invisible to every reader until committed. Survey actors call it.
- :meth:`Dataset.commit` commits actions in one Delta transaction. One process writes a dataset at
  a time: the survey driver (or ``hubscan compact`` / ``doctor --repair``) holds the dataset's
  :class:`Lease`, and a second writer is refused in one line naming the holder. Every commit is
  atomic on every store (put-if-absent of the next ``_delta_log`` file: a rename without replace on a
  local disk, a conditional ``If-None-Match`` put on S3, ``AWS_CONDITIONAL_PUT=etag``).
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
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
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
                "lineage": [], "deltas": ["source"], "training": []}
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
    from hubscan.analysis import AnalyzeOptions, added_options
    d = options.to_dict() if isinstance(options, AnalyzeOptions) else dict(options)
    for k in ("device", "keep_evals"):
        d.pop(k, None)
    defaults = AnalyzeOptions().to_dict()
    for k in added_options():  # new options (the metrics' registered ones too) at their default: old hashes hold
        if k in d and d[k] == defaults[k]:
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
        if "AWS_S3_ALLOW_UNSAFE_RENAME" not in delta and "AWS_S3_LOCKING_PROVIDER" not in delta:
            delta.setdefault("AWS_CONDITIONAL_PUT", "etag")  # atomic commits (If-None-Match), no lock service
    return pa_opts, delta


def error_reason(exc: BaseException) -> str:
    """One line from a storage error (delta-rs messages span lines, carry ANSI colours and a Rust
    backtrace: the text before the backtrace, its lines joined)."""
    parts = []
    for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines():
        line = line.strip().lstrip("↳").strip()
        if re.match(r"^(\d+: |Stack backtrace)", line):
            break
        if line:
            parts.append(line)
    return ": ".join(parts) or type(exc).__name__


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


#: Names of a table's ``_delta_log`` files: commits and (single- or multi-part) checkpoints.
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(?:\.\d+\.\d+)?\.parquet$")


@dataclass(frozen=True)
class LogDamage:
    """A damaged file of a table's ``_delta_log`` (:meth:`Dataset.log_damage`).

    Attributes
    ----------
    table : str
    path : str
        The file, on the dataset's filesystem.
    version : int or None
        The table version whose commit or checkpoint the file is (None: ``_last_checkpoint``).
    problem : str
        One line: what is wrong with it.
    needed : bool
        The latest version cannot be read without it (else only time travel to older versions fails).
    """
    table: str
    path: str
    version: int | None
    problem: str
    needed: bool


def _commit_problem(data: bytes) -> str | None:
    """What is wrong with a commit file's bytes (None when it is JSON lines of one Delta action each)."""
    if not data.strip():
        return "empty commit file"
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start})"
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError as exc:
            where = f"line {n} of {len(lines)}"
            return (f"truncated commit file ({where} ends mid-record)" if n == len(lines)
                    else f"damaged commit file ({where} is not JSON: {exc.msg})")
        if not (isinstance(action, dict) and len(action) == 1):
            return f"damaged commit file (line {n} of {len(lines)} is not a Delta action)"
    return None


def _os_reason(exc: OSError) -> str:
    """One line for a filesystem error: the system's words for its errno when it has one."""
    if getattr(exc, "errno", None):
        return os.strerror(exc.errno).lower()
    return error_reason(exc)


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
        #: The :class:`Lease` this process holds on the dataset (checked before every commit), or None.
        self.lease: Lease | None = None

    # -- tables ----------------------------------------------------------------------------------
    def uri(self, table: str) -> str:
        """The table's location (a local path or a URL)."""
        if self.local:
            return posixpath.join(self.root, table)
        return f"{self.url.split('://', 1)[0]}://{posixpath.join(self.root, table)}"

    def table(self, table: str, version: int | None = None):
        """The table as a ``deltalake.DeltaTable`` (latest, or at ``version``); None when absent.

        Raises
        ------
        hubscan.errors.DatasetCorruptError
            A file of the table's ``_delta_log`` that the version needs is damaged (named).
        hubscan.errors.HubscanError
            The table cannot be read otherwise (the storage's reason).
        """
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError
        try:
            if version is None and table in self._tables:
                dt = self._tables[table]
                dt.update_incremental()
                return dt
            if not DeltaTable.is_deltatable(self.uri(table), storage_options=self.delta_options):
                return None
            dt = DeltaTable(self.uri(table), version=version, storage_options=self.delta_options)
        except (DeltaError, OSError) as exc:
            raise self._unreadable(table, exc) from None
        if version is None:
            self._tables[table] = dt
        return dt

    def _unreadable(self, table: str, exc: BaseException):
        """The one-line error for a table delta-rs cannot load: the damaged log file it needs when there
        is one, else the storage's reason."""
        from hubscan.errors import DatasetCorruptError, HubscanError
        for d in self.log_damage(table):
            if d.needed:
                return DatasetCorruptError(d.path, f"table {table}: {d.problem}; the table cannot be read "
                                                   f"(hubscan doctor --dataset {self.url} says how to recover)")
        return HubscanError(self.uri(table), f"table {table} cannot be read: {error_reason(exc)}")

    def log_damage(self, table: str, *, every: bool = False) -> list[LogDamage]:
        """The damaged files of a table's ``_delta_log``: commits that are not JSON lines of Delta actions
        (truncated, overwritten), checkpoints Parquet cannot read, a ``_last_checkpoint`` that is not
        JSON, and commits missing between the newest readable checkpoint and the latest version.

        Parameters
        ----------
        table : str
        every : bool
            Also parse the commits the latest version does not need (those before its checkpoint:
            time travel reads them); default: only what the latest version needs.

        Returns
        -------
        list of LogDamage
            In version order; empty for a sound (or absent) table.
        """
        commits, checkpoints, pointer = self.log_files(table)
        damage = []
        if pointer:
            try:
                int(json.loads(self.read_bytes(pointer))["version"])
            except (ValueError, KeyError, TypeError):
                damage.append(LogDamage(table, pointer, None, "not a valid checkpoint pointer (JSON with a version)",
                                        True))
        base = -1  # the newest readable checkpoint: the latest version is read from it on
        for v in sorted(checkpoints, reverse=True):
            bad = next((p for p in checkpoints[v] if not self._parquet_readable(p)), None)
            if bad is None:
                base = v
                break
            damage.append(LogDamage(table, bad, v, "checkpoint Parquet file cannot be read", True))
        latest = max([*commits, *checkpoints], default=-1)
        log_dir = posixpath.join(self.root, table, "_delta_log")
        for v in range(base + 1, latest + 1):
            if v not in commits:
                damage.append(LogDamage(table, posixpath.join(log_dir, f"{v:020d}.json"), v, "commit file missing",
                                        True))
        for v, path in sorted(commits.items()):
            if v > base or every:
                problem = _commit_problem(self.read_bytes(path))
                if problem:
                    damage.append(LogDamage(table, path, v, problem, v > base))
        return sorted(damage, key=lambda d: (-1 if d.version is None else d.version))

    def log_files(self, table: str) -> tuple[dict[int, str], dict[int, list[str]], str | None]:
        """The files of a table's ``_delta_log``: commit version → path, checkpoint version → its
        part paths, and the ``_last_checkpoint`` pointer's path (None when absent)."""
        log_dir = posixpath.join(self.root, table, "_delta_log")
        commits, checkpoints, pointer = {}, {}, None
        for i in self.fs.get_file_info(pafs.FileSelector(log_dir, allow_not_found=True)):
            if m := _COMMIT_FILE.match(i.base_name):
                commits[int(m[1])] = i.path
            elif m := _CHECKPOINT_FILE.match(i.base_name):
                checkpoints.setdefault(int(m[1]), []).append(i.path)
            elif i.base_name == "_last_checkpoint":
                pointer = i.path
        return commits, checkpoints, pointer

    def read_bytes(self, path: str) -> bytes:
        """A file of the dataset (a path on :attr:`fs`), whole."""
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def refresh(self) -> None:
        """Forget the tables opened so far (they are read again from their logs, e.g. after a repair)."""
        self._tables.clear()

    def _parquet_readable(self, path: str) -> bool:
        try:
            with self.fs.open_input_file(path) as f:
                pq.read_metadata(f)
            return True
        except (OSError, pa.ArrowException):
            return False

    def check_writable(self) -> None:
        """Write and delete a probe file in every folder a writer of this dataset writes to: the
        dataset's root and, for each table present, its folder and ``_delta_log`` (on a local disk also
        its partition folders). Creates the (local) root when absent.

        Raises
        ------
        hubscan.errors.DatasetWriteError
            A folder cannot be written (read-only, permission denied, a storage error), named.
        """
        from hubscan.errors import DatasetWriteError
        folders = [self.root]
        try:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
            for table in (*TABLES, LEASE_TABLE):
                base = posixpath.join(self.root, table)
                if self.fs.get_file_info(base).type != pafs.FileType.Directory:
                    continue
                folders += [base, posixpath.join(base, "_delta_log")]
                if self.local:
                    folders += [i.path for i in self.fs.get_file_info(pafs.FileSelector(base))
                                if i.type == pafs.FileType.Directory and "=" in i.base_name]
        except OSError as exc:
            raise DatasetWriteError(self.url, f"cannot write to the dataset: {_os_reason(exc)}") from None
        for folder in folders:
            probe = posixpath.join(folder, f".hubscan-write-check-{uuid.uuid4().hex[:8]}")
            try:
                with self.fs.open_output_stream(probe) as out:
                    out.write(b"")
                self.fs.delete_file(probe)
            except OSError as exc:
                raise DatasetWriteError(folder, f"cannot write to the dataset: {_os_reason(exc)}") from None

    def require(self) -> "Dataset":
        """Raise a one-line error when there is no hubscan dataset here (no table exists).

        Raises
        ------
        hubscan.errors.DatasetNotFoundError
        """
        if not any(self._present(t) for t in ("models", "layers", "accuracy", "surveys", "training")):
            from hubscan.errors import DatasetNotFoundError
            hint = " (a schema-v1 dataset: convert it with `hubscan migrate`)" if self._is_v1() else \
                " (run `hubscan survey` first)"
            raise DatasetNotFoundError(self.url, "no hubscan dataset here" + hint)
        return self

    def _present(self, table: str) -> bool:
        """The table exists (a damaged one too)."""
        from hubscan.errors import DatasetCorruptError
        try:
            return self.table(table) is not None
        except DatasetCorruptError:
            return True

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
            try:
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
                with self.fs.open_output_stream(path) as out:
                    out.write(payload)
            except OSError as exc:
                from hubscan.errors import DatasetWriteError
                raise DatasetWriteError(path, f"cannot write a data file: {_os_reason(exc)}") from None
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

        Raises
        ------
        hubscan.errors.DatasetWriteError
            The commit could not be written.
        hubscan.errors.DatasetBusyError
            This process's :attr:`lease` was lost to another writer.
        """
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError
        from deltalake.transaction import CommitProperties

        from hubscan.errors import DatasetWriteError
        schema = TABLES[table]
        keys = set(replace[1]) if replace else set()
        dt = self.table(table)
        if not adds and (dt is None or not keys):
            return None
        self.check_lease()
        try:
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
        except (DeltaError, OSError) as exc:
            raise DatasetWriteError(self.uri(table), f"cannot commit to table {table}: {error_reason(exc)}") from None
        return dt.version()

    def update_rows(self, table: str, updates: Mapping[str, Mapping], *, column: str = "model_key",
                    survey_id: str | None = None, operation: str | None = None) -> int | None:
        """Set columns of existing rows in one Delta transaction: the rows are read, changed and written
        back, replacing the files that held them (:meth:`commit` ``replace``).

        Parameters
        ----------
        table : str
        updates : mapping
            Key (a value of ``column``) → {column name: new value}. Keys without a row are ignored.
        column : str
            The key column.
        survey_id, operation : str, optional
            Recorded in the commit's metadata.

        Returns
        -------
        int or None
            The table's new version (None when no row matched).

        Raises
        ------
        hubscan.errors.DatasetWriteError
            The commit could not be written.
        """
        import pyarrow.dataset as pds
        if not updates:
            return None
        rows = self.read(table, filter=pds.field(column).isin(pa.array(sorted(updates), type=pa.string())))
        if not rows.num_rows:
            return None
        changed = [{**r, **updates[r[column]]} for r in rows.to_pylist()]
        return self.commit(table, self.write_files(table, rows_to_table(changed, table)),
                           replace=(column, {r[column] for r in changed}), survey_id=survey_id, operation=operation)

    def check_lease(self) -> None:
        """Before a commit: this process's lease, when it holds one, is still its own (:meth:`Lease.check`).

        Raises
        ------
        hubscan.errors.DatasetBusyError
            The lease was lost to another writer.
        """
        if self.lease is not None:
            self.lease.check()

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
        from deltalake.exceptions import DeltaError
        from deltalake.transaction import CommitProperties

        from hubscan.errors import DatasetWriteError
        keep = self.survey_versions() if keep_versions is None else keep_versions
        out = {}
        for table in tables or TABLES:
            dt = self.table(table)
            if dt is None:
                continue
            self.check_lease()
            before = len(dt.file_uris())
            meta = {"hubscan.operation": "compact", **({"hubscan.survey_id": survey_id} if survey_id else {})}
            try:
                metrics = dt.optimize.compact(target_size=512 * 1024 * 1024,
                                              commit_properties=CommitProperties(custom_metadata=meta))
                dt.update_incremental()
                vacuumed = dt.vacuum(retention_hours=int(retention_hours), dry_run=False,
                                     enforce_retention_duration=False, full=True,
                                     keep_versions=sorted(keep.get(table, ())) or None)
                dt.update_incremental()
            except (DeltaError, OSError) as exc:
                raise DatasetWriteError(self.uri(table), f"cannot compact table {table}: {error_reason(exc)}") from None
            out[table] = {"files_before": before, "files_after": len(dt.file_uris()),
                          "removed": int(metrics.get("numFilesRemoved", 0)), "vacuumed": len(vacuumed)}
        return out


#: The dataset's lease table (not a query view): one writer at a time per dataset.
LEASE_TABLE = "_lease"
#: Seconds a lease lasts without renewal; its holder renews it every quarter of that. A holder that
#: stops renewing (killed, its host lost, frozen) is taken over after this long; on the holder's own
#: host a holder process that is no longer running is taken over at once.
LEASE_SECONDS = 600.0


def _process_identity(pid: int) -> str | None:
    """``boot id:pid namespace:start time`` of a process on this Linux machine (None when it is not
    running, or without ``/proc``): the same identity is the same process, whatever reused its pid."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        with open(f"/proc/{int(pid)}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]  # field 22: start time, clock ticks since boot
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}:{start}"
    except (OSError, IndexError, ValueError):
        return None


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class Lease:
    """One writer at a time per dataset: a lease held in the dataset's ``_lease`` Delta table.

    Each change of the lease (acquire, renew, release, take-over) is one Delta commit whose commit
    metadata (``hubscan.lease``) holds the lease's state: holder (survey id), operation, host, pid,
    since, renewed, seconds. It is committed with ``max_commit_retries=0``: the commit of version v+1
    succeeds only if no other process committed v+1 since this one read v (Delta's put-if-absent of
    ``_delta_log/<v+1>.json``: a rename without replace on a local disk, an ``If-None-Match`` put on
    S3), so of two processes that read a free lease at once exactly one acquires it — a
    compare-and-swap, never check-then-write.

    A held lease is refused to others (:class:`~hubscan.errors.DatasetBusyError` naming the holder)
    until its holder releases it, stops renewing it for ``seconds`` (renewals run every quarter of
    that in a background thread), or — on the holder's own host — its process is no longer running;
    then it is taken over (:attr:`took_over` says from whom and why). Before each commit the holder
    checks the lease (:meth:`check`, called by :meth:`Dataset.commit`): a lease lost to another, or
    not renewed for half its time, stops the writer. Hosts' clocks are assumed to agree within a
    small part of ``seconds``.

    Parameters
    ----------
    dataset : Dataset
    holder : str
        Who holds it (a survey id).
    seconds : float
        How long the lease lasts without renewal.
    operation : str
        What holds it (``survey``, ``compact``, ``doctor``), shown to those refused.

    Examples
    --------
    >>> with Lease(Dataset("out/dataset"), "my-survey"):   # doctest: +SKIP
    ...     ...  # commits of this process are fenced by the lease
    """

    def __init__(self, dataset: Dataset, holder: str, *, seconds: float = LEASE_SECONDS, operation: str = "survey"):
        self.dataset, self.holder, self.seconds, self.operation = dataset, holder, float(seconds), operation
        self.uri = dataset.uri(LEASE_TABLE)
        self.record: dict | None = None   # the state this process committed last
        self.version: int | None = None   # the lease table version of that commit
        self.renewed_at = 0.0             # time.monotonic() of that commit
        self.lost = None                  # the DatasetBusyError that ended it
        self.took_over: tuple[dict, str] | None = None  # (stale record, why it was stale)
        self._dt = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------------
    def current(self) -> dict | None:
        """The lease's last committed state (None when never held); ``state`` is ``held`` or ``free``."""
        dt = self.dataset.table(LEASE_TABLE)
        return None if dt is None else _lease_state(dt)

    def stale(self, record: dict, now: float | None = None) -> str | None:
        """Why a held lease may be taken over (None while its holder keeps it)."""
        now = time.time() if now is None else now
        age = now - float(record["renewed"])
        if age > float(record["seconds"]):
            return f"not renewed for {age:.0f} s (lease {float(record['seconds']):.0f} s)"
        mine, theirs = _process_identity(os.getpid()), record.get("process")
        if record.get("host") == socket.gethostname() and mine and theirs \
                and theirs.rsplit(":", 1)[0] == mine.rsplit(":", 1)[0] and _process_identity(record["pid"]) != theirs:
            return f"its process {record['pid']} is not running"
        return None

    # -- acquire / renew / release ---------------------------------------------------------------
    def acquire(self) -> "Lease":
        """Take the lease (atomically), start renewing it, and fence the dataset's commits with it.

        Raises
        ------
        hubscan.errors.DatasetBusyError
            Another process holds it (one line: holder, host, pid, since).
        hubscan.errors.DatasetWriteError
            The dataset cannot be written.
        """
        from hubscan.errors import DatasetBusyError
        for _ in range(8):  # a lost race: read the winner's state and decide again
            dt = self._open()
            held, now = _lease_state(dt), time.time()
            why = None
            if held is not None and held.get("state") == "held":
                why = self.stale(held, now)
                if why is None:
                    raise DatasetBusyError(self.dataset.url, _busy_line(held, now))
            record = {"state": "held", "holder": self.holder, "operation": self.operation,
                      "host": socket.gethostname(), "pid": os.getpid(), "process": _process_identity(os.getpid()),
                      "since": now, "renewed": now, "seconds": self.seconds}
            if self._commit(dt, dt.version(), record):
                if why is not None:
                    self.took_over = (held, why)
                    log.warning("%s: took over the lease of %s %s (host %s, pid %s): %s", self.dataset.url,
                                held.get("operation"), held.get("holder"), held.get("host"), held.get("pid"), why)
                self.dataset.lease = self
                self._thread = threading.Thread(target=self._beat, name="hubscan-lease", daemon=True)
                self._thread.start()
                return self
        raise DatasetBusyError(self.dataset.url, "the lease is contended by several writers: try again")

    def renew(self) -> None:
        """Commit a renewal on top of this process's last lease commit.

        Raises
        ------
        hubscan.errors.DatasetBusyError
            Another process committed to the lease since (it took the lease over).
        hubscan.errors.DatasetWriteError
            The renewal could not be written (retried by the next heartbeat).
        """
        with self._lock:
            if self.lost is not None:
                raise self.lost
            if not self._commit(self._dt, self.version, {**self.record, "renewed": time.time()}):
                self._lose()

    def check(self) -> None:
        """Before a commit: raise when the lease was lost, renew it now when it was not renewed for
        half its time (the holder was stalled or its store unreachable)."""
        if self.lost is not None:
            raise self.lost
        if time.monotonic() - self.renewed_at > self.seconds / 2:
            self.renew()

    def release(self) -> None:
        """Stop renewing and free the lease (a lost lease is left to its new holder)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.dataset.lease is self:
            self.dataset.lease = None
        with self._lock:
            if self.lost is not None or self.record is None:
                return
            from hubscan.errors import HubscanError
            try:
                now = time.time()
                freed = {**self.record, "state": "free", "renewed": now, "released": now}
                if not self._commit(self._dt, self.version, freed):
                    self._lose()  # a commit that records no state came after ours: still ours, free it on top
                    self._commit(self._dt, self.version, freed)
            except HubscanError as exc:
                log.warning("%s: lease not released (%s): it expires in %.0f s", self.dataset.url, exc.reason,
                            self.seconds)
            self.record = None

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals -------------------------------------------------------------------------------
    def _open(self):
        """The lease table at its latest version, created when absent."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        from hubscan.errors import DatasetWriteError
        opts = self.dataset.delta_options
        if not DeltaTable.is_deltatable(self.uri, storage_options=opts):
            try:
                if self.dataset.local:
                    os.makedirs(self.dataset.root, exist_ok=True)
                DeltaTable.create(self.uri, _LEASE_SCHEMA, mode="ignore", name=LEASE_TABLE,
                                  description="hubscan: the dataset's writer lease (state in each commit's metadata)",
                                  configuration={"delta.logRetentionDuration": "interval 1 days"}, storage_options=opts)
            except (DeltaError, OSError) as exc:  # unless another process created it at the same time
                if not DeltaTable.is_deltatable(self.uri, storage_options=opts):
                    raise DatasetWriteError(self.dataset.url, f"cannot write to the dataset: {error_reason(exc)}") \
                        from None
        try:  # this lease's own table object (the heartbeat thread moves it between versions)
            return DeltaTable(self.uri, storage_options=opts)
        except (DeltaError, OSError) as exc:
            raise self.dataset._unreadable(LEASE_TABLE, exc) from None

    def _commit(self, dt, version: int, record: dict) -> bool:
        """Commit ``record`` as lease table version ``version + 1``; False when that version exists."""
        from deltalake.exceptions import CommitFailedError, DeltaError
        from deltalake.transaction import CommitProperties

        from hubscan.errors import DatasetWriteError
        try:
            if dt.version() != version:
                dt.load_as_version(version)
            dt.create_write_transaction([], mode="append", schema=_LEASE_SCHEMA, commit_properties=CommitProperties(
                custom_metadata={"hubscan.lease": json.dumps(record), "hubscan.operation": f"lease {record['state']}"},
                max_commit_retries=0))
        except CommitFailedError:
            return False
        except (DeltaError, OSError) as exc:
            raise DatasetWriteError(self.uri, f"cannot write the dataset's lease: {error_reason(exc)}") from None
        self._dt, self.version, self.record, self.renewed_at = dt, version + 1, record, time.monotonic()
        return True

    def _lose(self) -> None:
        """Another process committed to the lease table: unless that commit is this holder's own
        (an answer lost on the way), the lease is lost."""
        from hubscan.errors import DatasetBusyError
        dt = self._open()
        now_held = _lease_state(dt)
        if now_held and now_held.get("holder") == self.holder and now_held.get("pid") == os.getpid():
            self._dt, self.version, self.renewed_at = dt, dt.version(), time.monotonic()
            return
        self.lost = DatasetBusyError(self.dataset.url, "this writer lost its lease: "
                                     + (_busy_line(now_held, time.time()) if now_held else "the lease changed"))
        raise self.lost

    def _beat(self) -> None:
        """Renew every quarter of the lease until released or lost; a renewal that cannot be written is
        tried again at the next beat (:meth:`check` stops the writer when the lease is half expired)."""
        from hubscan.errors import DatasetBusyError, HubscanError
        while not self._stop.wait(self.seconds / 4):
            try:
                self.renew()
            except DatasetBusyError:
                return
            except HubscanError as exc:
                log.warning("%s: lease not renewed: %s", self.dataset.url, exc.reason)


#: The lease table's schema: it holds no rows, only commits.
_LEASE_SCHEMA = pa.schema([pa.field("holder", pa.string())])


def _lease_state(dt) -> dict | None:
    """The lease state recorded by the table's latest commit that records one (None when none does).

    A commit without a state is not a release: two processes that find the table absent at once both
    create it, and the second creation commits a version of its own after the first holder's commit."""
    limit = 1
    while True:
        history = dt.history(limit)
        for entry in history:  # newest first
            raw = entry.get("hubscan.lease")
            if raw:
                return json.loads(raw) if isinstance(raw, str) else dict(raw)
        if len(history) < limit:
            return None
        limit *= 8


def _busy_line(held: dict, now: float) -> str:
    """The refusal: who holds the lease, since when, and when it would be taken over."""
    return (f"in use by hubscan {held.get('operation', 'survey')} {held.get('holder')} (host {held.get('host')}, "
            f"pid {held.get('pid')}, since {_utc(float(held['since']))}, renewed {now - float(held['renewed']):.0f} s "
            f"ago): one writer at a time per dataset; wait for it to end (a holder that stops renewing is taken "
            f"over after {float(held['seconds']):.0f} s)")


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


def not_a_regular_file(path: str) -> str:
    """Why an output ``path`` (symbolic links followed) cannot be written as a file — it is a folder, a device, a
    FIFO or a socket — or ``""`` (a regular file, or nothing there yet). Written by renaming a temporary file
    into place, such a path would be replaced (``/dev/null`` by a plain file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ""
    except OSError as e:
        return f"cannot be inspected ({(e.strerror or str(e)).lower()})"
    if stat.S_ISREG(st.st_mode):
        return ""
    kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or \
        stat.S_ISBLK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if \
        stat.S_ISSOCK(st.st_mode) else "not a regular file"
    return f"is {kind}, not a file hubscan can write (give a file name)"


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
        Unknown suffix, the folder does not exist, ``path`` is (or links to) a folder, device or FIFO
        (:func:`not_a_regular_file`), or the file cannot be written (disk full, permission): naming ``path``. An
        existing file keeps its permissions (a hard link to it keeps the old contents: the file is replaced).
    """
    import os

    from hubscan.errors import HubscanError
    suffix = posixpath.splitext(str(path).lower())[1]
    if suffix not in FILE_SUFFIXES:
        raise HubscanError(path, f"unknown file type {suffix or '(no suffix)'} (use {' / '.join(FILE_SUFFIXES)})")
    target = os.path.realpath(path)  # a symbolic link: its target is written, the link kept
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise HubscanError(path, f"folder {folder} does not exist")
    if why := not_a_regular_file(target):
        raise HubscanError(path, why)
    mode = stat.S_IMODE(os.stat(target).st_mode) if os.path.exists(target) else None
    tmp = os.path.join(folder, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")
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
        if mode is not None:  # a file written again keeps its permissions
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:  # disk full, no permission …: the output named, not the model analyzed
        why = os.strerror(e.errno) if e.errno else " ".join(str(e).split())
        raise HubscanError(path, f"cannot be written ({why.lower()})") from None
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

