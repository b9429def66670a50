"""The hub survey: a Ray driver that plans the work and commits the dataset, and a pool of
analysis actors that stream weights, compute the ESDs and write data files (:mod:`hubscan.store`).

Flow (the steps of :class:`Survey`):

1. **plan** — enumerate the source, hold the dataset (writable? its lease), pin each model (commit
   sha / fingerprint), drop what the dataset already holds for the same (source, id, revision,
   analysis config) unless ``force``. Periodic surveys (:meth:`Survey.mark_listing`): a model the listing
   no longer holds at its revision keeps its rows, marked with ``last_seen``; a listed model whose ``gated``
   changed gets the new value — one commit, none when nothing changed (``hubscan changes``).
   Before Ray starts: a rerun with nothing to do never starts Ray, an empty source fails at once.
2. **init Ray** and start the **pool** of actors.
3. **dispatch** with back-pressure (at most ``max_in_flight`` models in flight). Each actor
   analyzes a model tensor by tensor, buffers its rows, and every ``flush_models`` models or
   ``flush_seconds`` seconds writes them as data files (many models per file) and returns the Delta
   add actions — cluster nodes share no disk, only the dataset's filesystem (e.g. S3).
4. **commit** — the driver is the only committer: it commits each flushed batch, ``layers`` and
   ``esd`` before ``models``, so the done-set never names a model whose layers are not visible; a
   model the dataset already holds (``force``, a failed model retried) is replaced in the same
   transaction as its new rows.
5. **summary** — compaction and vacuum, then the ``surveys`` row with the table versions
   (``hubscan sql --as-of SURVEY_ID``). Its counts are of committed models.

Fault tolerance: a model that fails is recorded with its reason and the survey goes on; an actor
that dies (OOM, killed, node lost) is replaced, its model retried up to ``max_attempts`` and the
uncommitted models it had buffered re-dispatched; a killed driver commits nothing more, and the
rerun redoes what was not committed (uncommitted files are invisible and vacuumed); Ctrl-C (or SIGTERM
under the CLI) stops at once, records the survey as interrupted with the counts of what was committed
and releases the lease.

The cluster: a survey given a Ray address (``address``, ``RAY_ADDRESS``) first connects to its port
(:func:`check_cluster`) and stops in one line when nothing listens there, before the source is listed or
anything held or written. Any other error that stops a survey once it holds the dataset leaves its
``surveys`` row marked ``interrupted``.

The dataset: once the source is enumerated (a source that cannot be listed fails first, touching
nothing), the survey checks that the dataset can be written and takes its lease
(:class:`hubscan.store.Lease`: one survey at a time per dataset; a second is refused in one line
naming the holder), before anything is pinned, Ray started or a row written. A write that fails
during the survey (or a lease lost to another writer) stops it at once, nothing more written. A
source whose endpoint cannot be reached
(:class:`~hubscan.errors.HubUnreachableError`) is not a property of each model: while planning it
stops the survey before any model row is written; during the analyses the survey stops
dispatching, commits what was analyzed and leaves the models not yet analyzed (the one that met the
outage included) for the next run, which is unaffected — no ``failed`` row says "cannot reach the
Hub". The surveys row then says ``interrupted`` and the command exits 1 in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque

from hubscan import __version__
from hubscan.analysis import AnalyzeOptions
from hubscan.errors import (ClusterUnreachableError, DatasetBusyError, DatasetWriteError, GatedModelError, HubscanError,
                            HubUnreachableError, NoWeightsError, PathNotFoundError, SameContentError, one_line)
from hubscan.hub import BudgetGate, HubBudget, HubClient, install_http_client
from hubscan.records import ModelRecord, ModelStatus
from hubscan.refs import ModelRef
from hubscan.store import (DEFAULT_RETENTION_HOURS, TABLES, Dataset, Lease, config_hash, delta_table, model_key,
                           model_tables, rows_to_table)

log = logging.getLogger(__name__)
progress_log = logging.getLogger("hubscan.progress")

#: The tables a survey writes, in commit order (``models`` last: it is the done-set; ``deltas`` only a
#: model-tree survey, :class:`hubscan.census.TreeSurvey`).
WRITE_ORDER = ("esd", "layers", "deltas", "models")


@dataclasses.dataclass
class SurveyConfig:
    """Settings of one survey run.

    Attributes
    ----------
    source : str
        ``hf``, ``timm``, ``local:DIR`` or ``list:FILE``.
    out : str
        Dataset location: a path or ``s3://bucket/prefix``.
    filters : dict
        Source filters (hf: filter, author, search, pipeline_tag, sort; timm: filter, exclude).
    limit : int or None
        Models to enumerate at most.
    options : AnalyzeOptions
        Analysis settings (``device`` is set per actor).
    address : str or None
        Ray cluster address (``auto``, ``ray://…``); None starts an embedded local Ray.
    actors : int or None
        Analysis actors; None → one per GPU, else one per 2 CPUs.
    gpus_per_actor : float or None
        GPUs per actor; None → 1 when the cluster has GPUs, else 0.
    cpus_per_actor : float or None
        CPUs per actor (torch threads); None → cluster CPUs / actors (at least 1).
    max_in_flight : int or None
        Models dispatched and not finished at once; None → 2 × actors.
    max_attempts : int
        Attempts per model when actors die.
    force : bool
        Re-analyze (replace) models the dataset already holds.
    keep_esd : bool
        Write the ``esd`` table (eigenvalues per layer); the models the dataset holds analyzed by a survey that
        did not (``--no-esd``) are then analyzed again.
    storage_options : dict
        Filesystem options of ``out`` (e.g. S3 ``endpoint_override``).
    hub : dict
        :class:`~hubscan.hub.HubClient` settings (endpoint, max_retries, timeout, cache_dir …).
    hub_budget : dict
        ``{kind: (requests, window seconds)}`` (:func:`hubscan.hub.parse_budget`): the Hub's request budget
        for the whole survey (driver and every actor, :class:`hubscan.hub.HubBudget` in one Ray actor); kinds
        not given are taken from the Hub's ``RateLimit-Policy`` headers.
    progress : bool
        Progress on the driver: a bar on a terminal, else a log line every ``progress_models``
        models or ``progress_seconds`` seconds (logger ``hubscan.progress``, level INFO).
    survey_id : str or None
        None → a new UTC-timestamped id.
    actor_start_timeout : float
        Seconds without any progress while no actor can be placed before the rest is failed.
    flush_models, flush_seconds : int, float
        An actor writes its buffered rows as data files (and the driver commits them) every
        ``flush_models`` models or when its oldest buffered model is ``flush_seconds`` old.
    compact : bool
        Compact and vacuum the tables at the end of the survey.
    retention_hours : float
        Vacuum keeps removed files this long (readers of older snapshots) and always keeps the
        table versions surveys recorded.
    progress_models, progress_seconds : int, float
        Interval of the progress log lines when the output is not a terminal.
    quiet : bool
        Ray's own INFO lines (``Started a local Ray instance``) off (``hubscan -q``).
    """

    source: str
    out: str
    filters: dict = dataclasses.field(default_factory=dict)
    limit: int | None = None
    options: AnalyzeOptions = dataclasses.field(default_factory=AnalyzeOptions)
    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float | None = None
    max_in_flight: int | None = None
    max_attempts: int = 3
    force: bool = False
    keep_esd: bool = True
    storage_options: dict = dataclasses.field(default_factory=dict)
    hub: dict = dataclasses.field(default_factory=dict)
    hub_budget: dict = dataclasses.field(default_factory=dict)
    progress: bool = True
    survey_id: str | None = None
    actor_start_timeout: float = 600.0
    flush_models: int = 100
    flush_seconds: float = 60.0
    compact: bool = True
    retention_hours: float = DEFAULT_RETENTION_HOURS
    progress_models: int = 100
    progress_seconds: float = 30.0
    quiet: bool = False


#: Seconds :func:`check_cluster` waits for a Ray cluster's port to accept a connection.
CLUSTER_PROBE_SECONDS = 5.0


def check_cluster(address: str, timeout: float = CLUSTER_PROBE_SECONDS) -> None:
    """Fail at once when nothing listens at a Ray cluster's address: a plain TCP connect to its host and
    port (the GCS, ``host:6379``, or a Ray Client server, ``ray://host:10001``), closed at once. ``ray.init``
    itself retries an address that does not answer for minutes (20 × a 5 s connect and a 30 s wait in its
    C++ core, a log line each, signals handled only between them). An address without a port (``auto``,
    ``ray://host``) is left to Ray.

    Raises
    ------
    hubscan.errors.ClusterUnreachableError
        Connection refused, the host not resolved, or no answer within ``timeout`` seconds.
    """
    parts = urllib.parse.urlsplit("//" + address.split("://", 1)[-1])
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number: Ray says what is wrong with it
        return
    if not host or port is None:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = f"no answer in {timeout:g} s" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ClusterUnreachableError(address, f"no Ray cluster answers there ({why}); start one (ray start --head) "
                                               "or leave out --address for a Ray of this machine") from None


#: Filters that choose which part of a source's listing a survey takes, not which models the listing holds.
LISTING_CUTS = ("limit", "sort")


def recorded_filters(config: SurveyConfig) -> dict:
    """The ``surveys`` row's ``filters``: the source filters and, for a listing cut at ``limit`` models,
    ``"limit"`` — a reader (and :meth:`Survey.mark_listing`) tells a partial listing from a complete one."""
    return {**config.filters, **({"limit": config.limit} if config.limit is not None else {})}


def listing_scope(filters) -> str:
    """The models a listing covers, as a comparable key: the filters (a dict, or the ``surveys`` row's JSON)
    without those that only cut or order it (:data:`LISTING_CUTS`: a sorted complete listing holds the same
    models as an unsorted one)."""
    filters = json.loads(filters or "{}") if not isinstance(filters, dict) else filters
    return json.dumps({k: v for k, v in filters.items() if k not in LISTING_CUTS}, default=str, sort_keys=True)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _family(meta: dict) -> str | None:
    return meta.get("family") or meta.get("model_type")  # sources put a family in the metadata when they know one


def model_row(ref: ModelRef, meta: dict, key: str, cfg_hash: str, survey_id: str, status: ModelStatus, reason: str,
              summary: dict | None = None, **extra) -> ModelRecord:
    """The ``models`` record of one model (:class:`hubscan.records.ModelRecord`).

    Raises
    ------
    KeyError
        ``summary`` or ``extra`` name a column the models table lacks.
    """
    if reason and ref.is_path:  # the model's path in the reason as its id (relative to the surveyed
        reason = reason.replace(os.path.abspath(ref.path), ref.id)  # root or the current folder): portable
    row = ModelRecord(model_key=key, source=ref.source, model_id=ref.id, revision=ref.revision,
                      config_hash=cfg_hash, repo_id=ref.repo_id, files=list(ref.files), status=status, reason=reason,
                      family=_family(meta), hubscan_version=__version__, survey_id=survey_id,
                      analyzed_at=_utcnow())
    for k in ("model_type", "architectures", "library_name", "pipeline_tag", "tags", "downloads", "likes",
              "num_parameters", "eval_results", "gated", "created_at", "last_modified", "files_not_read"):
        if k in meta:
            row[k] = meta[k]
    if summary:
        for k, v in summary.items():
            if k not in ("status", "reason"):
                row[k] = v
    row.update(extra)
    return row


def error_status(exc: HubscanError) -> ModelStatus:
    """The status a model gets for an error that stopped its analysis, by the error's type:
    ``skipped`` for a gated model or one that holds no weights, ``failed`` for anything else (a missing
    path, an unsafe or corrupt file, an unreachable source)."""
    if isinstance(exc, GatedModelError) or (isinstance(exc, NoWeightsError) and not isinstance(exc, PathNotFoundError)):
        return ModelStatus.SKIPPED
    return ModelStatus.FAILED


def _requests(client: HubClient) -> int:
    """HTTP requests the hub client has made so far (0 when it does not count them): resolving and
    listing calls, beside the weight reads the analysis summary counts."""
    counter = getattr(client, "total_requests", None)
    return int(counter()) if callable(counter) else 0


@dataclasses.dataclass
class Analyzed:
    """One model of :func:`analyze_batch`: its own analysis and, with a parent, its delta against it — each
    an :class:`~hubscan.analysis.AnalysisResult`, the error that stopped it, or None when not asked.

    Attributes
    ----------
    ref, meta, key
        The model's pinned reference, metadata and model key, as given.
    own, delta : AnalysisResult, Exception or None
    parent_bytes_read : int
        Bytes of the parent's files read during this model (the tensors no earlier model of the batch needed).
    seconds, retries, requests : float, int, int
        Wall time, hub retries and hub requests of this model's analyses (reads, resolving calls).
    """

    ref: ModelRef
    meta: dict
    key: str
    own: object = None
    delta: object = None
    parent_bytes_read: int = 0
    seconds: float = 0.0
    retries: int = 0
    requests: int = 0


def analyze_batch(models, *, client: HubClient, options: AnalyzeOptions, parent: ModelRef | None = None,
                  own: bool = True, claim=None):
    """Analyze models one after another; with ``parent``, each model's delta against it too — the parent
    opened once for the batch (:func:`hubscan.sources.open_shared`: its tensors read once and held until
    every model took them) and each model's files read once for both its analyses
    (:func:`hubscan.sources.open_model` ``own=True``, :func:`hubscan.analysis.analyze_together`).

    Parameters
    ----------
    models : sequence of (ModelRef, dict, str)
        Pinned reference, metadata and model key of each model.
    client : HubClient
    options : AnalyzeOptions
    parent : ModelRef, optional
        The models' common parent (pinned). Memory: up to its matched tensors until the batch's last model.
    own : bool
        Analyze the models themselves (False: their deltas alone).
    claim : callable, optional
        Content dedupe (without ``parent``): ``claim(sha256s, model_key)`` → the key of the model analyzed for
        the same weight files under the same settings, or None (this model analyzes them). Asked once the
        Hub named every weight file's sha256, before any tensor byte is read; a model whose content is
        claimed gets :class:`~hubscan.errors.SameContentError` as its ``own`` (``files_sha256`` on it).

    Yields
    ------
    Analyzed
        Per model, in order. A model's own problems never raise: they are its ``own`` / ``delta``.

    Raises
    ------
    hubscan.errors.HubUnreachableError
        The source's endpoint cannot be reached (not a problem of one model: the survey stops).
    """
    from hubscan.analysis import analyze, analyze_together
    from hubscan.sources import open_model, open_shared

    shared, parent_error = None, None
    if parent is not None:
        try:
            shared = open_shared(parent, client, readers=len(models))
        except HubUnreachableError:
            raise  # the source is gone, not this batch: the survey stops (Survey._source_lost)
        except HubscanError as exc:
            parent_error = HubscanError(f"parent {parent.id}", str(exc))
    try:
        for ref, meta, key in models:
            t0, retries0, requests0 = time.perf_counter(), client.total_retries(), _requests(client)
            before = shared.bytes_read if shared is not None else 0
            out = Analyzed(ref, meta, key, delta=parent_error)
            if shared is None and not own:  # nothing to analyze: the parent could not be opened
                yield out
                continue
            try:
                if shared is None:
                    client.content_check = _content_check(claim, ref, key) if claim is not None else None
                    try:
                        weights = open_model(ref, client).weights
                    finally:
                        client.content_check = None
                    out.own = analyze(weights, options, source=str(ref), ref=ref)
                elif own:
                    opened = open_model(ref, client, shared=shared, own=True)
                    out.own, out.delta = analyze_together(opened.own, opened.weights, options, source=str(ref), ref=ref)
                else:
                    opened = open_model(ref, client, shared=shared)
                    out.delta = analyze(opened.weights, dataclasses.replace(options, keep_evals=False),
                                        source=str(ref), ref=ref)
            except HubUnreachableError:
                raise  # the source is gone, not this model: the survey stops (Survey._source_lost)
            except Exception as exc:  # noqa: BLE001 - one model never stops the others
                if not isinstance(exc, HubscanError):
                    log.exception("%s: unexpected error", ref)
                out.own = exc if own else None
                out.delta = exc if parent is not None and parent_error is None else out.delta
            if isinstance(out.own, HubUnreachableError):  # met while reading its tensors
                raise out.own
            out.parent_bytes_read = (shared.bytes_read if shared is not None else 0) - before
            out.seconds, out.retries = time.perf_counter() - t0, client.total_retries() - retries0
            out.requests = _requests(client) - requests0
            yield out
    finally:
        if shared is not None:
            shared.close()


def _content_check(claim, ref: ModelRef, key: str):
    """The :attr:`~hubscan.hub.HubClient.content_check` of one model: stop its reading when ``claim`` names
    another model analyzed for the same files."""
    def check(shas, stats):
        owner = claim(shas, key) if shas else None
        if owner is not None and owner != key:
            exc = SameContentError(str(ref), owner)
            exc.files_sha256, exc.bytes_read = list(shas), int(stats.get("bytes_read", 0))
            raise exc
    return check


def content_digest(shas, cfg_hash: str) -> str:
    """The content of a model for dedupe: sha256 over its analysis config hash and its weight files' sha256s
    (sorted), hex."""
    import hashlib
    return hashlib.sha256("\n".join([cfg_hash, *sorted(shas)]).encode()).hexdigest()


class ContentIndex:
    """Content digest (:func:`content_digest`) → the model_key analyzed for it: one per survey (a Ray actor),
    seeded with the dataset's analyzed models, claimed first come first served."""

    def __init__(self, known: dict | None = None):
        self.owner = dict(known or {})

    def claim(self, digest: str, key: str) -> str | None:
        """The model analyzed for ``digest`` when another one claimed it before, else None (``key`` claims it)."""
        owner = self.owner.setdefault(digest, key)
        return None if owner == key else owner


def _failure(exc: Exception) -> tuple[ModelStatus, str]:
    """A model row's status and reason for the error that stopped its analysis."""
    if isinstance(exc, GatedModelError):
        return ModelStatus.SKIPPED, exc.reason
    if isinstance(exc, HubscanError):
        return error_status(exc), str(exc)
    return ModelStatus.FAILED, f"unexpected error: {one_line(exc, 300)}"


def analyze_models(models, *, parent: ModelRef | None = None, relations: dict | None = None, client: HubClient,
                   options: AnalyzeOptions, cfg_hash: str, survey_id: str, keep_esd: bool, attempts: int = 1,
                   claim=None):
    """Analyze models into their dataset rows (:func:`analyze_batch`), with ``parent`` each one's delta
    against it too, the parent's files read once for all of them.

    Parameters
    ----------
    models : sequence of (ModelRef, dict, str)
        Pinned reference, metadata and model key of each model.
    parent : ModelRef, optional
        The models' common parent (pinned).
    relations : dict, optional
        Model key → relation to the parent (``deltas.relation``).
    client : HubClient
    options : AnalyzeOptions
    cfg_hash, survey_id : str
        The rows' ``config_hash`` and ``survey_id``.
    keep_esd : bool
        Keep the eigenvalues (``esd`` table).
    attempts : int
        The rows' ``attempts``.
    claim : callable, optional
        Content dedupe (:func:`analyze_batch`).

    Yields
    ------
    dict
        Per model: ``copy_of`` (the model_key whose rows it gets: same content, not read; its ``row`` has no
        status and no tables then, :meth:`Survey.copy_rows` makes them), ``models`` (the model row's table;
        status success / incomplete / failed / skipped),
        ``layers`` and ``esd`` (Arrow tables of its rows, empty unless analyzed), ``row`` (the model record);
        with ``parent``, ``deltas`` (the pair's ``deltas`` table, None when the delta could not be analyzed)
        and ``delta_error`` (the one-line reason then, else None).
    """
    opts = dataclasses.replace(options, keep_evals=keep_esd)
    for a in analyze_batch(models, client=client, options=opts, parent=parent, claim=claim):
        layers = esd = deltas = None
        if isinstance(a.own, SameContentError):
            row = model_row(a.ref, a.meta, a.key, cfg_hash, survey_id, None, None, same_content_as=a.own.model_key,
                            files_sha256=a.own.files_sha256, requests=a.requests, seconds=a.seconds,
                            retries=a.retries, attempts=attempts, bytes_read=a.own.bytes_read)
            yield {"row": row, "copy_of": a.own.model_key, "deltas": None, "delta_error": None}
            continue
        if isinstance(a.own, Exception):
            row = model_row(a.ref, a.meta, a.key, cfg_hash, survey_id, *_failure(a.own))
        else:
            s = a.own.summary
            row = model_row(a.ref, a.meta, a.key, cfg_hash, survey_id, s["status"], s["reason"], s,
                            format=a.own.format, device=opts.device)
            layers, esd = a.own.rows, (a.own.esd_records() if keep_esd else None)
        delta_error = None
        if parent is not None:
            if isinstance(a.delta, Exception):
                delta_error = str(a.delta)
            else:
                deltas = pair_table(a.key, a.ref, parent, (relations or {}).get(a.key), survey_id, a.delta.rows)
        if row.get("requests") is None:  # the analysis summary counts its reads' requests when it can
            row["requests"] = a.requests
        row.update(seconds=a.seconds, retries=a.retries, attempts=attempts,
                   options=json.dumps(opts.to_dict(), default=str))
        yield {**model_tables(row, layers or (), esd), "row": row, "deltas": deltas, "delta_error": delta_error,
               "copy_of": None}


def pair_table(child_key: str, child: ModelRef, parent: ModelRef, relation: str | None, survey_id: str, rows):
    """The ``deltas`` table (pyarrow.Table) of one (child, parent) pair: :func:`hubscan.store.delta_table`
    with the identity of the two pinned refs; ``child_key`` is the child's ``model_key``.

    Raises
    ------
    hubscan.errors.SchemaMismatchError
        A row holds a column the table lacks.
    """
    return delta_table({"model_key": child_key, "source": child.source, "model_id": child.id,
                        "revision": child.revision}, parent.id, parent.revision, relation, survey_id, rows)


def _warm_up(options: AnalyzeOptions) -> None:
    """Pay the lazy imports (scipy.optimize / special / stats, pyarrow.parquet) and the first BLAS /
    LAPACK calls once, when the actor starts, instead of in its first model."""
    import pyarrow.parquet  # noqa: F401
    import torch
    from hubscan.analysis import analyze_entries
    from hubscan.weights.base import TensorEntry

    w = torch.from_numpy(__import__("numpy").random.default_rng(0).standard_t(3, (96, 64)).astype("float32"))
    entry = TensorEntry("warmup.weight", (96, 64), "float32", "<warm-up>", lambda: w)
    for _ in analyze_entries([entry], dataclasses.replace(options, randomize=False), prefetch=False):
        pass


#: Columns of a model row that travel back to the driver (progress and the survey's sums).
SUMMARY_KEYS = ("model_key", "model_id", "source", "status", "reason", "bytes_read", "requests", "seconds")


class RowBuffer:
    """Rows of analyzed models waiting to be written as data files (one file per table and
    partition per flush).

    Parameters
    ----------
    dataset : Dataset
    flush_models : int
        Flush when this many models are buffered.
    flush_seconds : float
        Flush when the oldest buffered model is this old.
    """

    def __init__(self, dataset: Dataset, flush_models: int, flush_seconds: float):
        self.dataset, self.flush_models, self.flush_seconds = dataset, flush_models, flush_seconds
        self.tables: dict[str, list] = {t: [] for t in WRITE_ORDER}
        self.rows: list[dict] = []
        self.since: float | None = None

    def add(self, tables: dict, row: dict) -> None:
        for t in WRITE_ORDER:
            if tables.get(t) is not None and tables[t].num_rows:
                self.tables[t].append(tables[t])
        self.rows.append({k: row.get(k) for k in SUMMARY_KEYS})
        self.since = self.since or time.monotonic()

    def due(self) -> bool:
        return bool(self.rows) and (len(self.rows) >= self.flush_models
                                    or time.monotonic() - self.since >= self.flush_seconds)

    def flush(self) -> dict | None:
        """Write the buffered rows as data files (uncommitted).

        Returns
        -------
        dict or None
            ``{"rows": [model summaries], "adds": {table: [AddAction]}}``; None when empty.
        """
        if not self.rows:
            return None
        import pyarrow as pa
        adds = {t: self.dataset.write_files(t, pa.concat_tables(parts)) if parts else []
                for t, parts in self.tables.items()}
        batch = {"rows": self.rows, "adds": adds}
        self.tables = {t: [] for t in WRITE_ORDER}
        self.rows, self.since = [], None
        return batch


def code_identity() -> str:
    """The hubscan this process imports: its version and a digest of its Python sources, e.g.
    ``0.1.0+3f9a0c1d2b4e`` (SHA-256 of every ``.py`` file under the package, with its relative path).

    A survey's actors must run the driver's code: rows of one config hash from two versions of the analysis
    would sit side by side in the dataset, indistinguishable. An editable install keeps its version number
    while its code changes, hence the digest."""
    import hashlib
    from pathlib import Path

    import hubscan

    root = Path(hubscan.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{hubscan.__version__}+{digest.hexdigest()[:12]}"


def check_code(driver: str | None) -> None:
    """Refuse to run an actor whose hubscan is not the driver's (:func:`code_identity`).

    Raises
    ------
    hubscan.errors.HubscanError
        One line naming both and where this worker's hubscan is.
    """
    if driver is None:
        return
    mine = code_identity()
    if mine != driver:
        import hubscan
        raise HubscanError(f"hubscan on {socket.gethostname()}",
                           f"is {mine} ({os.path.dirname(hubscan.__file__)}), the survey's driver runs {driver}: "
                           "install the same hubscan on every node (rows of two versions would mix in one dataset)")


class _Worker:
    """The analysis actor's body (wrapped by ``ray.remote`` in :meth:`Survey.start_pool`)."""

    def __init__(self, out: str, storage_options: dict, options: AnalyzeOptions, cfg_hash: str, survey_id: str,
                 hub: dict, keep_esd: bool, threads: int, flush_models: int, flush_seconds: float,
                 plugins: tuple = (), budget=None, content=None, code: str | None = None):
        check_code(code)  # before anything else: a worker with another hubscan analyzes nothing
        from hubscan.esd.eigen import choose_eigh_backend, cpu_linalg, resolve_device, set_cpu_threads
        from hubscan.registry import load_plugins
        load_plugins(plugins)  # sources, readers, metrics … registered outside hubscan, here too
        if threads:
            set_cpu_threads(threads)
        self.buffer = RowBuffer(Dataset(out, **storage_options), flush_models, flush_seconds)
        self.options, self.cfg_hash, self.survey_id, self.keep_esd = options, cfg_hash, survey_id, keep_esd
        self.client = HubClient(**hub)
        # the actor is an entry point: its process, its HTTP client, the survey's budget
        install_http_client(self.client.timeout, budget=budget_gate(self.client.endpoint, budget))
        self.content = content  # the survey's ContentIndex actor (None: no content dedupe)
        self.eigh_backend = None
        if resolve_device(options.device).type == "cuda":  # the faster eigh backend on this GPU, measured
            self.eigh_backend = choose_eigh_backend(options.device)
            log.warning("analysis actor %d: eigh backend %s (eigvalsh of 8 × 256² float64: %s)", os.getpid(),
                        self.eigh_backend["backend"], ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in
                                                                 self.eigh_backend["seconds"].items()))
        _warm_up(options)  # (on CPU with one thread it also measures which library's linear algebra is faster)
        log.info("analysis actor %d: CPU linear algebra %s", os.getpid(), cpu_linalg())

    def pid(self) -> int:
        return os.getpid()

    def claim(self, shas, key: str) -> str | None:
        """:meth:`ContentIndex.claim` of the survey's index for these weight files under this config."""
        import ray
        return ray.get(self.content.claim.remote(content_digest(shas, self.cfg_hash), key))

    def run(self, ref: ModelRef, meta: dict, key: str, attempts: int, parent: ModelRef | None = None,
            more: tuple = (), relations: dict | None = None, dedupe: bool = True) -> dict:
        """Analyze one model (and ``more``, with ``parent`` their deltas: :func:`analyze_models`); returns
        their summaries and, when the buffer is due, the flushed batch. A model whose content another model
        was analyzed for is not buffered: its summary carries its row as ``copy`` (the driver copies the rows)."""
        rows = []
        claim = self.claim if dedupe and self.content is not None and parent is None else None
        for out in analyze_models([(ref, meta, key), *more], parent=parent, relations=relations, client=self.client,
                                  options=self.options, cfg_hash=self.cfg_hash, survey_id=self.survey_id,
                                  keep_esd=self.keep_esd, attempts=attempts, claim=claim):
            if out["copy_of"] is not None:
                rows.append({**{k: out["row"].get(k) for k in SUMMARY_KEYS}, "delta_error": None,
                             "copy": out["row"].to_row()})
                continue
            self.buffer.add(out, out["row"])
            rows.append({**{k: out["row"].get(k) for k in SUMMARY_KEYS}, "delta_error": out["delta_error"]})
        return {"rows": rows, "batch": self.buffer.flush() if self.buffer.due() else None}

    def flush(self) -> dict:
        return {"rows": [], "batch": self.buffer.flush()}


def _cluster_resources(config: SurveyConfig):
    import ray
    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0))
    cpus = float(total.get("CPU", 1))
    gpa = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    actors = config.actors or (int(gpus // gpa) if gpa else max(1, int(cpus // 2)))
    cpa = config.cpus_per_actor if config.cpus_per_actor is not None else max(1.0, (cpus // max(1, actors)))
    return max(1, actors), gpa, cpa


#: Actors that may fail to start in a row, none running, before the survey stops (:meth:`Survey._on_started`).
START_FAILURES_LIMIT = 3

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_PREFIX = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?:\([^)]*\))?: ")


def actor_start_error(exc: BaseException) -> str:
    """Why an actor failed to start, on one line: the last line of Ray's report (it ends with the error raised
    in the worker: ``ImportError: cannot import …``), without its exception class name or colour codes.

    Parameters
    ----------
    exc : ray.exceptions.RayError
        What ``ray.get`` of the actor's first call raised.

    Returns
    -------
    str
        At most 300 characters.
    """
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    last = lines[-1] if lines else "unknown reason"
    return one_line(_EXC_PREFIX.sub("", last), 300)


def shadowing_hint(cwd: str | None = None) -> str:
    """A hint when the current folder holds a ``hubscan`` other than the package running (``""`` otherwise).

    Ray puts the driver's current folder first on its workers' import path, so a ``hubscan`` folder or module
    there is what the survey's actors import — a folder without ``__init__.py`` even hides an editable
    install (``pip install -e``), which Python finds after the path. Their start then fails with an
    ImportError (Ray's ``_py_driver_sys_path``; not an issue where Ray uploads a ``working_dir``)."""
    import hubscan

    cwd = os.path.abspath(cwd or os.curdir)
    ours = os.path.realpath(os.path.dirname(hubscan.__file__))
    for name in ("hubscan", "hubscan.py"):
        there = os.path.join(cwd, name)
        if os.path.exists(there) and os.path.realpath(there) != ours:
            return (f" (the current folder holds a {name!r} that Ray's workers import instead of the hubscan "
                    "this survey runs, as Ray puts the driver's folder first on their path: run hubscan from "
                    "another folder)")
    return ""


def service_actor(cls):
    """``ray.remote(cls)`` with the options of a survey's shared services (the Hub request budget, the
    content index): no CPU, one call at a time, and restarted by Ray when it dies (its process killed, its
    node lost — a spot node), the calls in flight retried, instead of failing every model's requests after
    it. A restarted service starts from its first arguments: the budget from the driver's planning state
    (it learns the Hub's windows again from the rate-limit headers it observes), the content index from the
    dataset's contents (a content claimed since may be analyzed twice, never wrongly)."""
    import ray
    return ray.remote(cls).options(num_cpus=0, max_concurrency=1, max_restarts=-1, max_task_retries=-1)


def budget_gate(endpoint: str, budget) -> BudgetGate | None:
    """This process's gate to the survey's :class:`~hubscan.hub.HubBudget` held by a Ray actor (``budget``:
    its handle; None → no budget): each request waits for the actor's answer.

    A request made once that actor is gone raises :class:`~hubscan.errors.HubscanError` with one line saying
    so (the request's error then reads ``URL: the survey's Hub request budget: …``), not Ray's text."""
    if budget is None:
        return None
    import ray

    def take(kind: str, now: float) -> float:
        try:
            return ray.get(budget.take.remote(kind, now))
        except ray.exceptions.RayActorError:
            raise HubscanError("the survey's Hub request budget",
                               "its Ray actor is gone (the survey's actors stopped, or it died)") from None

    return BudgetGate(endpoint, take, lambda *seen: budget.observe.remote(*seen))


@dataclasses.dataclass
class Task:
    """One actor call: a model, or (a model-tree survey, :func:`hubscan.census.family_tasks`) several
    children of one ``parent`` whose deltas are analyzed with them, the parent read once
    (:func:`analyze_models`).

    Attributes
    ----------
    ref, meta, key
        The (first) model's pinned reference, metadata and model key.
    attempts : int
        This task's attempt (actor deaths retry it).
    parent : ModelRef or None
        The children's common parent.
    more : tuple of (ModelRef, dict, str)
        Further children of the same parent.
    relations : dict or None
        Model key → relation to the parent.
    dedupe : bool
        The model may take the rows of a model analyzed for the same content (False once that one failed).
    """

    ref: ModelRef
    meta: dict
    key: str
    attempts: int = 1
    parent: ModelRef | None = None
    more: tuple = ()  # further (ref, meta, key) of the same parent
    relations: dict | None = None  # model key -> relation to the parent
    dedupe: bool = True  # may take the rows of a model with the same content (False: analyze it whatever)

    def args(self):
        return self.ref, self.meta, self.key, self.attempts, self.parent, self.more, self.relations, self.dedupe

    @property
    def models(self) -> list:
        return [(self.ref, self.meta, self.key), *self.more]

    @property
    def keys(self) -> set:
        return {k for _, _, k in self.models}


class Survey:
    """One survey run: the steps of the module docstring as methods (see :func:`survey`).

    Parameters
    ----------
    config : SurveyConfig
    """

    def __init__(self, config: SurveyConfig):
        self.config = config
        self.started = _utcnow()
        self.t0 = time.perf_counter()
        self.survey_id = config.survey_id or self.started.strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
        self.client = HubClient(**config.hub)
        #: the Hub's request budget: the driver's own until Ray starts, then one actor's (:meth:`start_pool`)
        self.budget = HubBudget(config.hub_budget)
        self.budget_actor = None
        #: model_key → status of every committed model (the dataset's before the survey, then each commit)
        self.status_of: dict = {}
        #: (task, models row) of models given another model's rows (same content), waiting for its commit
        self.copies: list = []
        # the survey driver is an entry point (requests counted per model, the budget taken)
        install_http_client(self.client.timeout, budget=BudgetGate.local(self.client.endpoint, self.budget))
        self.cfg_hash = config_hash(config.options)
        self.options = config.options
        self.dataset: Dataset | None = None
        self.work: deque[Task] = deque()
        self.retry: deque[Task] = deque()  # tasks to run again (actor deaths, unreturned flushes)
        self.counts = dict.fromkeys(ModelStatus, 0)
        self.stats = {"num_models": 0, "num_already_done": 0, "bytes_read": 0, "requests": 0}
        self.replace: dict[str, set] = {t: set() for t in WRITE_ORDER}
        self.fresh: dict[str, set] = {t: set() for t in WRITE_ORDER}  # files this survey committed
        self.committed: set[str] = set()  # model_keys this survey committed (a second commit replaces the first)
        self.driver_rows = None  # RowBuffer of rows the driver writes itself (unresolvable models …)
        self.n_actors, self.interrupted, self.we_started_ray = 0, False, False
        self.analyzed = 0
        #: actors that failed to start since one last started (:meth:`_on_started`)
        self.start_failures = 0
        #: models analyzed so far by status, and their bytes (progress: committed counts lag a flush)
        self.seen = {**dict.fromkeys(ModelStatus, 0), "bytes_read": 0}
        self.progress = None
        #: (child, parent, reason) of tree edges whose delta was not analyzed (model-tree surveys)
        self.failed_edges: list = []
        #: the source's endpoint became unreachable mid-survey: (error, models left for the next run)
        self.source_lost: tuple[HubUnreachableError, int] | None = None
        #: the dataset took a write error (or the lease was lost): nothing more is written
        self.write_error: HubscanError | None = None
        #: what the survey holds until it ends: the dataset's lease (:meth:`hold`)
        self.holds = contextlib.ExitStack()

    # -- 1. plan: before Ray -------------------------------------------------------------------
    def enumerate(self) -> list:
        """The (ModelRef, metadata) pairs to survey: the configured source, enumerated with its filters
        (a subclass may give them otherwise, e.g. :class:`hubscan.census.TreeSurvey` a model tree's nodes)."""
        from hubscan.sources import enumerate_models
        config = self.config
        return list(enumerate_models(config.source, client=self.client, limit=config.limit, **config.filters))

    def plan(self) -> None:
        """Enumerate, pin and drop what the dataset holds; rows for models that cannot be pinned.

        Raises
        ------
        hubscan.errors.HubscanError
            The source cannot be enumerated, or holds no model (nothing is written then); or the
            dataset cannot be held (:meth:`hold`).
        """
        from hubscan.sources import resolve
        config = self.config
        try:
            items = self.enumerate()
        except HubUnreachableError as exc:  # listing the models: the source is named, not the call
            raise HubUnreachableError(config.source, f"{exc.reason}: the survey stopped before writing any model "
                                                     "(a later run is unaffected)") from None
        if not items:
            raise NoWeightsError(config.source, "no models found")
        self.hold()
        self.driver_rows = RowBuffer(self.dataset, 10 ** 9, float("inf"))
        done = self.dataset.done()
        self.status_of = dict(done)
        without_esd = self.without_esd() if config.keep_esd and not config.force else set()
        seen, listed = set(), {}
        for ref, meta in items:
            err = None
            if not (ref.revision and (ref.files or ref.is_path)):
                try:
                    pinned, more = resolve(ref, self.client)
                    ref, meta = pinned, {**meta, **more}
                except HubUnreachableError as exc:  # not the model's problem: stop before any row is written
                    raise HubUnreachableError(config.source, f"{exc.reason}: the survey stopped before writing "
                                                             "any model (a later run is unaffected)") from None
                except HubscanError as exc:
                    err = exc
            key = model_key(ref.source, ref.id, ref.revision, self.cfg_hash)
            if key in seen:
                continue
            seen.add(key)
            listed[key] = meta.get("gated")
            self.stats["num_models"] += 1
            if err is not None:
                self._driver_row(Task(ref, meta, key, 0), error_status(err), str(err))
            elif not config.force and done.get(key) not in (None, ModelStatus.FAILED) and key not in without_esd:
                self.stats["num_already_done"] += 1
            else:
                self.work.append(Task(ref, meta, key))
        if redo_esd := without_esd & {t.key for t in self.work}:
            log.info("%d model(s) analyzed before without their eigenvalues (--no-esd) are analyzed again to write "
                     "them", len(redo_esd))
        self.mark_listing(listed, {t.key for t in self.work})
        # models whose rows will be replaced (force, failed before, or a driver killed between commits)
        keys = {t.key for t in self.work} | {r["model_key"] for r in self.driver_rows.rows}
        if keys:
            self.replace["models"] = keys & set(done)
            for table in ("layers", "esd", "deltas"):
                self.replace[table] = keys & self.dataset.keys(table)

    def without_esd(self) -> set:
        """The model_keys the dataset holds as analyzed (success, incomplete) by a survey that did not keep their
        eigenvalues (``--no-esd``: its ``options`` say ``keep_evals`` false). A survey that keeps them analyzes
        these again (the analysis settings are the same, so the model_key is), else its ``esd`` table would lack
        them for good."""
        t = self.dataset.read("models", columns=["model_key", "status", "options"])
        out = set()
        for key, status, options in zip(*(t.column(c).to_pylist() for c in ("model_key", "status", "options"))):
            if status in (ModelStatus.SUCCESS, ModelStatus.INCOMPLETE) and options:
                try:
                    if json.loads(options).get("keep_evals") is False:
                        out.add(key)
                except (ValueError, AttributeError):  # not JSON: nothing known
                    pass
        return out

    def mark_listing(self, listed: dict, redo: set) -> None:
        """Periodic surveys: what this survey's listing says about the models the dataset holds, in one commit
        (none when nothing changed).

        - A row of a model a complete listing (no ``limit``) no longer holds at its revision (deleted, made
          private, or replaced by a new revision), written by a survey of the same source and scope
          (:func:`listing_scope`), gets ``last_seen`` = the start of the last survey that listed it: the
          later of the last complete survey of that scope (it listed every model then present: one it missed
          it marked) and the survey that wrote the row. A survey cut by ``limit`` listed only part of the
          scope: it counts for the rows it wrote, never for the others, and marks nothing itself.
        - A listed model whose ``gated`` changed gets the listing's value; one marked before and listed again
          gets ``last_seen`` null.

        ``listed``: model_key → the listing's ``gated`` (None: unknown); ``redo``: keys analyzed again (their
        rows are replaced).
        """
        config = self.config
        cols = ["model_key", "survey_id", "gated", "last_seen"]
        rows = self.dataset.read("models", columns=cols)
        if not rows.num_rows:
            return
        mine = listing_scope(config.filters)
        scope = {r["survey_id"]: r for r in self.dataset.read("surveys", columns=["survey_id", "source", "filters",
                                                                                   "started_at"]).to_pylist()
                 if r["source"] == config.source and listing_scope(r["filters"]) == mine}
        complete = max((r["started_at"] for r in scope.values() if "limit" not in json.loads(r["filters"] or "{}")),
                       default=None)
        updates = {}
        for r in rows.to_pylist():
            key = r["model_key"]
            if key in redo:
                continue
            if key in listed:
                change = {"gated": listed[key]} if listed[key] is not None and listed[key] != r["gated"] else {}
                if r.get("last_seen") is not None:
                    change["last_seen"] = None
                if change:
                    updates[key] = change
            elif config.limit is None and r["survey_id"] in scope and r.get("last_seen") is None:
                wrote = scope[r["survey_id"]]["started_at"]
                updates[key] = {"last_seen": wrote if complete is None else max(complete, wrote)}
        self.dataset.update_rows("models", updates, survey_id=self.survey_id, operation="listing")

    def _driver_row(self, task: Task, status: ModelStatus, reason: str) -> None:
        for ref, meta, key in task.models:
            row = model_row(ref, meta, key, self.cfg_hash, self.survey_id, status, reason, attempts=task.attempts)
            self.driver_rows.add({"models": rows_to_table([row], "models")}, row)
            self._see({"status": status})
            if task.parent is not None:
                self.failed_edges.append((ref.id, task.parent.id, f"the child {status}: {reason}"))

    # -- 2. Ray and the pool -------------------------------------------------------------------
    def init_ray(self) -> None:
        import ray
        if not ray.is_initialized():
            # ray.init replaces the SIGTERM handler twice: in Python (sys.exit) and, in its core worker, with
            # absl's failure handler (a "*** SIGTERM received" dump, exit 134, no interrupted row, the lease
            # left held); the caller's handler (the CLI's: SIGTERM stops as Ctrl-C does) is put back after,
            # whatever ray.init did. A SIGTERM while ray.init runs (connecting) is its handler's SystemExit(15):
            # handed to the caller's handler (the CLI: exit 143 and an interrupted row, not exit 15 and a row
            # that says the survey ran)
            main = threading.current_thread() is threading.main_thread()
            sigterm = signal.getsignal(signal.SIGTERM) if main else None
            address = self.ray_address()
            try:
                if address:
                    ray.init(address=address, log_to_driver=False,
                             logging_level=logging.WARNING if self.config.quiet else logging.INFO)
                else:
                    self.we_started_ray = True  # before: an interrupted start is shut down too (its processes)
                    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING if self.config.quiet else logging.INFO)
            except ConnectionError as exc:  # Ray's retries spent: something answers there, not a Ray cluster
                if not address:
                    raise
                raise ClusterUnreachableError(address, " ".join(str(exc).split())) from None
            except SystemExit as exc:
                if exc.code != signal.SIGTERM or not callable(sigterm):
                    raise
                sigterm(signal.SIGTERM, None)  # the CLI's raises KeyboardInterrupt
                raise
            finally:
                if sigterm is not None:
                    signal.signal(signal.SIGTERM, sigterm)

    def ray_address(self) -> str | None:
        """The Ray cluster to join: ``address``, else ``RAY_ADDRESS`` (set inside ``ray job submit``); None
        starts a Ray of this machine."""
        return self.config.address or os.environ.get("RAY_ADDRESS") or None

    def check_fits(self, cpa: float, gpa: float) -> None:
        """Refuse actors no node can hold: Ray would keep them pending forever, the survey silent. On a
        Ray this survey started (one machine, no autoscaler) that is an error; on a cluster it is logged
        (an autoscaler may add such a node) and the survey waits.

        Raises
        ------
        hubscan.errors.HubscanError
            Embedded Ray and no node with ``cpa`` CPUs and ``gpa`` GPUs.
        """
        import ray
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= cpa and r.get("GPU", 0) >= gpa for r in nodes):
            return
        have = ", ".join(sorted({f"{r.get('CPU', 0):g} CPU" + (f" {r.get('GPU', 0):g} GPU" if gpa else "")
                                 for r in nodes})) or "none"
        need = f"{cpa:g} CPU" + (f" and {gpa:g} GPU" if gpa else "")
        what = (f"an actor needs {need} and no Ray node has that (nodes: {have}); lower --cpus-per-actor"
                + (" / --gpus-per-actor" if gpa else ""))
        if self.we_started_ray:
            raise HubscanError(self.config.source, what)
        log.warning("%s: waiting for the cluster to add such a node", what)

    def start_pool(self) -> None:
        import ray
        from hubscan.registry import plugin_modules
        config = self.config
        self.n_actors, gpa, cpa = _cluster_resources(config)
        self.check_fits(cpa, gpa)
        self.options = dataclasses.replace(config.options, device="cuda" if gpa else "cpu")
        # one budget for the cluster: the driver's (what planning spent) moves into an actor all processes share
        # (and back into the driver when the pool stops, :meth:`_stop_pool`)
        self.budget_actor = service_actor(HubBudget).remote(self.budget.limits, self.budget.slack,
                                                            self.budget.snapshot())
        install_http_client(self.client.timeout, budget=budget_gate(self.client.endpoint, self.budget_actor))
        # content dedupe: the dataset's analyzed contents, then what this survey's actors claim
        self.content_actor = service_actor(ContentIndex).remote(self.known_contents())
        worker = ray.remote(_Worker).options(num_cpus=cpa, num_gpus=gpa, max_restarts=0, max_task_retries=0)
        code = code_identity()  # each actor checks that it runs this code (check_code)
        self._new_actor = lambda: worker.remote(config.out, config.storage_options, self.options, self.cfg_hash,
                                                self.survey_id, config.hub, config.keep_esd, int(cpa),
                                                config.flush_models, config.flush_seconds, tuple(plugin_modules()),
                                                self.budget_actor, self.content_actor, code)
        self.actors: dict = {}     # ready actor -> tasks queued on it
        self.starting: dict = {}   # readiness future -> actor
        self.inflight: dict = {}   # future -> (actor, Task or None for a flush)
        self.pending: dict = {}    # actor -> [(Task, analyzed at, summary rows)] analyzed, buffered, not committed
        for _ in range(self.n_actors):
            self._start_actor()

    def _start_actor(self) -> None:
        actor = self._new_actor()
        self.starting[actor.pid.remote()] = actor

    # -- 3. dispatch ---------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Feed the actors until every model is committed or failed."""
        import ray
        config = self.config
        max_in_flight = config.max_in_flight or 2 * self.n_actors
        per_actor = max(1, -(-max_in_flight // self.n_actors))  # tasks queued on one actor
        last_progress = time.monotonic()
        while True:
            while len(self.inflight) < max_in_flight and self.actors and (self.retry or self.work):
                actor = min(self.actors, key=self.actors.get)
                if self.actors[actor] >= per_actor:
                    break
                task = self.retry.popleft() if self.retry else self.work.popleft()
                self.actors[actor] += 1
                self.inflight[actor.run.remote(*task.args())] = (actor, task)
            self._flush_idle(final=not (self.retry or self.work))
            idle = not self.inflight and not (self.retry or self.work) and not any(self.pending.values())
            self.copy_rows(final=idle)
            if idle and not (self.retry or self.copies):
                return
            if not self.inflight and not self.starting and not self.actors:
                self._start_actor()
            ready, _ = ray.wait(list(self.inflight) + list(self.starting), num_returns=1,
                                timeout=min(30.0, max(1.0, config.flush_seconds),
                                            self.progress.due_in() if self.progress is not None else math.inf))
            if not ready:
                self._update_progress(None)  # a long model: the progress line still comes every progress_seconds
                if not self.inflight and not self.actors and time.monotonic() - last_progress > config.actor_start_timeout:
                    for task in [*self.retry, *self.work]:  # no actor can be placed: fail the rest, not hang
                        self._driver_row(task, ModelStatus.FAILED, "no analysis actor could be started "
                                         "(cluster has no free resources)")
                    self.retry.clear()
                    self.work.clear()
                    self.commit(self.driver_rows.flush())
                    return
                continue
            last_progress = time.monotonic()
            fut = ready[0]
            if fut in self.starting:
                self._on_started(fut)
            else:
                self._on_result(fut)

    def _flush_idle(self, final: bool) -> None:
        """Ask idle actors for their buffered rows (when old, or when no work is left)."""
        now = time.monotonic()
        for actor, items in self.pending.items():
            if not items or actor not in self.actors or self.actors[actor] > 0:
                continue
            if final or now - items[0][1] >= self.config.flush_seconds:
                self.actors[actor] += 1
                self.inflight[actor.flush.remote()] = (actor, None)

    def _on_started(self, fut) -> None:
        """An actor's readiness: it joins the pool, or (it failed to start) another is started — unless none
        runs and :data:`START_FAILURES_LIMIT` (or one per actor, if more) failed in a row: a worker that cannot
        start (hubscan or a dependency not importable there) would otherwise be replaced for ever, the survey
        silent.

        Raises
        ------
        hubscan.errors.HubscanError
            No actor runs and that many failed to start, with the last one's reason.
        """
        import ray
        actor = self.starting.pop(fut)
        try:
            ray.get(fut)
            self.actors[actor] = 0
            self.pending[actor] = []
            self.start_failures = 0
            self.stats.setdefault("startup_seconds", time.perf_counter() - self.t0)
        except ray.exceptions.RayError as exc:
            self.start_failures += 1
            reason = actor_start_error(exc)
            log.warning("analysis actor failed to start: %s", reason)
            if not self.actors and self.start_failures >= max(START_FAILURES_LIMIT, self.n_actors):
                raise HubscanError("analysis actors", f"{self.start_failures} failed to start and none runs: "
                                                      f"{reason}{shadowing_hint()}") from None
            self._start_actor()

    def _on_result(self, fut) -> None:
        import ray
        actor, task = self.inflight.pop(fut)
        try:
            out = ray.get(fut)
        except ray.exceptions.RayActorError as exc:  # actor died: OOM, killed, node lost
            self._on_actor_death(actor, task, exc)
            return
        except ray.exceptions.RayTaskError as exc:  # a bug, not the model's problem: record and go on
            if actor in self.actors:
                self.actors[actor] -= 1
            cause = getattr(exc, "cause", None)
            if isinstance(cause, DatasetWriteError):  # an actor cannot write data files: stop now
                raise cause from None
            if isinstance(cause, HubUnreachableError):
                self._source_lost(task, cause)
                return
            if task is not None:
                reason = one_line(getattr(exc, "cause", None) or exc, 300)
                self._driver_row(task, ModelStatus.FAILED, reason)
            return
        if actor in self.actors:
            self.actors[actor] -= 1
        copies = [r for r in out["rows"] if r.get("copy")]
        self.copies += [(task, r["copy"]) for r in copies]
        if task is not None and len(copies) < len(out["rows"]):
            self.pending.setdefault(actor, []).append((task, time.monotonic(), out["rows"]))
            for row in out["rows"]:
                self._see(row)
                if task.parent is not None and row.get("delta_error"):
                    self.failed_edges.append((row["model_id"], task.parent.id, row["delta_error"]))
                self._update_progress(row)
        with deferred_interrupts():  # what is committed leaves `pending` before a Ctrl-C takes effect
            committed = set()
            if out["batch"] is not None:
                committed = {r["model_key"] for r in out["batch"]["rows"]}
                self.commit(out["batch"], self.driver_rows.flush())
            left = [item for item in self.pending.get(actor, []) if not item[0].keys <= committed]
            if task is None and left:  # a flush that did not return every buffered model: redo them
                self._redo(left)
                left = []
            self.pending[actor] = left

    def known_contents(self) -> dict:
        """Content digest → model_key of the dataset's models analyzed under this config (success or
        incomplete, not themselves copies) whose weight files' sha256s are known."""
        import pyarrow.compute as pc
        t = self.dataset.read("models", columns=["model_key", "status", "config_hash", "files_sha256",
                                                 "same_content_as"])
        if "files_sha256" not in t.column_names or not t.num_rows:
            return {}
        out = {}
        for r in t.filter(pc.equal(t.column("config_hash"), self.cfg_hash)).to_pylist():
            if r["files_sha256"] and r.get("same_content_as") is None and r["status"] in (ModelStatus.SUCCESS,
                                                                                          ModelStatus.INCOMPLETE):
                out.setdefault(content_digest(r["files_sha256"], self.cfg_hash), r["model_key"])
        return out

    def copy_rows(self, final: bool = False) -> None:
        """Give models of the same content as a committed model (:attr:`copies`) that model's rows — its
        ``layers`` and ``esd`` rows and its ``models`` analysis columns under the copy's own identity, listing
        metadata and request counts, ``same_content_as`` naming it — and commit them. A copy whose model failed
        or was skipped (or, ``final``, was never committed) is analyzed itself instead."""
        import pyarrow.dataset as pds
        ready, waiting = [], []
        for task, row in self.copies:
            status = self.status_of.get(row["same_content_as"])
            if status in (ModelStatus.SUCCESS, ModelStatus.INCOMPLETE):
                ready.append(row)
            elif status is not None or final:
                self.retry.append(dataclasses.replace(task, dedupe=False))
            else:
                waiting.append((task, row))
        self.copies = waiting
        if not ready:
            return
        owners = sorted({r["same_content_as"] for r in ready})
        tables = {t: self.dataset.read(t, filter=pds.field("model_key").isin(owners)).to_pylist()
                  for t in ("models", "layers", "esd")}
        by_owner: dict = {t: {} for t in tables}
        for t, rows in tables.items():
            for r in rows:
                by_owner[t].setdefault(r["model_key"], []).append(r)
        ident = {"model_key", "source", "model_id", "revision", "survey_id", "last_seen"}
        for row in ready:
            owner = by_owner["models"][row["same_content_as"]][0]
            row = {**{k: v for k, v in owner.items() if k not in ident}, **{k: v for k, v in row.items() if v is not None}}
            layers, esd = ([{k: v for k, v in r.items() if k not in ident} for r in by_owner[t].get(row["same_content_as"], [])]
                           for t in ("layers", "esd"))
            self.driver_rows.add(model_tables(row, layers, esd if self.config.keep_esd else None), row)
            self._see(row)
            self._update_progress(row)
        self.commit(self.driver_rows.flush())

    # -- 4. retries ----------------------------------------------------------------------------
    def _redo(self, items: list) -> None:
        """Queue analyzed but uncommitted tasks again, their models no longer counted as analyzed."""
        for t, _, rows in items:
            self.retry.append(t)
            for row in rows:
                self._see(row, -1)

    def _source_lost(self, task: Task | None, exc: HubUnreachableError) -> None:
        """The source's endpoint cannot be reached any more: dispatch nothing more; the models not yet
        analyzed (``task``'s included) are left for the next run, not written as failed; the models
        analyzed so far are still flushed and committed."""
        left = len(task.models) if task is not None else 0
        left += sum(len(t.models) for t in (*self.retry, *self.work))
        if self.source_lost is None:
            log.warning("%s: stopping the survey: %s", self.config.source, exc.reason)
        self.source_lost = (exc, left + (self.source_lost[1] if self.source_lost else 0))
        self.retry.clear()
        self.work.clear()

    def _see(self, row: dict, sign: int = 1) -> None:
        """Count (``sign`` 1) or uncount (−1) one model as analyzed, by status and bytes (progress)."""
        self.analyzed += sign
        self.seen[row.get("status") if row.get("status") in self.seen else ModelStatus.FAILED] += sign
        self.seen["bytes_read"] += sign * int(row.get("bytes_read") or 0)

    def _on_actor_death(self, actor, task: Task | None, exc) -> None:
        config = self.config
        if self.actors.pop(actor, None) is not None:
            self._start_actor()  # replace it once, however many of its tasks fail
        self._redo(self.pending.pop(actor, []))  # analyzed but never written: same attempt count
        if task is None:
            return
        log.warning("%s: analysis actor died (attempt %d/%d): %s", task.ref, task.attempts, config.max_attempts,
                    one_line(exc, 200))
        if task.attempts < config.max_attempts:
            self.retry.append(dataclasses.replace(task, attempts=task.attempts + 1))
        else:
            self._driver_row(task, ModelStatus.FAILED, f"analysis actor died {task.attempts} times "
                                             "(out of memory, killed or node lost)")

    # -- 5. commit -----------------------------------------------------------------------------
    def commit(self, *batches) -> None:
        """Commit flushed batches: ``esd`` and ``layers`` first, then ``models`` (the done-set);
        models the dataset already held are replaced in the same transactions. A Ctrl-C / SIGTERM that
        arrives meanwhile takes effect once the commit and its counts are done (:func:`deferred_interrupts`),
        so the ``surveys`` row counts exactly the models committed."""
        batches = [b for b in batches if b]
        if not batches:
            return
        with deferred_interrupts():
            self._commit(batches)

    def _commit(self, batches: list) -> None:
        rows = [r for b in batches for r in b["rows"]]
        keys = {r["model_key"] for r in rows}
        # a model whose rows this survey committed already (a task redone after its batch was committed): its
        # new rows replace those in every table — a model's rows come from one commit, never two
        again = keys & self.committed
        if again:
            log.warning("%d model(s) committed a second time in this survey: their first rows are replaced (%s)",
                        len(again), ", ".join(sorted(r["model_id"] for r in rows if r["model_key"] in again)[:5]))
        for table in WRITE_ORDER:
            adds = [a for b in batches for a in b["adds"].get(table, [])]
            replace = keys & (self.replace[table] | again)
            self.dataset.commit(table, adds, replace=("model_key", replace) if replace else None,
                                survey_id=self.survey_id, fresh=set() if again else self.fresh[table])
            self.replace[table] -= replace
            if self.replace[table]:  # still models to replace: their old rows are not in our own files
                self.fresh[table].update(a.path for a in adds)
        self.committed |= keys
        for r in rows:
            if r["model_key"] in again:  # counted at its first commit: counted once, with its status now
                self.counts[self.status_of[r["model_key"]]] -= 1
            self.status_of[r["model_key"]] = r["status"]
            self.counts[r["status"]] = self.counts.get(r["status"], 0) + 1
            self.stats["bytes_read"] += int(r.get("bytes_read") or 0)
            self.stats["requests"] += int(r.get("requests") or 0)

    # -- 6. summary ----------------------------------------------------------------------------
    def summary(self) -> dict:
        """Compact / vacuum (unless interrupted), then write and return the ``surveys`` row."""
        config = self.config
        if self.dataset is None or self.write_error is not None:
            return {}
        if config.compact and not self.interrupted and sum(self.counts.values()):
            self.dataset.compact(WRITE_ORDER, retention_hours=config.retention_hours, survey_id=self.survey_id)
        versions = {t: v for t in TABLES if t != "surveys"
                    if (v := self.dataset.version(t)) is not None}
        row = {"survey_id": self.survey_id, "started_at": self.started, "finished_at": _utcnow(),
               "source": config.source, "filters": json.dumps(recorded_filters(config), default=str),
               "config_hash": self.cfg_hash, "options": json.dumps(self.options.to_dict(), default=str),
               **{f"num_{s}": n for s, n in self.counts.items()},
               "seconds": time.perf_counter() - self.t0, "actors": self.n_actors, "interrupted": self.interrupted,
               "hubscan_version": __version__, "table_versions": json.dumps(versions), **self.stats}
        self.dataset.write("surveys", rows_to_table([row], "surveys"), survey_id=self.survey_id)
        return row

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict:
        """plan → (init Ray → pool → dispatch → commit) → summary; see :func:`survey`."""
        with contextlib.ExitStack() as self.holds:  # the dataset's lease (:meth:`hold`), released at the end
            try:
                return self._run()
            finally:
                install_http_client(self.client.timeout)  # the survey's budget ends with it

    def hold(self) -> None:
        """Once the source is enumerated, before anything is pinned or written: check that the dataset
        can be written and take its lease (one survey at a time per dataset) until the survey ends.

        Raises
        ------
        hubscan.errors.DatasetWriteError
            The dataset cannot be written (read-only, permission denied).
        hubscan.errors.DatasetBusyError
            Another survey holds the dataset (the line names it).
        """
        self.dataset = Dataset(self.config.out, **self.config.storage_options)
        self.dataset.check_writable()
        self.holds.enter_context(Lease(self.dataset, self.survey_id))

    def _run(self) -> dict:
        if self.ray_address():  # a cluster that does not answer: one line now, nothing listed, held or written
            check_cluster(self.ray_address())
        self.plan()
        total = len(self.work) + len(self.driver_rows.rows)
        self.progress = _Progress(self.config, total)
        try:
            self.commit(self.driver_rows.flush())
            if self.work:
                self.init_ray()
                self.start_pool()
                self.dispatch()
                self.commit(self.driver_rows.flush())
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM under the CLI
            self.interrupted = True
            n = len(getattr(self, "inflight", ())) + sum(len(v) for v in getattr(self, "pending", {}).values())
            log.warning("interrupted: %d analyzed or in-flight models not committed (a rerun does them)", n)
        except (DatasetWriteError, DatasetBusyError) as exc:  # the dataset takes no more writes
            self.write_error = exc
            raise
        except BaseException:  # any other error (Ray could not start, no node fits …): the row says it stopped
            self.interrupted = True
            raise
        finally:
            self.interrupted = self.interrupted or self.source_lost is not None
            self._stop_pool()
            self.progress.close(self.counts)
            summary = self.summary()
            if self.we_started_ray:
                import ray
                ray.shutdown()
        if self.source_lost is not None:
            exc, left = self.source_lost
            raise HubUnreachableError(self.config.source, f"{exc.reason}: the survey stopped (models committed: "
                                      f"{sum(self.counts.values())}; left for the next run: {left})")
        if self.interrupted:
            raise KeyboardInterrupt
        return summary

    def _stop_pool(self) -> None:
        """Kill the survey's actors; the Hub request budget comes back into the driver first (its state taken
        from the budget's actor), so that the driver's requests after the pool — a model tree's other edges
        (:class:`hubscan.census.TreeSurvey`) — still take its tokens, from a budget that still exists."""
        if not hasattr(self, "actors"):
            return
        import ray
        if self.budget_actor is not None:
            try:
                self.budget = HubBudget(slack=self.budget.slack,
                                        state=ray.get(self.budget_actor.snapshot.remote(), timeout=10))
            except (ray.exceptions.RayError, TimeoutError):  # gone: the driver's own, as planning left it
                log.warning("the Hub request budget's actor did not answer: the driver goes on with the budget "
                            "as it was when the actors started")
            install_http_client(self.client.timeout, budget=BudgetGate.local(self.client.endpoint, self.budget))
        for actor in [*self.actors, *self.starting.values(),
                      *[a for a in (self.budget_actor, getattr(self, "content_actor", None)) if a is not None]]:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead
                pass

    def _update_progress(self, row: dict | None) -> None:
        if self.progress is not None:
            self.progress.update(self.analyzed, self.counts, self.seen, row)


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT and SIGTERM for the duration of the block (a critical section: a commit and the counts
    that record it), then act on the first one received with the handler that was in place (Ctrl-C's
    KeyboardInterrupt, the CLI's SIGTERM handler). Off the main thread (where signals cannot be handled)
    the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list = []
    held = {s: h for s in (signal.SIGINT, signal.SIGTERM)
            if (h := signal.getsignal(s)) is not None}  # None: a handler set outside Python, left alone
    for s in held:
        signal.signal(s, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        for s, h in held.items():
            signal.signal(s, h)
        if received:
            signum, frame = received[0]
            handler = held[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:  # no Python handler: the signal's own default (exit)
                signal.raise_signal(signum)


def survey(config: SurveyConfig) -> dict:
    """Run a survey (see the module docstring).

    Parameters
    ----------
    config : SurveyConfig

    Returns
    -------
    dict
        The ``surveys`` row: counts per status (committed models), bytes, requests, time,
        interrupted, table versions.

    Raises
    ------
    hubscan.errors.ClusterUnreachableError
        Nothing answers at the Ray address (nothing written), or Ray could not connect to what does.
    hubscan.errors.HubscanError
        The source cannot be enumerated (e.g. hub unreachable) or holds no model — nothing else
        stops a survey.
    KeyboardInterrupt
        After recording the interrupted survey (Ctrl-C; SIGTERM too where the caller's handler
        raises it, as the CLI's does: ``ray.init`` does not displace that handler).
    """
    return Survey(config).run()


class _Progress:
    """Progress on the driver: a rich bar on a terminal (fits 80 columns), else a log line every
    ``progress_models`` models or ``progress_seconds`` seconds."""

    def __init__(self, config: SurveyConfig, total: int):
        self.enabled, self.total = config.progress, total
        self.every_models, self.every_seconds = config.progress_models, config.progress_seconds
        self.t0 = self.last_t = time.perf_counter()
        self.last_n = 0
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("survey"), BarColumn(bar_width=None), MofNCompleteColumn(),
                                TextColumn("{task.description}"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=False, expand=False)
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def _text(self, n: int, counts: dict, seen: dict) -> str:
        rate = n / max(1e-9, (time.perf_counter() - self.t0) / 60)
        S = ModelStatus
        return f"{seen[S.SUCCESS] + seen[S.INCOMPLETE]} ok {seen[S.FAILED]} failed {rate:.0f}/min"

    def due_in(self) -> float:
        """Seconds until the next log line is due (at least 1; infinite with a bar or no progress)."""
        if not self.enabled or self.bar is not None:
            return math.inf
        return max(1.0, self.every_seconds - (time.perf_counter() - self.last_t))

    def update(self, n: int, counts: dict, seen: dict, row: dict | None) -> None:
        """``counts``: committed models per status; ``seen``: analyzed models per status and bytes read."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=n, description=self._text(n, counts, seen))
            return
        now = time.perf_counter()
        if n - self.last_n >= self.every_models or now - self.last_t >= self.every_seconds:
            self.last_n, self.last_t = n, now
            progress_log.info("survey: %d/%d analyzed (%d ok, %d failed, %d skipped, %.1f MB read), %d committed | "
                              "%.1f models/min", n, self.total,
                              seen[ModelStatus.SUCCESS] + seen[ModelStatus.INCOMPLETE], seen[ModelStatus.FAILED],
                              seen[ModelStatus.SKIPPED], seen["bytes_read"] / 1e6, sum(counts.values()),
                              n / max(1e-9, (now - self.t0) / 60))

    def close(self, counts: dict) -> None:
        if self.bar is not None:
            self.bar.stop()
