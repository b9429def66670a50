"""The hub survey: a Ray driver that enumerates models and a pool of analysis actors that stream
their weights, compute the ESDs and write the Parquet dataset (:mod:`hubscan.store`).

Flow: the driver enumerates the source, pins each model (commit sha / fingerprint), skips what the
dataset already holds for the same (source, id, revision, analysis config) unless ``force``, and
dispatches the rest to the actors with back-pressure (at most ``max_in_flight`` models in flight).
Each actor analyzes a model tensor by tensor (prefetching the next tensor while the current one is
decomposed) and writes the model's files itself — cluster nodes share no disk, only the dataset's
filesystem (e.g. S3). The driver only sees one small summary per model.

Fault tolerance: a model that fails is recorded with its reason and the survey goes on; an actor
that dies (OOM, killed, node lost) is replaced and its model retried up to ``max_attempts``, then
recorded failed; a restarted driver resumes from the dataset (the ``models`` file is each model's
commit record); Ctrl-C stops submitting, lets nothing half-written become visible (files are
atomic) and records the survey as interrupted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections import deque
from typing import Iterable

from hubscan import __version__
from hubscan.analysis import AnalyzeOptions
from hubscan.errors import GatedModelError, HubscanError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef
from hubscan.store import Dataset, config_hash, model_key, rows_to_table
from hubscan.schema import SURVEY_SCHEMA

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SurveyConfig:
    """Settings of one survey run.

    Attributes
    ----------
    source : str
        ``hf``, ``timm``, ``local:DIR`` or ``list:FILE``.
    out : str
        Dataset location: a path or filesystem URL (``s3://bucket/prefix``).
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
        Re-analyze models the dataset already holds.
    keep_esd : bool
        Write the ``esd`` table (eigenvalues per layer).
    storage_options : dict
        Filesystem options of ``out`` (e.g. S3 ``endpoint_override``).
    hub : dict
        :class:`~hubscan.hub.HubClient` settings (endpoint, max_retries, timeout, cache_dir …).
    progress : bool
        Live progress bar on the driver.
    survey_id : str or None
        None → a new UTC-timestamped id.
    actor_start_timeout : float
        Seconds without any progress while no actor can be placed before the rest is failed.
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
    progress: bool = True
    survey_id: str | None = None
    actor_start_timeout: float = 600.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _family(meta: dict, ref: ModelRef) -> str | None:
    from hubscan.sources.timm import family_of
    if meta.get("family"):
        return meta["family"]
    if meta.get("model_type"):
        return meta["model_type"]
    if ref.source != "local":
        return None
    # a local file's name without its version / size / fold tokens, else its folder's name:
    # proteinmpnn_v_48_020.pt → proteinmpnn, silero_vad_16k.safetensors → silero_vad, v3_fold0.pt → <folder>
    import re
    path = ref.id.rstrip("/")
    stem = os.path.splitext(os.path.basename(path))[0]
    tokens = []
    for tok in stem.split("_"):
        if re.fullmatch(r"(v\d*|\d.*|fold\d*|v\d+_fold\d+)", tok.lower()):
            break
        tokens.append(tok)
    return "_".join(tokens) or os.path.basename(os.path.dirname(path)) or stem


def model_row(ref: ModelRef, meta: dict, key: str, cfg_hash: str, survey_id: str, status: str, reason: str,
              summary: dict | None = None, **extra) -> dict:
    """The ``models`` row of one model (schema :data:`hubscan.schema.MODEL_SCHEMA`)."""
    row = {"model_key": key, "source": ref.source, "model_id": ref.id, "revision": ref.revision,
           "config_hash": cfg_hash, "repo_id": ref.repo_id, "files": list(ref.files), "status": status,
           "reason": reason, "family": _family(meta, ref), "hubscan_version": __version__,
           "survey_id": survey_id, "analyzed_at": _utcnow()}
    for k in ("model_type", "architectures", "library_name", "pipeline_tag", "tags", "downloads", "likes",
              "num_parameters", "eval_results", "gated", "created_at", "last_modified"):
        if k in meta:
            row[k] = meta[k]
    if summary:
        for k, v in summary.items():
            if k not in ("status", "reason"):
                row[k] = v
    row.update(extra)
    return row


def analyze_and_write(ref: ModelRef, meta: dict, key: str, *, dataset: Dataset, options: AnalyzeOptions,
                      cfg_hash: str, survey_id: str, client: HubClient, keep_esd: bool, attempts: int = 1) -> dict:
    """Analyze one pinned model and write its files; never raises for a model's own problems.

    Returns
    -------
    dict
        The model row written (status success / incomplete / failed / skipped).
    """
    from hubscan.analysis import analyze
    from hubscan.weights.remote import open_ref

    t0 = time.perf_counter()
    retries0 = client.total_retries()
    opts = dataclasses.replace(options, keep_evals=keep_esd)
    ident = {"model_key": key, "source": ref.source, "model_id": ref.id, "revision": ref.revision}
    try:
        ws = open_ref(ref, client)
        result = analyze(ws, opts)
    except GatedModelError as exc:
        row = model_row(ref, meta, key, cfg_hash, survey_id, "skipped", exc.reason)
    except HubscanError as exc:
        status = "skipped" if "no weight tensors" in exc.reason or "no weight files" in exc.reason else "failed"
        row = model_row(ref, meta, key, cfg_hash, survey_id, status, str(exc))
    except Exception as exc:  # noqa: BLE001 - one model never stops the survey
        log.exception("%s: unexpected error", ref)
        row = model_row(ref, meta, key, cfg_hash, survey_id, "failed",
                        f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    else:
        row = model_row(ref, meta, key, cfg_hash, survey_id, result.summary["status"], result.summary["reason"],
                        result.summary, format=result.format, device=opts.device)
        layers = [{**ident, "survey_id": survey_id, **r} for r in result.rows]
        esd = None
        if keep_esd:
            esd = [{**ident, "layer_id": r["layer_id"], "name": r["name"], "part": r["part"],
                    "evals": result.evals[r["name"] + (f":{r['part']}" if r["part"] else "")].astype("float32")}
                   for r in result.rows if (r["name"] + (f":{r['part']}" if r["part"] else "")) in result.evals]
        row.update(seconds=time.perf_counter() - t0, retries=client.total_retries() - retries0, attempts=attempts,
                   options=json.dumps(dataclasses.asdict(opts), default=str))
        dataset.write_model(key, ref.source, row, layers, esd)
        return row
    row.update(seconds=time.perf_counter() - t0, retries=client.total_retries() - retries0, attempts=attempts,
               options=json.dumps(dataclasses.asdict(opts), default=str))
    dataset.write_model(key, ref.source, row, [], None)
    return row


def _warm_up(options: AnalyzeOptions) -> None:
    """Pay the lazy imports (scipy.optimize / special / stats, pyarrow.parquet) and the first BLAS /
    LAPACK calls once, when the actor starts, instead of in its first model."""
    import dataclasses as _dc
    import pyarrow.parquet  # noqa: F401
    import torch
    from hubscan.analysis import analyze_entries
    from hubscan.weights.base import TensorEntry

    w = torch.from_numpy(__import__("numpy").random.default_rng(0).standard_t(3, (96, 64)).astype("float32"))
    entry = TensorEntry("warmup.weight", (96, 64), "float32", "<warm-up>", lambda: w)
    for _ in analyze_entries([entry], _dc.replace(options, randomize=False), prefetch=False):
        pass


class _Worker:
    """The analysis actor's body (wrapped by ``ray.remote`` in :func:`survey`)."""

    def __init__(self, out: str, storage_options: dict, options: AnalyzeOptions, cfg_hash: str, survey_id: str,
                 hub: dict, keep_esd: bool, threads: int):
        import torch
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.dataset = Dataset(out, **storage_options)
        self.options, self.cfg_hash, self.survey_id, self.keep_esd = options, cfg_hash, survey_id, keep_esd
        self.client = HubClient(**hub)
        _warm_up(options)



    def pid(self) -> int:
        return os.getpid()

    def run(self, ref: ModelRef, meta: dict, key: str, attempts: int) -> dict:
        row = analyze_and_write(ref, meta, key, dataset=self.dataset, options=self.options, cfg_hash=self.cfg_hash,
                                survey_id=self.survey_id, client=self.client, keep_esd=self.keep_esd,
                                attempts=attempts)
        keep = ("model_key", "model_id", "source", "status", "reason", "bytes_read", "seconds", "alpha", "num_success")
        return {k: row.get(k) for k in keep}


def _resolve_all(items: Iterable, client: HubClient):
    """Pin every enumerated model: yields (ref, meta, error) — error is a HubscanError or None."""
    from hubscan.sources import resolve
    for ref, meta in items:
        if ref.revision and (ref.files or ref.source == "local"):
            yield ref, meta, None
            continue
        try:
            pinned, more = resolve(ref, client)
            yield pinned, {**meta, **more}, None
        except HubscanError as exc:
            yield ref, meta, exc


def _cluster_resources(config: SurveyConfig):
    import ray
    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0))
    cpus = float(total.get("CPU", 1))
    gpa = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    actors = config.actors or (int(gpus // gpa) if gpa else max(1, int(cpus // 2)))
    cpa = config.cpus_per_actor if config.cpus_per_actor is not None else max(1.0, (cpus // max(1, actors)))
    return max(1, actors), gpa, cpa


def survey(config: SurveyConfig) -> dict:
    """Run a survey (see the module docstring).

    Parameters
    ----------
    config : SurveyConfig

    Returns
    -------
    dict
        The ``surveys`` row: counts per status, bytes, time, interrupted.

    Raises
    ------
    hubscan.errors.HubscanError
        The source cannot be enumerated (e.g. hub unreachable) — nothing else stops a survey.
    """
    import ray
    from hubscan.sources import enumerate_models

    import itertools

    started = _utcnow()
    t0 = time.perf_counter()
    survey_id = config.survey_id or started.strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    client = HubClient(**config.hub)
    # enumerate the first model before anything else: a bad source (unknown kind, missing folder or
    # list file, unreachable hub) fails here in one line, before Ray starts or the dataset is created
    items = iter(enumerate_models(config.source, client=client, limit=config.limit, **config.filters))
    first = next(items, None)
    items = itertools.chain([first], items) if first is not None else iter(())
    dataset = Dataset(config.out, **config.storage_options)
    cfg_hash = config_hash(config.options)
    done = {} if config.force else dataset.done()

    we_started_ray = False
    if not ray.is_initialized():
        address = config.address or os.environ.get("RAY_ADDRESS")  # set inside `ray job submit`
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            we_started_ray = True
    n_actors, gpa, cpa = _cluster_resources(config)
    device = "cuda" if gpa else "cpu"
    options = dataclasses.replace(config.options, device=device)
    Worker = ray.remote(_Worker).options(num_cpus=cpa, num_gpus=gpa, max_restarts=0, max_task_retries=0)

    def new_actor():
        return Worker.remote(config.out, config.storage_options, options, cfg_hash, survey_id, config.hub,
                             config.keep_esd, int(cpa))

    counts = {"success": 0, "incomplete": 0, "failed": 0, "skipped": 0}
    stats = {"num_models": 0, "num_already_done": 0, "bytes_read": 0}
    interrupted = False
    progress = _Progress(config.progress)

    def record(row: dict) -> None:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        stats["bytes_read"] += int(row.get("bytes_read") or 0)
        progress.update(counts, stats, row)

    queue = _resolve_all(items, client)
    max_in_flight = config.max_in_flight or 2 * n_actors
    per_actor = max(1, -(-max_in_flight // n_actors))  # tasks queued on one actor (overlaps driver round trips)
    actors: dict = {}    # actor handle -> number of tasks queued on it (ready actors only)
    starting: dict = {}  # readiness future -> actor handle (placed and constructed when it resolves)
    inflight: dict = {}  # task future -> (actor, ref, meta, key, attempts)
    retry_queue: deque = deque()
    last_progress = time.monotonic()

    def start_actor() -> None:
        actor = new_actor()
        starting[actor.pid.remote()] = actor

    for _ in range(n_actors):
        start_actor()

    def next_task():
        if retry_queue:
            return retry_queue.popleft()
        for ref, meta, err in queue:
            stats["num_models"] += 1
            key = model_key(ref.source, ref.id, ref.revision, cfg_hash)
            if err is not None:
                status = "skipped" if isinstance(err, GatedModelError) or "no weight" in err.reason else "failed"
                row = model_row(ref, meta, key, cfg_hash, survey_id, status, str(err), attempts=0)
                dataset.write_model(key, ref.source, row, [], None)
                record(row)
                continue
            if done.get(key) not in (None, "failed"):
                stats["num_already_done"] += 1
                progress.update(counts, stats, None)
                continue
            return ref, meta, key, 1
        return None

    def fail(ref, meta, key, attempts, reason):
        row = model_row(ref, meta, key, cfg_hash, survey_id, "failed", reason, attempts=attempts)
        dataset.write_model(key, ref.source, row, [], None)
        record(row)

    try:
        exhausted = False
        while True:
            # dispatch: least-loaded ready actor first, never more than max_in_flight models at once
            while len(inflight) < max_in_flight and actors and (retry_queue or not exhausted):
                actor = min(actors, key=actors.get)
                if actors[actor] >= per_actor:
                    break
                task = next_task()
                if task is None:
                    exhausted = True
                    break
                actors[actor] += 1
                inflight[actor.run.remote(*task)] = (actor, *task)
            if not inflight and (exhausted and not retry_queue):
                break
            if not inflight and not starting:
                start_actor()
            ready, _ = ray.wait(list(inflight) + list(starting), num_returns=1, timeout=30)
            if not ready:
                if not inflight and time.monotonic() - last_progress > config.actor_start_timeout:
                    while True:  # no actor can be placed: fail what is left rather than hang
                        task = next_task()
                        if task is None:
                            break
                        fail(*task, reason="no analysis actor could be started (cluster has no free resources)")
                    break
                continue
            fut = ready[0]
            last_progress = time.monotonic()
            if fut in starting:
                actor = starting.pop(fut)
                try:
                    ray.get(fut)
                    actors[actor] = 0
                    stats.setdefault("startup_seconds", time.perf_counter() - t0)
                except ray.exceptions.RayError as exc:
                    log.warning("analysis actor failed to start: %s", " ".join(str(exc).split())[:200])
                    start_actor()
                continue
            actor, ref, meta, key, attempts = inflight.pop(fut)
            try:
                record(ray.get(fut))
                if actor in actors:
                    actors[actor] -= 1
            except ray.exceptions.RayActorError as exc:  # actor died: OOM, killed, node lost
                log.warning("%s: analysis actor died (attempt %d/%d): %s", ref, attempts, config.max_attempts,
                            " ".join(str(exc).split())[:200])
                if actors.pop(actor, None) is not None:
                    start_actor()  # replace it once, however many of its tasks fail
                if attempts < config.max_attempts:
                    retry_queue.append((ref, meta, key, attempts + 1))
                else:
                    fail(ref, meta, key, attempts,
                         f"analysis actor died {attempts} times (out of memory, killed or node lost)")
            except ray.exceptions.RayTaskError as exc:  # a bug, not the model's problem: record and go on
                fail(ref, meta, key, attempts, " ".join(str(getattr(exc, "cause", None) or exc).split())[:300])
                if actor in actors:
                    actors[actor] -= 1
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: %d models in flight are abandoned (their files are never half-visible)",
                    len(inflight))
        for fut in list(inflight):
            try:
                ray.cancel(fut)  # actor tasks cannot be force-cancelled; the actors are killed below
            except Exception:  # noqa: BLE001
                pass
    finally:
        for actor in list(actors) + list(starting.values()):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead
                pass
        progress.close()
        summary = {"survey_id": survey_id, "started_at": started, "finished_at": _utcnow(),
                   "source": config.source, "filters": json.dumps(config.filters, default=str),
                   "config_hash": cfg_hash, "options": json.dumps(dataclasses.asdict(options), default=str),
                   "num_success": counts["success"], "num_incomplete": counts["incomplete"],
                   "num_failed": counts["failed"], "num_skipped": counts["skipped"],
                   "seconds": time.perf_counter() - t0, "actors": n_actors, "interrupted": interrupted,
                   "hubscan_version": __version__, **stats}
        dataset.write_table("surveys", rows_to_table([summary], SURVEY_SCHEMA), f"part-{survey_id}.parquet")
        if we_started_ray:
            ray.shutdown()
    if interrupted:
        raise KeyboardInterrupt
    return summary


class _Progress:
    """Live bar on the driver: models done / failed / skipped, bytes, models per minute (rich)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = time.perf_counter()
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("[bold]survey[/bold]"), BarColumn(), TextColumn("{task.description}"),
                                TimeElapsedColumn(), transient=False)
            self.task = self.bar.add_task("starting", total=None)
            self.bar.start()

    def update(self, counts: dict, stats: dict, row: dict | None) -> None:
        if not self.enabled:
            return
        done = sum(counts.values())
        rate = done / max(1e-9, (time.perf_counter() - self.t0) / 60)
        desc = (f"{counts['success'] + counts['incomplete']} ok, {counts['failed']} failed, {counts['skipped']} skipped,"
                f" {stats['num_already_done']} already done | {stats['bytes_read'] / 1e6:.1f} MB | {rate:.1f} models/min")
        if row is not None:
            desc += f" | last: {row['model_id'][-40:]} {row['status']}"
        self.bar.update(self.task, completed=done, description=desc)

    def close(self):
        if self.enabled:
            self.bar.stop()
