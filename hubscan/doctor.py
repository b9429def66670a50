"""``hubscan doctor``: what is damaged in a dataset, and the repair of what can be repaired safely.

A Delta table is read from its ``_delta_log``: the newest checkpoint, then every JSON commit after
it. A damaged file there (a truncated or overwritten commit, an unreadable checkpoint, a missing
commit) makes the table unreadable (:class:`~hubscan.errors.DatasetCorruptError` names the file);
a data file the log references but the store lost makes its rows unreadable.

:func:`diagnose` reports, per table, its damage and what the repair would do; :func:`repair` does it
while holding the dataset's lease (no survey writes meanwhile):

- a damaged checkpoint (or ``_last_checkpoint`` pointer) is moved aside: readers replay the commits
  since the previous checkpoint instead (when those are still there);
- a damaged or missing commit of version v: the table is **rolled back to version v − 1**, its last
  state that can be read whole. Commits v … latest are replaced by empty commits, so the version
  numbers keep their meaning (a survey's recorded versions, ``--as-of``) and the next commit is
  latest + 1. Commits after v are rolled back too although intact: they were made on top of v, whose
  lost actions (e.g. a compaction's removes) cannot be known, and replaying them on v − 1 could
  show rows twice. Nothing is rebuilt from a partial commit;
- data files the log references but the store lost are removed from the table (delta-rs
  ``DeltaTable.repair``);
- then models whose ``layers`` (or, with eigenvalues kept, ``esd``) rows were lost are removed from
  ``models``, so the next ``hubscan survey`` redoes them; layer rows of models that ``models`` no
  longer lists are left for that survey to replace (as after a killed driver).

Every file replaced or moved is first copied to ``DATASET/_doctor/<UTC time>/<table>/``.
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from hubscan.store import LEASE_TABLE, TABLES, Dataset, Lease, LogDamage, error_reason

#: The tables the doctor examines: every dataset table and the lease.
EXAMINED = (*TABLES, LEASE_TABLE)


@dataclass
class TableReport:
    """What :func:`diagnose` found in one table.

    Attributes
    ----------
    table : str
    version : int or None
        The latest version, when the table can be read.
    files : int
        Live data files of that version.
    damage : list of LogDamage
        Damaged files of its ``_delta_log`` (those the latest version needs, and others).
    missing : list of str
        Data files the latest version references that the store does not hold.
    rollback_to : int or None
        The version the repair rolls the table back to (a damaged or missing commit).
    error : str or None
        Why the table cannot be read or examined, when no repair applies.
    """
    table: str
    version: int | None = None
    files: int = 0
    damage: list[LogDamage] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rollback_to: int | None = None
    error: str | None = None

    @property
    def sound(self) -> bool:
        return not (self.damage or self.missing or self.error)

    @property
    def readable(self) -> bool:
        """Its latest version can be queried (damage only time travel meets is allowed)."""
        return not (self.error or self.missing or any(d.needed for d in self.damage))


@dataclass
class Diagnosis:
    """:func:`diagnose`'s result: a report per table present, and the models whose rows are lost."""
    dataset: str
    tables: list[TableReport]
    #: model_key of models listed as analyzed whose layer (or esd) rows are gone
    orphans: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        """Every table's latest version reads whole and no model lost its rows (damage that only time
        travel meets is reported, not counted)."""
        return all(t.readable for t in self.tables) and not self.orphans

    def lines(self) -> list[str]:
        """The report, one line per finding: each table's state, each damaged file, what the repair does."""
        out = []
        for t in self.tables:
            if t.sound:
                out.append(f"{t.table}: sound (version {t.version}, {t.files} data files)")
                continue
            out.append(f"{t.table}: readable (version {t.version}, {t.files} data files), older commits damaged"
                       if t.readable else f"{t.table}: DAMAGED")
            for d in t.damage:
                use = "the latest version needs it" if d.needed else "only time travel to older versions needs it"
                out.append(f"  {d.path}: {d.problem} ({use})")
            if t.missing:
                out.append(f"  {len(t.missing)} data files the log references are missing from the store "
                           f"(first: {t.missing[0]}); repair removes them from the table (their rows are lost)")
            if t.rollback_to is not None:
                out.append(f"  repair: roll {t.table} back to version {t.rollback_to}, its last state readable whole "
                           "(the later commits replaced by empty ones; the models they held are redone by the next "
                           "survey)")
            elif any(d.needed and not d.path.endswith(".json") for d in t.damage):
                out.append("  repair: move the damaged checkpoint aside; readers replay the commits since the "
                           "previous checkpoint")
            if t.error:
                out.append(f"  {t.error}")
        if self.orphans:
            out.append(f"models: {len(self.orphans)} models are listed as analyzed but their layer or eigenvalue rows "
                       "are gone; repair removes them from models (the next survey redoes them)")
        return out


def diagnose(dataset: str, **storage_options) -> Diagnosis:
    """Examine every table of a dataset (see the module docstring).

    Parameters
    ----------
    dataset : str
        Dataset path or URL.
    **storage_options
        Filesystem options (:func:`hubscan.store.open_filesystem`).

    Returns
    -------
    Diagnosis

    Raises
    ------
    hubscan.errors.DatasetNotFoundError
        No hubscan dataset there.
    """
    data = Dataset(dataset, create=False, **storage_options).require()
    reports = [_examine(data, t) for t in EXAMINED
               if data.fs.get_file_info(posixpath.join(data.root, t, "_delta_log")).type == pafs.FileType.Directory]
    readable = all(r.readable for r in reports if r.table in ("models", "layers", "esd"))
    return Diagnosis(dataset, reports, _orphans(data) if readable else [])


def _examine(data: Dataset, table: str) -> TableReport:
    from hubscan.errors import HubscanError
    report = TableReport(table, damage=data.log_damage(table, every=True))
    needed = [d for d in report.damage if d.needed and d.version is not None and d.path.endswith(".json")]
    if needed:
        report.rollback_to = needed[0].version - 1
        if report.rollback_to < 0:
            report.error = "its first commit (the table's creation) is damaged: move the table's folder aside " \
                           "(its rows are lost) and rerun the survey"
            report.rollback_to = None
        return report
    if any(d.needed for d in report.damage):
        return report  # a damaged checkpoint or pointer: moved aside by the repair
    try:
        dt = data.table(table)
        if dt is None:  # not there (e.g. no lease was ever taken)
            return report
        report.version, report.files = dt.version(), len(dt.file_uris())
        report.missing = list(dt.repair(dry_run=True).get("files_removed", []))
    except HubscanError as exc:
        report.error = exc.reason
    except Exception as exc:  # noqa: BLE001 - a store error: reported, not raised
        report.error = error_reason(exc)
    return report


def _orphans(data: Dataset) -> list[str]:
    """model_key of models with status success / incomplete whose layer rows are gone, or whose esd
    rows are gone although the model kept its eigenvalues (``options.keep_evals``)."""
    from hubscan.query import connect
    con = connect(data.url, **data.storage_options)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if not {"models", "layers"} <= views:
        return []  # no model was ever analyzed
    layers = "SELECT 1 FROM layers l WHERE l.model_key = m.model_key"
    lost_esd = "false"
    if "esd" in views:
        lost_esd = (f"coalesce(try_cast(json_extract(m.options, '$.keep_evals') AS BOOLEAN), false) AND EXISTS "
                    f"({layers} AND l.status = 'success') AND NOT EXISTS "
                    "(SELECT 1 FROM esd e WHERE e.model_key = m.model_key)")
    rows = con.execute(f"SELECT model_key FROM models m WHERE status IN ('success', 'incomplete') AND "
                       f"(NOT EXISTS ({layers}) OR ({lost_esd})) ORDER BY model_key").fetchall()
    return [r[0] for r in rows]


def repair(dataset: str, **storage_options) -> list[str]:
    """Repair what :func:`diagnose` found and can be repaired safely (module docstring), holding the
    dataset's lease.

    Returns
    -------
    list of str
        One line per action taken (empty for a sound dataset).

    Raises
    ------
    hubscan.errors.DatasetBusyError
        Another process (a survey) holds the dataset.
    hubscan.errors.HubscanError
        Damage that cannot be repaired (the line says what to do).
    """
    data = Dataset(dataset, create=False, **storage_options).require()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    done: list[str] = []
    lease = _examine(data, LEASE_TABLE)
    if not lease.sound:  # the lease table first (it only says who writes now): the lease is taken from it
        done += _repair_table(data, lease, stamp)
    with Lease(data, f"doctor-{stamp}", operation="doctor"):
        for report in diagnose(dataset, **storage_options).tables:
            if report.table != LEASE_TABLE and not report.sound:
                done += _repair_table(data, report, stamp)
        data.refresh()
        orphans = _orphans(data)
        if orphans:
            data.commit("models", [], replace=("model_key", orphans), operation="doctor")
            done.append(f"models: {len(orphans)} models whose layer or eigenvalue rows were lost removed "
                        "(the next `hubscan survey` redoes them)")
    return done


def _backup(data: Dataset, path: str, stamp: str, table: str) -> None:
    """Copy a file of a table's ``_delta_log`` to ``DATASET/_doctor/<stamp>/<table>/`` before it changes."""
    dest = posixpath.join(data.root, "_doctor", stamp, table, posixpath.basename(path))
    data.fs.create_dir(posixpath.dirname(dest), recursive=True)
    data.fs.copy_file(path, dest)


def _repair_table(data: Dataset, report: TableReport, stamp: str) -> list[str]:
    from hubscan.errors import HubscanError
    table, done = report.table, []
    log_dir = posixpath.join(data.root, table, "_delta_log")
    moved = [d for d in report.damage if d.needed and not d.path.endswith(".json")]
    if any(d.path.endswith(".parquet") for d in moved):  # the pointer names the checkpoint moved aside
        pointer = posixpath.join(log_dir, "_last_checkpoint")
        if data.fs.get_file_info(pointer).type == pafs.FileType.File and all(d.path != pointer for d in moved):
            moved.append(LogDamage(table, pointer, None, "names the damaged checkpoint", True))
    for d in moved:  # readers replay the commits since the previous checkpoint instead
        _backup(data, d.path, stamp, table)
        data.fs.delete_file(d.path)
        done.append(f"{table}: {posixpath.basename(d.path)} ({d.problem}) moved to _doctor/{stamp}/{table}/")
    if moved:
        report = _examine(data, table)
    if report.rollback_to is not None:
        done.append(_roll_back(data, table, report.rollback_to, stamp))
        report = _examine(data, table)
    if report.error:
        raise HubscanError(f"{data.url}/{table}", report.error)
    if report.missing:
        data.table(table).repair(dry_run=False)
        done.append(f"{table}: {len(report.missing)} data files the store lost removed from the table "
                    f"(their rows are lost; first: {report.missing[0]})")
    old = [d for d in report.damage if not d.needed]
    if old:
        done.append(f"{table}: {len(old)} damaged commits before its newest checkpoint left as they are (the latest "
                    f"version does not read them; only --as-of a survey that recorded versions {old[0].version}… "
                    "up to that checkpoint fails)")
    return done


def _roll_back(data: Dataset, table: str, version: int, stamp: str) -> str:
    """Replace commits ``version + 1`` … latest of a table by empty commits (the originals copied to
    ``_doctor/``): the table reads as it was at ``version``."""
    log_dir = posixpath.join(data.root, table, "_delta_log")
    commits = data.log_files(table)[0]
    latest = max(commits)
    first_survey = None
    for v in range(version + 1, latest + 1):
        path = posixpath.join(log_dir, f"{v:020d}.json")
        if v in commits:
            _backup(data, path, stamp, table)
            first_survey = first_survey or _survey_of(data, path)
        noop = {"commitInfo": {"timestamp": int(time.time() * 1000), "operation": "hubscan doctor",
                               "operationParameters": {"repair": f"empty commit in place of version {v}: table rolled "
                                                                 f"back to version {version}"},
                               "hubscan.operation": "doctor", "isBlindAppend": True}}
        with data.fs.open_output_stream(path) as out:
            out.write(json.dumps(noop).encode())
    data.refresh()
    data.table(table)  # raises when the rolled-back table still cannot be read
    commits = f"commit {latest}" if latest == version + 1 else f"commits {version + 1}…{latest}"
    by = f"; survey {first_survey} wrote the first" if first_survey else ""
    return (f"{table}: rolled back to version {version} ({commits} replaced by empty commits, originals in "
            f"_doctor/{stamp}/{table}/){by}")


def _survey_of(data: Dataset, path: str) -> str | None:
    """The survey id a commit's (complete) first line names, if any."""
    try:
        first = data.read_bytes(path).split(b"\n", 1)[0]
        return json.loads(first).get("commitInfo", {}).get("hubscan.survey_id")
    except (ValueError, AttributeError, OSError):
        return None
