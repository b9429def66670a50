"""DuckDB over a survey dataset: views ``models``, ``layers``, ``esd``, ``surveys``, ``accuracy``.

Each Delta table's live files (from the Delta snapshot, never a glob: removed and uncommitted
files are left out) become a DuckDB view: on local disk through DuckDB's built-in Parquet reader,
on object stores as a registered ``pyarrow.dataset`` (lazy scans with projection and filter
pushdown) — no DuckDB extension to download either way. ``as_of`` gives the tables as a survey left them
(the table versions its ``surveys`` row recorded). A table whose ``_delta_log`` is damaged becomes a
view that fails, when a query reads it, with the one line naming the damaged file: the other tables
stay queryable.
"""

from __future__ import annotations

import json

from hubscan.store import TABLES, Dataset

#: One DuckDB view per table of the dataset.
VIEWS = tuple(TABLES)


def survey_versions(data: Dataset, survey_id: str) -> tuple[dict[str, int], object]:
    """The table versions a survey recorded and its ``started_at``.

    Raises
    ------
    hubscan.errors.SurveyNotFoundError
        No survey ``survey_id`` in the dataset.
    """
    import pyarrow.dataset as pds
    from hubscan.errors import SurveyNotFoundError
    t = data.read("surveys", columns=["survey_id", "started_at", "table_versions"],
                  filter=pds.field("survey_id") == survey_id)
    if t.num_rows == 0 or "table_versions" not in t.column_names:
        raise SurveyNotFoundError(data.url, f"no survey {survey_id!r} in this dataset (see: SELECT survey_id FROM surveys)")
    row = t.to_pylist()[-1]
    return {k: int(v) for k, v in json.loads(row["table_versions"] or "{}").items()}, row["started_at"]


def connect(dataset: str, *, require: bool = True, as_of: str | None = None, **storage_options):
    """A DuckDB connection with one view per table of the dataset.

    Parameters
    ----------
    dataset : str
        Dataset directory or URL.
    require : bool
        Raise a one-line error when there is no dataset; with False an absent dataset gives empty
        views.
    as_of : str, optional
        A survey id: every table as it was when that survey finished (Delta time travel); the
        ``surveys`` view holds the surveys up to that one.
    **storage_options
        Filesystem options (see :func:`hubscan.store.open_filesystem`).

    Returns
    -------
    duckdb.DuckDBPyConnection

    Raises
    ------
    hubscan.errors.DatasetNotFoundError
        No dataset at ``dataset`` (when ``require``).
    hubscan.errors.SurveyNotFoundError
        No survey ``as_of`` in the dataset.
    """
    import duckdb

    from hubscan.errors import DatasetCorruptError
    data = Dataset(dataset, create=False, **storage_options)
    if require or as_of:
        data.require()
    versions, started = survey_versions(data, as_of) if as_of else ({}, None)
    con = duckdb.connect()
    for table in VIEWS:
        try:
            if as_of and table not in versions and table != "surveys":
                source = None  # the table did not exist when the survey finished
            else:
                source = data.arrow_dataset(table, versions.get(table))
        except DatasetCorruptError as exc:
            con.execute(_failing_view(con, table, str(exc)))
            continue
        if source is None and table != "accuracy":
            continue  # no such table (yet): no view
        where = f" WHERE started_at <= TIMESTAMPTZ '{started.isoformat()}'" if table == "surveys" and as_of else ""
        if source is not None and data.local and source.files:
            body = _native_scan(con, table, source)
        else:  # object stores (no DuckDB extension needed), or accuracy before any ingestion (empty view)
            con.register(f"_{table}_arrow", source if source is not None else TABLES[table].empty_table())
            body = f"SELECT * FROM _{table}_arrow"
        con.execute(f"CREATE VIEW {table} AS {body}{where}")
    return con


def _failing_view(con, table: str, message: str) -> str:
    """A view with the table's columns that raises ``message`` when a query reads a row of it (a
    damaged table): queries of the other views still run."""
    con.register(f"_{table}_columns", TABLES[table].empty_table())
    text = message.replace("'", "''")
    return (f"CREATE VIEW {table} AS SELECT c.* FROM range(1) LEFT JOIN _{table}_columns c ON true "
            f"WHERE error('{text}')")


def _native_scan(con, table: str, source) -> str:
    """The SELECT of a local table's live files through DuckDB's built-in Parquet reader (its
    fastest path), in the Delta schema's column order; columns no file holds yet read as typed
    NULLs; the partition column comes from the file paths (hive partitioning)."""
    files = ", ".join("'" + f.replace("'", "''") + "'" for f in source.files)
    scan = f"read_parquet([{files}], hive_partitioning=true, union_by_name=true)"
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    missing = [f for f in source.schema if f.name not in have]
    types = {}
    if missing:
        import pyarrow as pa
        con.register(f"_{table}_missing", pa.schema(missing).empty_table())
        types = {r[0]: r[1] for r in con.execute(f"DESCRIBE _{table}_missing").fetchall()}
    cols = [f'"{f.name}"' if f.name in have else f'NULL::{types[f.name]} AS "{f.name}"' for f in source.schema]
    return f"SELECT {', '.join(cols)} FROM {scan}"


def summary_tables(dataset: str, storage_options: dict | None = None) -> list[tuple[str, list[str]]]:
    """A few printed summaries of a dataset: models per status, alpha per family, worst models."""
    from hubscan.errors import HubscanError
    try:
        con = connect(dataset, **(storage_options or {}))
    except HubscanError:  # nothing written yet (e.g. an empty source)
        return []
    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "models" not in have:
        return []
    out = []
    rows = con.execute("SELECT status, count(*) FROM models GROUP BY 1 ORDER BY 2 DESC").fetchall()
    out.append(("the whole dataset, models by status", [", ".join(f"{s}: {n}" for s, n in rows)]))
    rows = con.execute("""SELECT coalesce(family, '?') AS family, count(*), avg(alpha), avg(alpha_weighted),
                          sum(num_under_trained), sum(num_over_trained)
                          FROM models WHERE status IN ('success', 'incomplete') GROUP BY 1 ORDER BY 2 DESC LIMIT 15"""
                       ).fetchall()
    rows = [r for r in rows if r[2] is not None]
    w = min(20, max([len(r[0]) for r in rows] + [6]))
    out.append(("per family: models, mean alpha, alpha_weighted, under-/over-trained layers",
                [f"{(f if len(f) <= w else f[:w - 1] + '…'):<{w}} {n:>4}  alpha {a:.2f}  alpha_w {aw:.2f}  "
                 f"under {u} over {o}" for f, n, a, aw, u, o in rows]))
    return out
