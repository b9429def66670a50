"""The Arrow schemas of hubscan's tables, generated from the typed records, and the one converter
from records (or mappings) to Arrow.

The columns are defined once: the fields of the records in :mod:`hubscan.records` (with their
dtype and description) and, for the per-layer metrics and the model summary, the metric registry
(:mod:`hubscan.esd.registry`). Every schema carries ``hubscan.table`` and
``hubscan.schema_version`` in its metadata and every field its ``description``.

Column names follow WeightWatcher's so that published analyses carry over. Units: eigenvalues are
those of X = WᵀW with no 1/N normalisation (conv layers × 0.5, WW's ``conv2d_norm``); ``log_*``
are base-10; times in seconds.

The schemas are functions of the registry (a metric registered at run time appears in them);
the module attributes ``LAYER_SCHEMA`` (what ``hubscan analyze --out`` writes),
``DATASET_LAYER_SCHEMA``, ``MODEL_SCHEMA``, ``ESD_SCHEMA``, ``SURVEY_SCHEMA``, ``ACCURACY_SCHEMA``
and ``LAYER_COLUMNS`` are computed on access.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Iterable

import numpy as np
import pyarrow as pa

from hubscan import records
from hubscan.errors import SchemaMismatchError, storable
from hubscan.esd import registry

#: Bumped whenever a column is renamed, removed or changes meaning (additions keep the version).
SCHEMA_VERSION = "1"

_EVAL_RESULT = pa.struct([("task", pa.string()), ("dataset", pa.string()), ("dataset_name", pa.string()),
                          ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64())])

_ARROW_TYPES = {
    "int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(),
    "string": pa.string(), "bool": pa.bool_(), "timestamp": pa.timestamp("us", tz="UTC"),
    "list<int64>": pa.list_(pa.int64()), "list<string>": pa.list_(pa.string()),
    "list<float32>": pa.list_(pa.float32()), "list<eval_result>": pa.list_(_EVAL_RESULT),
}


def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type of a record / registry dtype string (``float64``, ``list<int64>``, ``timestamp``
    = UTC microseconds …).

    Raises
    ------
    KeyError
        Unknown dtype.
    """
    return _ARROW_TYPES[dtype]


_cache: dict[str, tuple[int, pa.Schema]] = {}


def table_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table: ``models``, ``layers``, ``esd``, ``surveys``, ``accuracy``,
    ``lineage``, ``deltas``, ``training``, or
    ``analysis`` (one model's layer rows without identity, as ``hubscan analyze --out`` writes).

    Raises
    ------
    KeyError
        Unknown table.
    """
    gen = registry.generation()
    hit = _cache.get(table)
    if hit is not None and hit[0] == gen:
        return hit[1]
    fields = [pa.field(n, arrow_type(t), metadata={"description": d}) for n, t, d in records.table_columns(table)]
    schema = pa.schema(fields, metadata={"hubscan.table": "layers" if table == "analysis" else table,
                                         "hubscan.schema_version": SCHEMA_VERSION})
    _cache[table] = (gen, schema)
    return schema


class _Tables(Mapping):
    """table name → current schema (a live view of :func:`table_schema`)."""

    _NAMES = ("models", "layers", "esd", "surveys", "accuracy", "lineage", "deltas", "training")

    def __getitem__(self, table: str) -> pa.Schema:
        if table not in self._NAMES:
            raise KeyError(table)
        return table_schema(table)

    def __iter__(self):
        return iter(self._NAMES)

    def __len__(self) -> int:
        return len(self._NAMES)


#: The dataset's tables: name → schema.
TABLES = _Tables()

_CONSTANTS = {"LAYER_SCHEMA": "analysis", "DATASET_LAYER_SCHEMA": "layers", "MODEL_SCHEMA": "models",
              "ESD_SCHEMA": "esd", "SURVEY_SCHEMA": "surveys", "ACCURACY_SCHEMA": "accuracy",
              "LINEAGE_SCHEMA": "lineage", "DELTAS_SCHEMA": "deltas", "TRAINING_SCHEMA": "training"}


def __getattr__(name):
    if name in _CONSTANTS:
        return table_schema(_CONSTANTS[name])
    if name == "LAYER_COLUMNS":
        return table_schema("analysis").names
    raise AttributeError(name)


def _value(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        v = v.item()
        return None if isinstance(v, float) and math.isnan(v) else v
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _has_text(type_: pa.DataType) -> bool:
    """Whether values of an Arrow type hold strings (a string, a list of them, a struct with one)."""
    if pa.types.is_string(type_):
        return True
    if pa.types.is_list(type_):
        return _has_text(type_.value_type)
    return pa.types.is_struct(type_) and any(_has_text(f.type) for f in type_)


def _text(v):
    """``v`` with every string in it :func:`~hubscan.errors.storable` (lists and struct values walked)."""
    if isinstance(v, str):
        return storable(v)
    if isinstance(v, (list, tuple)):
        return [_text(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _text(x) for k, x in v.items()}
    return v


def _list_column(values: list, type_: pa.ListType) -> pa.Array | None:
    """A list column built from numpy arrays without per-element Python objects (eigenvalues)."""
    if not values or not all(isinstance(v, np.ndarray) for v in values):
        return None
    np_type = type_.value_type.to_pandas_dtype()
    arrays = [np.asarray(v, dtype=np_type).ravel() for v in values]
    offsets = np.concatenate(([0], np.cumsum([len(a) for a in arrays]))).astype(np.int32)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np_type)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=type_.value_type))


def rows_to_table(rows: Iterable, schema: pa.Schema | str, identity: Mapping | None = None) -> pa.Table:
    """Records or mappings → a table of ``schema``: the one converter into Arrow.

    Parameters
    ----------
    rows : iterable of hubscan.records.Record or mapping
        One per row. Missing columns are null; NaN floats become null; numpy scalars and arrays
        become Python values / lists (numpy arrays in a list column are converted without
        per-element Python objects); strings that are not valid UTF-8 (lone surrogates: a file name
        :func:`os.fsdecode` could not decode, a JSON header's ``"\\ud800"``) are written escaped by
        :func:`hubscan.errors.storable` (``bad\\xffname``), never an error.
    schema : pyarrow.Schema or str
        The schema, or a table name for :func:`table_schema`.
    identity : mapping, optional
        Columns added to every row (the model's identity for its layers and esd rows).

    Returns
    -------
    pyarrow.Table

    Raises
    ------
    hubscan.errors.SchemaMismatchError
        A row holds a key the schema lacks — never silently dropped.
    """
    if isinstance(schema, str):
        schema = table_schema(schema)
    names = set(schema.names)
    dicts = []
    for r in rows:
        d = r.to_row() if isinstance(r, records.Record) else dict(r)
        if identity:
            d = {**identity, **d}
        unknown = d.keys() - names
        if unknown:
            table = (schema.metadata or {}).get(b"hubscan.table", b"?").decode()
            raise SchemaMismatchError(f"{table} table", f"columns {sorted(unknown)} are not in its schema (register "
                                      "a metric, or add a field to the record in hubscan/records.py)")
        dicts.append(d)
    arrays = []
    for f in schema:
        vals = [d.get(f.name) for d in dicts]
        if _has_text(f.type):
            vals = [_text(v) for v in vals]
        arr = _list_column(vals, f.type) if pa.types.is_list(f.type) else None
        arrays.append(arr if arr is not None else pa.array([_value(v) for v in vals], type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = ["SCHEMA_VERSION", "TABLES", "arrow_type", "table_schema", "rows_to_table"]
