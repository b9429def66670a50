"""DuckDB over a survey dataset: views ``models``, ``layers``, ``esd``, ``surveys``, ``accuracy``.

Local datasets are read with ``read_parquet('<root>/table=<t>/**/*.parquet', hive_partitioning=true,
union_by_name=true)``; datasets on other filesystems (S3 …) through pyarrow datasets registered in
DuckDB (lazy scans with projection and filter pushdown; no DuckDB extension or network download
needed).
"""

from __future__ import annotations

from hubscan.store import Dataset

VIEWS = ("models", "layers", "esd", "surveys", "accuracy")


def connect(dataset: str, *, require: bool = True, **storage_options):
    """A DuckDB connection with one view per table present in the dataset.

    Parameters
    ----------
    dataset : str
        Dataset directory or URL.
    require : bool
        Raise a one-line error when there is no dataset (no ``models`` table); with False an empty
        dataset gives empty views.
    **storage_options
        Filesystem options (see :func:`hubscan.store.open_filesystem`).

    Returns
    -------
    duckdb.DuckDBPyConnection

    Raises
    ------
    hubscan.errors.NoWeightsError
        No dataset at ``dataset`` (when ``require``).
    """
    import duckdb
    import pyarrow.dataset as ds

    from hubscan.schema import ACCURACY_SCHEMA

    data = Dataset(dataset, create=False, **storage_options)
    if require:
        data.require()
    con = duckdb.connect()
    for table in VIEWS:
        files = data.files(table)
        if not files:  # accuracy before any ingestion: an empty view with its columns, so queries still run
            schema = ACCURACY_SCHEMA if table == "accuracy" else None
            if schema is not None:
                con.register(f"_{table}_empty", schema.empty_table())
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_empty")
            continue
        if data.local:
            glob = f"{data.root}/table={table}/**/*.parquet".replace("'", "''")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', hive_partitioning=true, "
                        f"union_by_name=true)")
        else:
            con.register(f"_{table}_arrow", ds.dataset(files, filesystem=data.fs, format="parquet"))
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_arrow")
    return con


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
    out.append(("models by status", [f"{s}: {n}" for s, n in rows]))
    rows = con.execute("""SELECT coalesce(family, '?') AS family, count(*), avg(alpha), avg(alpha_weighted),
                          sum(num_under_trained), sum(num_over_trained)
                          FROM models WHERE status IN ('success', 'incomplete') GROUP BY 1 ORDER BY 2 DESC LIMIT 15"""
                       ).fetchall()
    out.append(("mean layer alpha per family (models, alpha, alpha_weighted, under-/over-trained layers)",
                [f"{f:<32} {n:>4}  alpha={a:.3f}  alpha_w={aw:.3f}  under={u} over={o}" for f, n, a, aw, u, o in rows
                 if a is not None]))
    return out
