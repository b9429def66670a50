"""DuckDB over a survey dataset: views ``models``, ``layers``, ``esd``, ``surveys``, ``accuracy``, and
``lineage``, ``deltas``, ``training`` where the dataset holds them; ``latest_models`` and ``latest_layers``
(the newest analysis of each model: ``models`` keeps one row per revision and analysis config).

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

from hubscan.errors import printable
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


#: Views that exist, empty with their table's columns, before the first row of their table is committed
#: (``accuracy`` always; the survey's tables with ``connect(..., empty_views=True)``, as ``hubscan sql`` asks).
SURVEY_VIEWS = ("models", "layers", "esd")


def connect(dataset: str, *, require: bool = True, as_of: str | None = None, empty_views: bool = False,
            **storage_options):
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
    empty_views : bool
        Give ``models``, ``layers`` and ``esd`` an empty view with their columns while no model is
        committed (a survey interrupted before its first commit): a query reads no rows instead of
        failing. Otherwise (as for ``lineage``, ``deltas``, ``training``) a table not written yet has
        no view, which callers test to leave out what it would show.
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
    made = set()
    for table in VIEWS:
        try:
            if as_of and table not in versions and table != "surveys":
                source = None  # the table did not exist when the survey finished
            else:
                source = data.arrow_dataset(table, versions.get(table))
        except DatasetCorruptError as exc:
            con.execute(_failing_view(con, table, str(exc)))
            made.add(table)
            continue
        if source is None and table != "accuracy" and not (empty_views and table in SURVEY_VIEWS):
            continue  # no such table (yet): no view
        where = f" WHERE started_at <= TIMESTAMPTZ '{started.isoformat()}'" if table == "surveys" and as_of else ""
        if source is not None and data.local and source.files:
            body = _native_scan(con, table, source)
        else:  # object stores (no DuckDB extension needed), or a table not written yet (empty view)
            con.register(f"_{table}_arrow", source if source is not None else TABLES[table].empty_table())
            body = f"SELECT * FROM _{table}_arrow"
        con.execute(f"CREATE VIEW {table} AS {body}{where}")
        made.add(table)
    _latest_views(con, made)
    return con


#: The newest analysis of each model (source, model_id): the revision the latest survey listed (last_seen
#: null) first, else the one listed last (a model deleted or made private since), then the latest analysis.
LATEST_MODELS = """SELECT * FROM models QUALIFY row_number() OVER (
    PARTITION BY source, model_id ORDER BY last_seen DESC NULLS FIRST, analyzed_at DESC, model_key) = 1"""


def _latest_views(con, have: set[str]) -> None:
    """Views ``latest_models`` (:data:`LATEST_MODELS`: one row per model, where ``models`` keeps one per
    revision and analysis config) and ``latest_layers`` (the layers of those rows) over the views ``have``
    made: what dataset-wide summaries count, so that a rerun over new revisions does not count a model twice."""
    if "models" in have:
        con.execute(f"CREATE VIEW latest_models AS {LATEST_MODELS}")
        if "layers" in have:
            con.execute("CREATE VIEW latest_layers AS SELECT * FROM layers "
                        "WHERE model_key IN (SELECT model_key FROM latest_models)")


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


def summary_tables(dataset: str, storage_options: dict | None = None, columns: int = 80
                   ) -> list[tuple[str, list[str]]]:
    """A few printed summaries of a dataset: models per status, alpha per family.

    Parameters
    ----------
    dataset : str
        The dataset's folder or URL.
    storage_options : dict, optional
        Passed to the Delta reader (object stores).
    columns : int
        The terminal's width: family names are cut to fit it, indented by 2 (at least 20 characters).

    Returns
    -------
    list of (title, lines)
        Empty when the dataset holds no ``models`` table yet.
    """
    from hubscan.errors import HubscanError
    try:
        con = connect(dataset, **(storage_options or {}))
    except HubscanError:  # nothing written yet (e.g. an empty source)
        return []
    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "models" not in have:
        return []
    out = []
    rows = con.execute("SELECT status, count(*) FROM latest_models GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    out.append(("the whole dataset (latest revision of each model), models by status",
                [", ".join(f"{s}: {n}" for s, n in rows)]))
    rows = con.execute("""SELECT coalesce(family, '?') AS family, count(*), avg(alpha), avg(alpha_weighted),
                          sum(num_under_trained), sum(num_over_trained)
                          FROM latest_models WHERE status IN ('success', 'incomplete') GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 15"""
                       ).fetchall()
    # names as the terminal shows them (escaped control characters), so that their width is the printed one
    rows = [(printable(r[0]), *r[1:]) for r in rows if r[2] is not None]
    if not rows:  # no model with an alpha: no empty table
        return out
    w = family_width([r[0] for r in rows], columns)
    out.append(("per family: models, mean alpha, alpha_weighted, under-/over-trained layers",
                [family_line(*r, width=w) for r in rows]))
    return out


def family_width(families: list[str], columns: int = 80) -> int:
    """The width of the per-family summary's name column: the longest name (at least 6), within ``columns``
    once indented by 2 (:func:`family_line` adds 55 characters), never below 20."""
    return min(max(20, columns - 2 - 55), max([len(f) for f in families] + [6]))


def family_line(family: str, models: int, alpha: float | None, alpha_weighted: float | None,
                under: int | None, over: int | None, *, width: int = 20) -> str:
    """One line of the per-family summary, its columns at fixed places (alpha ≥ 10, a negative
    alpha_weighted and a null mean align too); ``family`` cut to ``width`` with an ellipsis. ``width`` + 55
    characters (75 at the default width: printed indented by 2, within 80 columns) while counts stay
    below 10,000 models and 1,000 layers."""
    def num(v) -> str:
        return f"{v:6.2f}" if v is not None else f"{'–':>6}"
    name = family if len(family) <= width else family[:width - 1] + "…"
    return (f"{name:<{width}} {models:>4}  alpha {num(alpha)}  alpha_w {num(alpha_weighted)}  "
            f"under {under or 0:>3} over {over or 0:>3}")


def survey_changes(dataset: str, older: str | None = None, newer: str | None = None,
                   storage_options: dict | None = None) -> dict:
    """What changed between two surveys of a dataset (periodic surveys; ``hubscan changes``): the ``models``
    table as the older survey left it against the table as the newer one left it (Delta time travel to the
    versions their ``surveys`` rows recorded).

    Parameters
    ----------
    dataset : str
        The dataset.
    older, newer : str, optional
        Survey ids; default the last survey (by ``started_at``) and the last one before it that was not
        interrupted (the one just before when every earlier one was).

    Returns
    -------
    dict
        ``older``, ``newer``: the two surveys rows (id, source, filters, started_at, num_models,
        num_already_done, requests, bytes_read); and lists of dicts by model id, each sorted:

        - ``new`` — models the older survey's table did not hold (model_id, revision, status);
        - ``new_revision`` — models held before at other revisions (model_id, old revisions, revision,
          status);
        - ``unlisted`` — models whose every row got its ``last_seen`` between the two (no longer listed at any
          revision by a survey of their source and filters: deleted, made private or renamed; rows kept);
        - ``access`` — same model_key, ``gated`` changed (model_id, before, after);
        - ``status`` — same model_key, status changed (a failed model that now succeeded …).

        With no survey before ``newer`` (``older`` not given; the dataset's first survey, or none):
        ``older`` is None (``newer`` too when the dataset has no survey) and every list is empty.

    Raises
    ------
    hubscan.errors.SurveyNotFoundError
        A survey id not in the dataset.
    """
    from hubscan.errors import SurveyNotFoundError
    data = Dataset(dataset, create=False, **(storage_options or {})).require()
    surveys = sorted(data.read("surveys").to_pylist(), key=lambda r: r["started_at"])
    ids = [r["survey_id"] for r in surveys]
    newer = newer or (ids[-1] if ids else None)
    if older is None:
        if newer is not None and newer not in ids:
            raise SurveyNotFoundError(data.url, f"no survey {newer!r} in this dataset (see: hubscan sql --dataset "
                                                f"{dataset} \"SELECT survey_id, started_at FROM surveys\")")
        if newer is None or ids.index(newer) == 0:  # a first survey: nothing to compare it with, not an error
            return {"older": None, "newer": next((r for r in surveys if r["survey_id"] == newer), None),
                    **{k: [] for k in ("new", "new_revision", "unlisted", "access", "status")}}
        before = surveys[:ids.index(newer)]  # the last one before that ran to its end (an interrupted one holds
        # part of a listing: against it, models it never reached would read as changed, unlisted ones as not)
        older = next((r["survey_id"] for r in reversed(before) if not r.get("interrupted")), before[-1]["survey_id"])
    rows = {}
    for name, sid in (("older", older), ("newer", newer)):
        if sid not in ids:
            raise SurveyNotFoundError(data.url, f"no survey {sid!r} in this dataset (see: hubscan sql --dataset "
                                                f"{dataset} \"SELECT survey_id, started_at FROM surveys\")")
        rows[name] = next(r for r in reversed(surveys) if r["survey_id"] == sid)
    a, b = rows["older"], rows["newer"]
    cols = ["model_key", "model_id", "revision", "status", "gated", "last_seen", "survey_id"]

    def models(survey):
        versions, _ = survey_versions(data, survey["survey_id"])
        return data.read("models", columns=cols, version=versions.get("models")).to_pylist()

    before, after = models(a), models(b)
    by_key = {r["model_key"]: r for r in before}
    revs_before: dict = {}
    for r in before:
        revs_before.setdefault(r["model_id"], set()).add(r["revision"])
    revs_after: dict = {}
    for r in after:
        revs_after.setdefault(r["model_id"], []).append(r)
    out = {"older": {k: a.get(k) for k in _SURVEY_KEYS}, "newer": {k: b.get(k) for k in _SURVEY_KEYS},
           "new": [], "new_revision": [], "unlisted": [], "access": [], "status": []}
    for model_id, rs in sorted(revs_after.items()):
        if model_id not in revs_before:
            out["new"] += [{"model_id": model_id, "revision": r["revision"], "status": r["status"]} for r in rs]
            continue
        for r in rs:
            if r["revision"] not in revs_before[model_id]:
                out["new_revision"].append({"model_id": model_id, "old_revisions": sorted(map(str, revs_before[model_id])),
                                            "revision": r["revision"], "status": r["status"]})
        marked = [r.get("last_seen") for r in rs if r.get("last_seen") is not None
                  and (by_key.get(r["model_key"]) or {}).get("last_seen") is None]
        if marked and all(r.get("last_seen") is not None for r in rs):
            out["unlisted"].append({"model_id": model_id, "last_seen": max(r.get("last_seen") for r in rs)})
    for r in after:
        old = by_key.get(r["model_key"])
        if old is None:
            continue
        if bool(old["gated"]) != bool(r["gated"]) and r["gated"] is not None:
            out["access"].append({"model_id": r["model_id"], "before": old["gated"], "after": r["gated"]})
        if old["status"] != r["status"]:
            out["status"].append({"model_id": r["model_id"], "before": old["status"], "after": r["status"]})
    return out


_SURVEY_KEYS = ("survey_id", "source", "filters", "started_at", "num_models", "num_already_done", "num_success",
                "num_failed", "num_skipped", "requests", "bytes_read")
