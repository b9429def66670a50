"""The survey dataset: hive-partitioned Parquet on any pyarrow / fsspec filesystem.

Layout::

    DATASET/table=models/source=hf/part-<model_key>.parquet     one row per model
    DATASET/table=layers/source=hf/part-<model_key>.parquet     one row per matrix
    DATASET/table=esd/source=hf/part-<model_key>.parquet        eigenvalues per matrix (float32 list)
    DATASET/table=surveys/part-<survey_id>.parquet              one row per survey run
    DATASET/table=accuracy/…                                    reported accuracy (accuracy module)

``model_key`` = sha256 of (source, model id, revision, analysis-config hash), 16 hex digits: a
new revision or new analysis settings give a new key; re-running the same key replaces its files.

Atomicity: on a filesystem with rename (local, NFS, HDFS) each file is written under a hidden
temporary name that does not end in ``.parquet`` (``.tmp-<uuid>``, skipped by pyarrow and DuckDB
globs) and renamed into place. On object stores (S3, GCS) a written object becomes visible only
when its upload completes (single PUT or completed multipart upload), so files are written to
their final key directly; readers never see a partial object either way. The ``models`` file is
written last: it is the commit record of a model (the done-set reads only it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import uuid
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hubscan.schema import (ACCURACY_SCHEMA, DATASET_LAYER_SCHEMA, ESD_SCHEMA, MODEL_SCHEMA, SCHEMA_VERSION,
                            SURVEY_SCHEMA)

log = logging.getLogger(__name__)

TABLES = {"models": MODEL_SCHEMA, "layers": DATASET_LAYER_SCHEMA, "esd": ESD_SCHEMA, "surveys": SURVEY_SCHEMA,
          "accuracy": ACCURACY_SCHEMA}


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


def open_filesystem(url: str, **storage_options) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and base path for a dataset location.

    Parameters
    ----------
    url : str
        A local path, or a URL pyarrow understands (``s3://bucket/prefix``, ``gs://…``,
        ``hdfs://…``), or any other fsspec URL (``memory://``, ``abfs://`` …), wrapped.
    **storage_options
        Passed to the filesystem (e.g. ``endpoint_override="127.0.0.1:9000", scheme="http"`` for
        S3-compatible servers; fsspec options for fsspec URLs).

    Returns
    -------
    (pyarrow.fs.FileSystem, str)
    """
    if "://" not in url:
        import os
        path = os.path.abspath(url)
        return pafs.LocalFileSystem(), path
    scheme = url.split("://", 1)[0]
    if scheme == "s3":
        bucket_path = url.split("://", 1)[1]
        return pafs.S3FileSystem(**storage_options), bucket_path.rstrip("/")
    if scheme in ("gs", "gcs", "hdfs", "file") and not storage_options:
        fs, path = pafs.FileSystem.from_uri(url)
        return fs, path.rstrip("/")
    import fsspec
    fsspec_fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs)), path.rstrip("/")


class Dataset:
    """A hubscan survey dataset (see the module docstring for layout and guarantees).

    Parameters
    ----------
    url : str
        Local path or filesystem URL.
    **storage_options
        See :func:`open_filesystem`.
    """

    def __init__(self, url: str, *, create: bool = True, **storage_options):
        self.url = url
        self.fs, self.root = open_filesystem(url, **storage_options)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if create:
            self.fs.create_dir(self.root, recursive=True)

    def require(self) -> "Dataset":
        """Raise a one-line error when there is no hubscan dataset here (no table holds a file).

        Raises
        ------
        hubscan.errors.NoWeightsError
        """
        if not any(self.files(t) for t in ("models", "layers", "accuracy", "surveys")):
            from hubscan.errors import NoWeightsError
            raise NoWeightsError(self.url, "no hubscan dataset here (no table=…/ files; run `hubscan survey` first)")
        return self

    # -- paths ---------------------------------------------------------------------------------
    def path(self, table: str, name: str, source: str | None = None) -> str:
        parts = [self.root, f"table={table}"] + ([f"source={source}"] if source else []) + [name]
        return posixpath.join(*parts)

    def glob(self, table: str) -> str:
        """A DuckDB glob of a table's files: ``<root>/table=<t>/**/*.parquet``."""
        return posixpath.join(self.url if "://" in self.url else self.root, f"table={table}", "**", "*.parquet")

    # -- writing -------------------------------------------------------------------------------
    def write_table(self, table: str, data: pa.Table, name: str, source: str | None = None) -> str:
        """Write one file of a table atomically (see module docstring). Returns its path."""
        schema = TABLES.get(table)
        if schema is not None and data.schema.metadata is None:
            data = data.replace_schema_metadata(schema.metadata)
        final = self.path(table, name, source)
        self.fs.create_dir(posixpath.dirname(final), recursive=True)
        buf = io.BytesIO()
        pq.write_table(data, buf, compression="zstd")
        payload = buf.getvalue()
        if self.local:
            tmp = posixpath.join(posixpath.dirname(final), f".tmp-{uuid.uuid4().hex}")
            with self.fs.open_output_stream(tmp) as out:
                out.write(payload)
            self.fs.move(tmp, final)  # atomic rename; replaces an existing file
        else:
            with self.fs.open_output_stream(final) as out:
                out.write(payload)
        return final

    def write_model(self, key: str, source: str, model_row: dict, layer_rows: list[dict],
                    esd_rows: list[dict] | None) -> None:
        """Write a model's esd and layers files, then its models row (the commit record)."""
        name = f"part-{key}.parquet"
        if esd_rows is not None:
            self.write_table("esd", esd_table(esd_rows), name, source)
        else:
            self._delete_if_exists(self.path("esd", name, source))
        self.write_table("layers", rows_to_table(layer_rows, DATASET_LAYER_SCHEMA), name, source)
        self.write_table("models", rows_to_table([model_row], MODEL_SCHEMA), name, source)

    def _delete_if_exists(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    # -- reading -------------------------------------------------------------------------------
    def files(self, table: str) -> list[str]:
        base = posixpath.join(self.root, f"table={table}")
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith("."))

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """Read a whole table (all partitions), columns unified by name."""
        import pyarrow.dataset as ds
        files = self.files(table)
        if not files:
            schema = TABLES.get(table)
            return schema.empty_table() if schema is not None else pa.table({})
        dataset = ds.dataset(files, filesystem=self.fs, format="parquet", partitioning=None)
        return dataset.to_table(columns=columns)

    def done(self) -> dict[str, str]:
        """model_key → status of every model with a models row."""
        t = self.read("models", columns=["model_key", "status"])
        return dict(zip(t.column("model_key").to_pylist(), t.column("status").to_pylist()))


def esd_table(rows: list[dict]) -> pa.Table:
    """``esd`` rows → a table, the eigenvalue lists built from one concatenated float32 array
    (no per-value Python objects)."""
    evals = [np.asarray(r["evals"], dtype=np.float32) for r in rows]
    offsets = np.concatenate(([0], np.cumsum([len(e) for e in evals]))).astype(np.int32)
    values = np.concatenate(evals) if evals else np.zeros(0, np.float32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))
    rest = rows_to_table([{k: v for k, v in r.items() if k != "evals"} for r in rows],
                         pa.schema([f for f in ESD_SCHEMA if f.name != "evals"]))
    return rest.append_column(ESD_SCHEMA.field("evals"), lists).select(ESD_SCHEMA.names).cast(ESD_SCHEMA)


def rows_to_table(rows: Iterable[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) → a table of ``schema``; missing keys are null, NaN floats become null."""
    import math
    rows = list(rows)
    cols = {}
    for f in schema:
        vals = []
        for r in rows:
            v = r.get(f.name)
            if isinstance(v, float) and math.isnan(v):
                v = None
            elif isinstance(v, np.generic):
                v = v.item()
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            vals.append(v)
        cols[f.name] = vals
    return pa.Table.from_pydict(cols, schema=schema)


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
