"""One model: weight tensors → ESDs → fits → one row per matrix, plus the model summary.

This is the unit of work a survey distributes. It streams: one tensor is read, analyzed and
released before the next is read, so memory is bounded by the largest tensor, not the model.
One bad layer never stops the others: its row gets ``status = RowStatus.FAILED`` and a one-line reason.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import logging
import math
import os
import time
from typing import Iterable, Iterator

import numpy as np
import torch

from hubscan.errors import HubscanError, NoWeightsError, SkippedTensor, one_line
from hubscan.esd.eigen import compute_esd, resolve_device, top_eigenvalues
from hubscan.esd.matrices import DEFAULT_MIN_EVALS, LayerPlan, plan_matrices
from hubscan.esd.metrics import layer_metrics, summarize
from hubscan.esd.mp import fit_mp
from hubscan.esd.precision import PrecisionCheck, check_precision
from hubscan.esd.options import check_core
from hubscan.esd.select import EXCLUDED, LayerFilter, as_spec, excluded
from hubscan.esd.powerlaw import EVALS_THRESH, fit_powerlaw
from hubscan.esd.registry import OPTIONS
from hubscan.esd.registry import options as metric_options
from hubscan.records import EsdRecord, LayerRecord, ModelStatus, RowStatus
from hubscan.refs import ModelRef
from hubscan.weights.base import TensorEntry, WeightKind, WeightSet
from hubscan.weights.layouts import resolve_layouts
from hubscan.weights.modules import module_map

log = logging.getLogger(__name__)

#: In a layout's name: the weight as the module computes it (weight norm, a parametrization), not a
#: dequantization (the row's ``reason`` is then the layout itself).
EFFECTIVE = "effective weight"

#: Fits on fewer eigenvalues than this get a caution in the row's ``reason`` (e.g. LoRA factors, M = rank).
FEW_EVALS = 20
#: A tensor of a local file with at least this many elements is read in the prefetch thread
#: (:func:`analyze_entries`); smaller ones inline.
PREFETCH_MIN_ELEMS = 1 << 20


#: Options added after schema v1 (besides the metrics' registered options, :func:`added_options`): they enter
#: ``store.config_hash`` only when not at their default, so datasets written before they existed keep their
#: hashes (and are not re-analyzed).
ADDED_OPTIONS = ("layers",)


def added_options() -> tuple[str, ...]:
    """Every option that enters the config hash only when not at its default: :data:`ADDED_OPTIONS` and the
    options metrics register (:func:`hubscan.esd.registry.register_option`)."""
    return ADDED_OPTIONS + tuple(metric_options())


@dataclasses.dataclass(frozen=True, init=False)
class AnalyzeOptions:
    """Settings of the analysis (their hash keys survey results).

    Besides the fields below, every option a metric module registers
    (:func:`hubscan.esd.registry.register_option`) is an attribute and a keyword: ``alpha_ci``,
    ``alpha_ci_samples``, ``ks_pvalue``, ``farms``, ``vectors`` (built in, :mod:`hubscan.esd` ``metric_*``
    modules) and any plugin's. Its value is checked against the option's type and check; an option not
    given is at its default (its metrics' columns None).

    Attributes
    ----------
    device : str
        ``cpu``, ``cuda``, ``cuda:N``, ``auto`` or another torch device (``mps``).
    method : str
        Eigenvalue method, ``gram`` (default) or ``svd`` (:mod:`hubscan.esd.eigen`).
    precision : str
        ``float64`` (default), ``float32``, or ``auto``: float32 on CUDA for the shapes where a float64
        check of one layer gives |Δalpha| ≤ 1e-4, float64 elsewhere (:mod:`hubscan.esd.precision`).
    evals_thresh : float
        Eigenvalues ≤ this are left out of the power-law fit (WW: 1e-5); finite, ≥ 0.
    fix_fingers : str
        ``""``, ``xmin_peak`` or ``clip_xmax`` (:mod:`hubscan.esd.powerlaw`).
    tpl : bool
        Fit a truncated power law too.
    mp_fit : bool
        Fit the MP bulk (sigma_mp, lambda_plus, num_spikes, mp_softrank) and classify the phase.
    randomize : bool
        Compute rand_distance (one more eigen-decomposition per layer).
    split_fused : bool
        Analyze fused q/k/v and RNN gate stacks block by block.
    conv_slices : bool
        One row per conv slice instead of one pooled ESD.
    min_evals, max_evals : int, int or None
        Skip layers with fewer / more pooled eigenvalues; 1 ≤ min_evals ≤ 1,000,000, min_evals ≤ max_evals.
    keep_evals : bool
        Keep every layer's eigenvalues in the result (for the ``esd`` table and plots).
    seed : int
        Seed of the shuffle behind rand_distance (and of the bootstraps).
    layers : str
        Layer filter, e.g. ``"0-5,!*pooler*,dense"`` (:mod:`hubscan.esd.select`); "" = every layer. Given as a
        layer id or a list/tuple of ids and specs, it is stored as the comma-joined spec (``[1, 3]`` → ``"1,3"``,
        the same config hash).
    metric_options : tuple of (str, value)
        The registered options not at their default, sorted by name (read them as attributes).

    Each field's value is checked as the command line checks its flag (:mod:`hubscan.esd.options`): a bool
    is a bool, method / precision / fix_fingers one of their choices, numbers finite and in range.

    Raises
    ------
    TypeError
        A keyword that is neither a field nor a registered option, or ``layers`` neither a spec, an id nor a
        list/tuple of them.
    ValueError
        A value of the wrong type or refused by its check (one line, ``name = value: reason``), e.g.
        ``method = 'qr': not one of 'gram', 'svd'``, ``min_evals = 50 is above max_evals = 10: …``,
        ``device = 'tpu': 'tpu' is not a device …``.
    """

    device: str = "cpu"
    method: str = "gram"
    precision: str = "float64"
    evals_thresh: float = EVALS_THRESH
    fix_fingers: str = ""
    tpl: bool = False
    mp_fit: bool = True
    randomize: bool = False
    split_fused: bool = False
    conv_slices: bool = False
    min_evals: int = DEFAULT_MIN_EVALS
    max_evals: int | None = None
    keep_evals: bool = False
    seed: int = 0
    layers: str = ""
    metric_options: tuple = ()

    def __init__(self, **kwargs):
        given = dict(kwargs.pop("metric_options", ()))
        core = {f.name: f for f in dataclasses.fields(self) if f.name != "metric_options"}
        registered = metric_options()
        for name in [k for k in kwargs if k not in core]:
            if name not in registered:
                raise TypeError(f"unknown analysis option {name!r} (options: {', '.join([*core, *registered])})")
            given[name] = kwargs.pop(name)
        values = check_core({name: kwargs.get(name, f.default) for name, f in core.items() if name != "layers"})
        values["layers"] = as_spec(kwargs.get("layers", ""))
        for name, value in values.items():
            object.__setattr__(self, name, value)
        values = {}
        for name, value in given.items():
            if name not in registered:  # a plugin's option this process has not loaded
                raise TypeError(f"unknown analysis option {name!r} (is the module that registers it imported?)")
            v = registered[name].parse(value)
            if registered[name].on(v):
                values[name] = v
        object.__setattr__(self, "metric_options", tuple(sorted(values.items())))

    def __getattr__(self, name: str):  # only for names that are not fields: the registered options
        if name.startswith("_") or name == "metric_options":
            raise AttributeError(name)
        for given, value in self.metric_options:  # the few not at their default (every metric asks: no copies)
            if given == name:
                return value
        option = OPTIONS.get(name) or metric_options().get(name)  # (loaded by __init__; a plugin's since)
        if option is None:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}")
        return option.default

    def to_dict(self) -> dict:
        """Every option, the registered ones included, name → value (JSON-able; what a survey records)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "metric_options"}
        out.update({name: getattr(self, name) for name in metric_options()})
        return out


@dataclasses.dataclass
class AnalysisResult:
    """What :func:`analyze` returns for one model.

    Attributes
    ----------
    source : str
        The path or reference analyzed.
    rows : list of LayerRecord
        One typed record per matrix (:class:`hubscan.records.LayerRecord`; also a mapping of its
        columns, ``row["alpha"]``).
    summary : dict
        :func:`hubscan.esd.metrics.summarize` of the rows, plus ``status`` (``success`` /
        ``incomplete`` / ``failed``), ``reason``, ``missing`` and ``seconds``.
    missing : list of (str, str)
        Tensors the model names but that could not be read, with the reason.
    evals : dict of str to ndarray
        ``"name"`` or ``"name:part"`` (:func:`hubscan.records.part_key`) → float64 eigenvalues,
        when ``keep_evals``.
    files, format : list of str, str
        The weight files read and their format.
    ref : ModelRef or None
        The pinned reference (hub commit sha, or local fingerprint) when given a reference string.
    metadata : dict
        What the source knows of the model (downloads, model_type, eval results …).
    kind : WeightKind
        What the rows are ESDs of: the weights, or ΔW against a base (a delta, an adapter).
    """

    source: str
    rows: list
    summary: dict
    missing: list
    evals: dict
    files: list
    format: str
    ref: ModelRef | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    kind: WeightKind = WeightKind.WEIGHTS

    def to_arrow(self):
        """The rows as a ``pyarrow.Table`` with :data:`hubscan.schema.LAYER_SCHEMA` (converted by
        :func:`hubscan.schema.rows_to_table`, the one converter)."""
        from hubscan.schema import rows_to_table
        return rows_to_table(self.rows, "analysis")

    def to_pandas(self):
        """The rows as a ``pandas.DataFrame`` (same columns and order as :meth:`to_arrow`)."""
        return self.to_arrow().to_pandas()

    def esd_records(self) -> list[EsdRecord]:
        """The kept eigenvalues as ``esd`` records (float32), in row order; empty without
        ``keep_evals``."""
        return [EsdRecord(layer_id=r.layer_id, name=r.name, part=r.part, evals=self.evals[r.key].astype(np.float32))
                for r in self.rows if r.key in self.evals]


def _one_line(exc: BaseException) -> str:
    return one_line(exc, 300) or type(exc).__name__


def analyze_entries(entries: Iterable[TensorEntry], options: AnalyzeOptions = AnalyzeOptions(),
                    shapes: dict | None = None, prefetch: bool = True,
                    unread: list | None = None, kinds: dict | None = None) -> Iterator[tuple[dict, np.ndarray | None]]:
    """Analyze tensors one at a time — or, for runs of consecutive small layers of one shape (q/k/v/o, the
    blocks of a model, experts stored apart), a few at a time: their eigenvalues in one batched call
    (:func:`hubscan.esd.eigen.compute_esds`, equal to the one-at-a-time path to rounding), their fits one
    by one. On CUDA (:func:`hubscan.esd.eigen.batch_limits`) the batches are larger and formed by shape
    over a window of tensors, each tensor is copied to the device from pinned memory in the prefetch
    thread (:func:`hubscan.esd.eigen.stage`), and ``precision="auto"`` decomposes in float32 the shapes
    whose float64 check allows it (:mod:`hubscan.esd.precision`).

    Parameters
    ----------
    entries : iterable of TensorEntry
        Lazily loadable tensors (any reader's output).
    options : AnalyzeOptions
    shapes : dict of str to shape, optional
        Every tensor's shape, for RNN gate detection when ``split_fused``.
    prefetch : bool
        Read the next analyzable tensor (or batch) in a background thread while the current one is
        decomposed (overlaps network / disk reads and host→device copies with compute; at most two
        tensors, or two batches within :func:`hubscan.esd.eigen.batch_limits`, are held).
    unread : list, optional
        Receives (name, reason) of each tensor skipped because its layout is not one hubscan recognises
        (a plan with ``understood=False``): the caller marks the model ``incomplete``.
    kinds : dict of str to TensorKind, optional
        Tensor name → what its owning module says it is (:func:`hubscan.weights.modules.module_map`);
        passed to :func:`~hubscan.esd.matrices.plan_matrices` as the kind hint.

    Yields
    ------
    (LayerRecord, evals)
        One per matrix (1-D tensors yield nothing), in tensor order: the layer's record, and the
        eigenvalues (float64, ascending) or None when skipped / failed.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from hubscan.esd import eigen

    device = resolve_device(options.device)
    if device.type == "cpu":
        eigen.cpu_linalg()  # chosen before the first layer (measured once, on one thread); a bad setting raises here
    selected = LayerFilter.parse(options.layers)

    def planned():
        for layer_id, entry in enumerate(entries):
            if entry.skip_reason:  # known unreadable before reading (any rank: it is named)
                yield layer_id, entry, [LayerPlan(entry.name, "", "skipped", tuple(entry.shape),
                                                  skip_reason=entry.skip_reason)], None
                continue
            if len(entry.shape) < 2:
                continue
            dtype = "float32" if entry.layout else entry.dtype  # decoded layouts load as float32
            kind = (kinds or {}).get(entry.name)
            plans = plan_matrices(entry.name, entry.shape, dtype, split_fused=options.split_fused,
                                  conv_slices=options.conv_slices, min_evals=options.min_evals,
                                  max_evals=options.max_evals, sibling_shapes=shapes,
                                  kind=kind.kind if kind else None, role=kind.role if kind else "")
            if selected.include or selected.exclude:
                plans = [p if p.skip_reason is not None or selected.keeps(layer_id, entry.name, p.layer_type)
                         else dataclasses.replace(p, skip_reason=EXCLUDED + selected.spec)
                         for p in plans]
            yield layer_id, entry, plans, kind.module if kind else None

    max_layers, max_elems, max_layer_elems, by_shape = eigen.batch_limits(device)
    checks: dict = {}  # (rf, N, M) -> PrecisionCheck, under --precision auto

    def precision_of(plan, slices) -> tuple[str, PrecisionCheck | None]:
        """The precision of a plan's decomposition: the option's, or under ``auto`` the check of the first
        layer of its shape (:mod:`hubscan.esd.precision`); ``slices()`` gives the layer's slices."""
        if options.precision != "auto":
            return options.precision, None
        key = (plan.rf, plan.N, plan.M)
        if key not in checks:
            try:
                checks[key] = check_precision(slices(), plan.eig_scale, device=device, method=options.method,
                                              evals_thresh=options.evals_thresh, fix_fingers=options.fix_fingers,
                                              layer=plan.name)
            except Exception:  # noqa: BLE001 - e.g. NaN weights: the layer's own row says so
                return "float64", None
        return checks[key].precision, checks[key]

    def batch_key(item):
        """Items with one key are decomposed together: one small plan each, same shapes, the gram method."""
        _, entry, plans, _ = item
        if (len(plans) != 1 or plans[0].skip_reason is not None or options.method != "gram"
                or getattr(entry, "rank", 0) or math.prod(entry.shape) > max_layer_elems):
            return None
        p = plans[0]
        return tuple(entry.shape), p.rf, p.N, p.M, p.eig_scale

    def consecutive(items):
        """Consecutive items of one batch key (up to max_layers / max_elems), others alone."""
        group, key, size = [], None, 0
        for item in items:
            k, n = batch_key(item), math.prod(item[1].shape)
            if group and (k is None or k != key or len(group) >= max_layers or size + n > max_elems):
                yield group
                group, size = [], 0
            if k is None:
                yield [item]
                continue
            group, key, size = group + [item], k, size + n
        if group:
            yield group

    def grouped(items):
        """(window, group): on CPU each group of :func:`consecutive` is its own window; on CUDA
        (``by_shape``) the items of a window of BATCH_WINDOW tensors are ordered by batch key (first
        appearance; unbatchable ones keep their place) before grouping, so a model's same-shape layers
        are batched although other shapes come between them. Rows are yielded in tensor order per window."""
        if not by_shape:
            for w, group in enumerate(consecutive(items)):
                yield w, group
            return
        items, w = iter(items), 0
        while window := list(itertools.islice(items, eigen.BATCH_WINDOW)):
            first: dict = {}
            order = [first.setdefault(k, i) if (k := batch_key(it)) is not None else i for i, it in enumerate(window)]
            for group in consecutive([it for _, it in sorted(zip(order, window), key=lambda x: x[0])]):
                yield w, group
            w += 1

    def read_ahead(entry) -> bool:
        """Whether reading ``entry`` in the prefetch thread pays: a copy to CUDA, a stream from the Hub, a
        large tensor from disk (a cold read overlaps the previous layer's eigensolver). A small tensor of a
        local file or one in memory is read inline: the thread's start and its turns at the GIL cost more
        than the read (measured, one thread: a 15-layer tiny llama 28.1 → 26.4 ms, MiniLM 587 → 581 ms)."""
        if device.type == "cuda":
            return True
        where = str(entry.file)
        if where.startswith("<"):  # in memory (hubscan.weights.memory)
            return False
        return math.prod(entry.shape) >= PREFETCH_MIN_ELEMS or not os.path.isfile(where)

    def loader(pool, entry, plans) -> Future | None:
        if not any(p.skip_reason is None for p in plans):
            return None
        load = (lambda: eigen.stage(entry.load(), device)) if device.type == "cuda" else entry.load
        if pool is None or not read_ahead(entry):
            fut: Future = Future()
            try:
                fut.set_result(load())
            except Exception as exc:  # noqa: BLE001 - reported on the layer's row
                fut.set_exception(exc)
            return fut
        return pool.submit(load)

    def once(fut):
        """The tensor a future reads, read on first use (never for an entry whose plans are all skipped)."""
        held: list = []

        def get():
            if not held:
                held.append(fut.result())
            return held[0]
        return get

    def analyzed(layer_id, entry, plan, module_type, tensor, esd=None, shared=0.0, check=None):
        """(row, evals) of one plan; ``tensor()`` reads the tensor, ``esd`` is its batched ESD if any, ``check``
        the ``auto`` precision check it was decomposed under (else it is found here)."""
        row = _base_row(layer_id, entry, plan, device, module_type)
        if plan.skip_reason is not None:
            if not plan.understood and unread is not None:
                unread.append((entry.name, plan.skip_reason))
            return row, None
        t0 = time.perf_counter()
        try:
            if esd is None:
                precision, check = precision_of(plan, lambda: plan.extract(tensor()))
            else:
                precision = esd.precision
            evals = _analyze_plan(plan, tensor(), options, device, row, rank=getattr(entry, "rank", 0), esd=esd,
                                  precision=precision)
            if check is not None and precision == "float32":
                row.reason = "; ".join(r for r in (row.reason, check.note()) if r)
            row.update(getattr(entry, "extras", {}))  # base-model distances
        except SkippedTensor as exc:  # e.g. a tied twin, found equal once read
            row.update(status=RowStatus.SKIPPED, reason=exc.reason, layer_type="skipped", N=None, M=None, Q=None,
                       rf=None, device=None, seconds=time.perf_counter() - t0)
            return row, None
        except Exception as exc:  # one bad layer never stops the others
            log.warning("%s: %s", entry.name, _one_line(exc))
            row.status, row.reason, row.seconds = RowStatus.FAILED, _one_line(exc), time.perf_counter() - t0 + shared
            return row, None
        row.seconds = time.perf_counter() - t0 + shared
        return row, evals

    def batched_esds(group, futs):
        """The group's ESDs in one call (None where a layer is decomposed alone: unreadable, out of range),
        and the ``auto`` check they were decomposed under."""
        t0 = time.perf_counter()
        stacks = []
        for (_, _, plans, _), fut in zip(group, futs):
            try:
                stacks.append(plans[0].extract(fut.result()))
            except Exception:  # noqa: BLE001 - raised again, on the layer's own row
                stacks.append(None)
        esds, check = [None] * len(group), None
        good = [i for i, st in enumerate(stacks) if st is not None]
        if len(good) > 1:
            plan = group[good[0]][2][0]
            precision, check = precision_of(plan, lambda: stacks[good[0]])
            try:
                for i, esd in zip(good, eigen.compute_esds([stacks[i] for i in good], plan.eig_scale,
                                                            device=device, precision=precision)):
                    esds[i] = esd
            except Exception as exc:  # noqa: BLE001 - e.g. memory: each layer alone instead
                log.warning("batched eigenvalues failed (%s): one layer at a time", _one_line(exc))
        return esds, check, (time.perf_counter() - t0) / len(group)

    def window_rows(group, futs):
        """The group's (row, evals), one or several plans per item."""
        if len(group) > 1:
            esds, check, shared = batched_esds(group, futs)
            for (layer_id, entry, plans, module_type), fut, esd in zip(group, futs, esds):
                yield analyzed(layer_id, entry, plans[0], module_type, fut.result, esd, shared,
                               check if esd is not None else None)
            return
        (layer_id, entry, plans, module_type), tensor = group[0], once(futs[0])
        for plan in plans:
            yield analyzed(layer_id, entry, plan, module_type, tensor)

    pool = ThreadPoolExecutor(1, thread_name_prefix="hubscan-prefetch") if prefetch else None
    try:
        groups = grouped(planned())
        nxt = next(groups, None)
        pending = [loader(pool, e, p) for _, e, p, _ in nxt[1]] if nxt and pool else None
        held, held_window = [], None  # a window's rows, yielded in tensor order when it ends
        while nxt is not None:
            w, group = nxt
            futs = pending if pool else [loader(None, e, p) for _, e, p, _ in group]
            nxt = next(groups, None)
            pending = [loader(pool, e, p) for _, e, p, _ in nxt[1]] if nxt and pool else None
            if not by_shape:
                yield from window_rows(group, futs)
                continue
            if held and w != held_window:
                yield from sorted(held, key=lambda r: r[0].layer_id)
                held = []
            held_window = w
            held.extend(window_rows(group, futs))
            del futs
        yield from sorted(held, key=lambda r: r[0].layer_id)  # stable: a tensor's plans stay in order
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        eigen.release_scratch()


def _base_row(layer_id: int, entry: TensorEntry, plan: LayerPlan, device, module_type: str | None = None
              ) -> LayerRecord:
    common = dict(layer_id=layer_id, name=entry.name, part=plan.part, layer_type=plan.layer_type,
                  typed_by=plan.typed_by, module_type=module_type if plan.typed_by == "module" else None,
                  shape=list(entry.shape), dtype=entry.dtype, companions=list(entry.companions),
                  metrics={"alpha": math.nan})
    if plan.skip_reason is not None:
        return LayerRecord(**common, status=RowStatus.SKIPPED, reason=plan.skip_reason)
    return LayerRecord(**common, N=plan.N, M=plan.M, Q=plan.Q, rf=plan.rf, device=str(device),
                       reason=("" if not entry.layout else entry.layout if EFFECTIVE in entry.layout
                               else f"dequantized ({entry.layout})"))


def _analyze_plan(plan: LayerPlan, tensor: torch.Tensor, options: AnalyzeOptions, device,
                  row: LayerRecord, rank: int = 0, esd=None, precision: str = "float64") -> np.ndarray:
    slices = plan.extract(tensor)
    if esd is None:  # else decomposed in a batch (analyze_entries)
        esd = compute_esd(slices, plan.eig_scale, device=device, method=options.method, precision=precision)
    if rank:  # a LoRA update B·A: its rank-r ESD (hubscan.weights.peft)
        esd = top_eigenvalues(esd, rank, plan.N)
    fit = fit_powerlaw(esd.evals, evals_thresh=options.evals_thresh, fix_fingers=options.fix_fingers,
                       tpl=options.tpl, units_exp=esd.scale_exp)
    if esd.scale_exp:  # eigenvalues in units of 4^k (hubscan.esd.eigen, "Range"): the absolute threshold too
        with np.errstate(over="ignore", under="ignore"):
            scaled = float(np.ldexp(options.evals_thresh, -2 * esd.scale_exp))  # inf: every eigenvalue below it
        options = copy.copy(options)  # not through __init__: a user's value is checked, this one is derived
        object.__setattr__(options, "evals_thresh", scaled)
    mp = None
    if options.mp_fit and esd.evals[-1] > 0:
        mp = fit_mp(esd.evals, plan.N, plan.M)
    @functools.cache
    def shuffled() -> np.ndarray:  # one seeded shuffle per layer: rand_distance and any metric that asks
        gen = torch.Generator().manual_seed(options.seed)
        flat = slices.reshape(-1)
        mixed = flat[torch.randperm(flat.numel(), generator=gen)].reshape(slices.shape)
        return compute_esd(mixed, plan.eig_scale, device=device, method=options.method,
                           precision=esd.precision).evals

    row.metrics = layer_metrics(esd, fit, mp, mp_fit=options.mp_fit, rand_evals=shuffled() if options.randomize
                                else None, slices=slices, options=options, tensor=tensor, part=plan.part,
                                shuffled=shuffled, N=plan.N, M=plan.M)
    row.eig_method = esd.method
    # the spectrum is measured (norms, rank, lambda_max): the row succeeds; without a fit its alpha is null
    # with the reason (rank collapse, all eigenvalues equal …), and it enters no mean (metrics.summarize)
    caution = fit.reason
    if fit.status == "success":
        n_fit = fit.num_fit_evals or len(esd.evals)  # above evals_thresh: what the fit used
        if n_fit < FEW_EVALS:
            caution = f"few eigenvalues: fit on {n_fit} (< {FEW_EVALS}), alpha unreliable" + (
                f", not in the model's means (< {options.min_evals})" if n_fit < options.min_evals else "")
    if esd.scale_exp:
        scaled = (f"X = WᵀW beyond {esd.precision}: decomposed as W·2^{-esd.scale_exp} (eigenvalues beyond "
                  f"{esd.precision} reported as inf or 0, their log10 exact)")
        caution = "; ".join(c for c in (scaled, caution) if c)
    if caution:
        row.reason = "; ".join(r for r in (row.reason, caution) if r)
        log.info("%s: %s", plan.name, caution)  # in the row's reason (and under the CLI's table)
    if esd.scale_exp:  # the eigenvalues in the units of W (±inf / 0 beyond float64)
        with np.errstate(over="ignore", under="ignore"):
            return np.ldexp(esd.evals, 2 * esd.scale_exp)
    return esd.evals


def analyze(weights: WeightSet, options: AnalyzeOptions | None = None, *, source: str | None = None,
            ref: ModelRef | None = None, meta: dict | None = None, **kwargs) -> AnalysisResult:
    """Analyze every weight matrix of one opened model.

    This is the one-model room: it takes a :class:`~hubscan.weights.base.WeightSet` and nothing else (where
    the model comes from is the business of :mod:`hubscan.sources`; ``hubscan.analyze`` opens a path or a
    reference with :func:`hubscan.sources.open_model` and calls this).

    Parameters
    ----------
    weights : WeightSet
        Opened (any reader, any source; a delta or an adapter as :func:`hubscan.sources.open_model` opens
        them); closed when the analysis ends.
    options : AnalyzeOptions, optional
        Analysis settings; keyword arguments override its fields (``analyze(ws, device="cuda")``).
    source : str, optional
        What the result names as analyzed (default: the files).
    ref, meta
        The pinned reference and the source's metadata, carried into the result.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    hubscan.errors.HubscanError
        No weight matrix (NoWeightsError), or a file unreadable once its tensors are listed; a single
        layer's problem never raises (its row says it).
    """
    options = dataclasses.replace(options or AnalyzeOptions(), **kwargs)
    run = ModelAnalysis(weights, options, source or ",".join(weights.files), ref, meta)
    for _ in run.rows():
        pass
    return run.result()


class ModelAnalysis:
    """One model's analysis in two steps, so that several analyses can read one model together
    (:func:`analyze_in_step`): iterate :meth:`rows` (each matrix read, analyzed and released in turn),
    then :meth:`result`. :func:`analyze` is this for one model.

    Parameters
    ----------
    ws : WeightSet
        Opened; closed when :meth:`rows` ends.
    options : AnalyzeOptions
    source : str
        What the result names as analyzed.
    ref, meta
        The pinned reference and the source's metadata, carried into the result.
    """

    def __init__(self, ws: WeightSet, options: AnalyzeOptions, source: str, ref: ModelRef | None = None,
                 meta: dict | None = None):
        self.ws, self.options, self.source, self.ref, self.meta = ws, options, source, ref, meta or {}
        self._rows: list = []
        self._evals: dict = {}
        self._unread: list = []
        self._missing: list = []
        self._t0 = time.perf_counter()

    def rows(self) -> Iterator[LayerRecord]:
        """Analyze the tensors one at a time, yielding each matrix's record as it is done."""
        options = self.options
        with self.ws:
            entries = resolve_layouts(self.ws.entries(), self.ws.config)
            shapes = {e.name: e.shape for e in entries} if options.split_fused else None
            self._unread = [(e.name, e.skip_reason) for e in entries if not e.understood]
            kinds = self.ws.types if self.ws.types is not None else \
                module_map(self.ws.config, {e.name: e.shape for e in entries})
            for row, ev in analyze_entries(entries, options, shapes, unread=self._unread, kinds=kinds):
                self._rows.append(row)
                if options.keep_evals and ev is not None:
                    self._evals[row.key] = ev
                yield row
            self._missing = list(self.ws.missing)

    def result(self) -> AnalysisResult:
        """The model's result once :meth:`rows` is exhausted.

        Raises
        ------
        hubscan.errors.NoWeightsError
            The model holds no tensor with 2 or more dimensions.
        """
        from hubscan.weights.delta import UNCHANGED, base_mismatch

        rows, missing, unread = self._rows, self._missing, self._unread
        if not rows and not missing:
            raise NoWeightsError(self.source, "no weight tensors (no tensor with 2 or more dimensions)")
        summary = summarize(rows, min_fit_evals=self.options.min_evals)
        left_out = [r for r in rows if excluded(r)]
        failed = [(r.key, r.reason) for r in rows if r.status == RowStatus.FAILED]
        unchanged = sum(r.reason == UNCHANGED for r in rows)

        def listed(lost, what):  # "2 layer(s) failed: a (why); b (why)", the first three named
            return f"{len(lost)} {what}: " + "; ".join(f"{n} ({r})" for n, r in lost[:3]) + (" …" if len(lost) > 3 else "")
        parts = [listed(lost, what) for lost, what in ((failed, "layer(s) failed"), (missing, "tensor(s) missing"),
                                                       (unread, "tensor(s) in a layout hubscan does not read")) if lost]
        if left_out and all(r.get("status") == RowStatus.SKIPPED for r in rows):  # the user's filter left nothing
            status, reason = ModelStatus.SKIPPED, f"no layer selected by {left_out[0]['reason'].removeprefix('excluded by ')}"
        elif summary["num_success"] == 0 and not failed and unchanged:  # a delta of a copy of its base
            status, reason = ModelStatus.SKIPPED, f"no tensor differs from the base: {unchanged} {UNCHANGED}"
        elif summary["num_success"] == 0:  # nothing measured: say why (failures, or every tensor's skip reason)
            skipped = [(r.key, r.reason) for r in rows if r.status == RowStatus.SKIPPED]
            why = parts or ([listed(skipped, "tensor(s) skipped")] if skipped else [])
            if skipped and not parts and not any(base_mismatch(r) for _, r in skipped):  # e.g. integer buffers only
                status, reason = ModelStatus.SKIPPED, " | ".join(["no weight matrix to measure"] + why)
            else:  # failures, or skips that say something is wrong (a base of other shapes)
                status, reason = ModelStatus.FAILED, " | ".join(["no layer could be analyzed"] + why)
        elif parts:  # a layer hubscan could not measure (e.g. NaN / inf weights), a tensor missing or unread
            status, reason = ModelStatus.INCOMPLETE, " | ".join(parts)
        else:
            status, reason = ModelStatus.SUCCESS, ""
        summary.update(status=status, reason=reason, num_missing=len(missing), seconds=time.perf_counter() - self._t0,
                       bytes_read=int(self.ws.stats.get("bytes_read", 0)),
                       requests=int(self.ws.stats.get("requests", 0)))
        if self.ws.stats.get("files_sha256"):  # the Hub named the files' content (LFS sha256)
            summary["files_sha256"] = list(self.ws.stats["files_sha256"])
        return AnalysisResult(source=self.source, rows=rows, summary=summary, missing=missing, evals=self._evals,
                              files=list(self.ws.files), format=self.ws.format, ref=self.ref, metadata=self.meta,
                              kind=self.ws.kind)


def analyze_in_step(*runs: ModelAnalysis) -> list:
    """Run several analyses of one model's tensors in step: the analysis furthest behind (by
    ``layer_id``) goes next, so a tensor two of them read (:class:`hubscan.weights.shared.SharedReads`)
    is taken by both while it is still held.

    Returns
    -------
    list of AnalysisResult or HubscanError
        One per run, in order: its result, or the error that stopped it (the others go on).
    """
    gens = [r.rows() for r in runs]
    last = [-1] * len(runs)
    errors: dict = {}
    live = list(range(len(runs)))
    while live:
        i = min(live, key=lambda k: last[k])
        try:
            row = next(gens[i], None)
        except HubscanError as exc:
            errors[i], row = exc, None
        if row is None:
            live.remove(i)
        else:
            last[i] = row.layer_id
    out = []
    for i, run in enumerate(runs):
        if i in errors:
            out.append(errors[i])
            continue
        try:
            out.append(run.result())
        except HubscanError as exc:
            out.append(exc)
    return out


def analyze_together(own: WeightSet, delta: WeightSet, options: AnalyzeOptions, *, source: str | None = None,
                     ref: ModelRef | None = None) -> tuple:
    """A model's own analysis and its delta against a base, run in step (:func:`analyze_in_step`), so that
    the stored tensors the two sets share are read once (:func:`hubscan.sources.open_model` ``own=True``
    opens them so).

    Parameters
    ----------
    own, delta : WeightSet
        The model's own weights and its ΔW against the base; each closed when its analysis ends.
    options : AnalyzeOptions
        Both analyses; the delta's eigenvalues are never kept.
    source : str, optional
        What the results name as analyzed (default: the model's files).
    ref : ModelRef, optional
        The model's pinned reference, carried into both results.

    Returns
    -------
    (AnalysisResult or HubscanError, AnalysisResult or HubscanError)
        The model's own result (equal to ``analyze(own)``) and its delta result, each replaced by the error
        that stopped it.
    """
    source = source or ",".join(own.files)
    return tuple(analyze_in_step(ModelAnalysis(own, options, source, ref),
                                 ModelAnalysis(delta, dataclasses.replace(options, keep_evals=False), source, ref)))
