"""The metric registry: every per-layer column hubscan computes from a spectrum, defined once.

Each :class:`Metric` says what a column is (name, dtype, description), how it is computed (a
function of the layer's :class:`Spectrum`), whether the model summary averages it, whether
``correlate`` tests it against accuracy by default, its axis label, its direction and its warning
thresholds. The layers table's metric columns (:mod:`hubscan.schema`), the model summary
(:func:`hubscan.esd.metrics.summarize`), ``correlate``'s default metrics and the report's labels and
alpha guides are all derived from this registry, never listed again by hand.

Adding a metric is one :func:`register_metric` entry with its function, in a module of
``hubscan/esd/`` named ``metric_<name>.py`` (found and imported by :func:`metrics`) — see
CONTRIBUTING.md. The registry is a :class:`hubscan.registry.Registry`: each entry records its
module, and registering a name twice warns and says which module's entry wins.

This module is pure: no I/O, no pyarrow. Dtypes are strings (``float64``, ``int64``, ``string``,
``bool``) that :mod:`hubscan.schema` maps to Arrow types.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
from typing import Any, Callable

from hubscan.registry import Registry

log = logging.getLogger(__name__)

#: The dtypes a metric may have (mapped to Arrow by :mod:`hubscan.schema`).
DTYPES = ("float64", "int64", "string", "bool")


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """What a metric function sees of one analyzed layer.

    Attributes
    ----------
    esd : hubscan.esd.eigen.ESD
        The pooled eigenvalues of X = WᵀW (float64, ascending, shape (M·rf,)) and the singular-value
        statistics.
    fit : hubscan.esd.powerlaw.PowerLawFit
        The power-law fit of the ESD tail (``status`` may be ``failed``: alpha-dependent metrics are
        then NaN).
    mp : hubscan.esd.mp.MPFit or None
        The Marchenko–Pastur bulk fit, when the analysis ran it and the ESD is not all zero.
    mp_fit : bool
        Whether the analysis asked for the MP fit (distinguishes "not asked" from "all zero").
    rand_evals : ndarray of float64, shape (M·rf,), or None
        Eigenvalues of the element-shuffled W (``randomize`` option), else None.
    N, M : int
        Rows and columns of each slice, N ≥ M.
    slices : torch.Tensor, shape (rf, N, M), or None
        The (scaled) matrices themselves, for metrics of their elements.
    """

    esd: Any
    fit: Any
    mp: Any = None
    mp_fit: bool = True
    rand_evals: Any = None
    N: int = 0
    M: int = 0
    slices: Any = None
    _memo: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per layer, for several metrics that share an intermediate result."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]


@dataclasses.dataclass(frozen=True)
class Metric:
    """One per-layer metric column.

    Attributes
    ----------
    name : str
        Column name (WeightWatcher's where WW has the metric).
    dtype : str
        One of :data:`DTYPES`.
    description : str
        One line, stored in the Arrow field metadata of the layers table.
    compute : callable (Spectrum) -> value
        The metric of one analyzed layer; None / NaN where it does not apply.
    summary : bool
        Averaged over the successfully fitted layers into the model summary (``models`` table).
    correlate : bool
        Tested against accuracy by default (``hubscan correlate``, the report's scatters).
    label : str
        Axis label of the model-level mean (plots); defaults to the name.
    higher_is_better : bool or None
        Direction for model quality where the literature states one (Martin, Peng & Mahoney,
        Nature Comm. 2021: smaller alpha, alpha_weighted, log norms ↔ better models), else None.
    warn_below, warn_above : float or None
        Layers below / above are flagged (alpha: 2 over-trained, 6 under-trained, WW's thresholds).
    """

    name: str
    dtype: str
    description: str
    compute: Callable[[Spectrum], Any]
    summary: bool = False
    correlate: bool = False
    label: str = ""
    higher_is_better: bool | None = None
    warn_below: float | None = None
    warn_above: float | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"metric {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        if self.summary and self.dtype not in ("float64", "int64"):
            raise ValueError(f"metric {self.name!r}: only numeric metrics can be averaged into the summary")


#: The metric registry: name → :class:`Metric`, in column order.
METRICS: Registry[Metric] = Registry("metric")
_loaded = False


def register_metric(name: str, dtype: str, description: str, *, summary: bool = False, correlate: bool = False,
                    label: str = "", higher_is_better: bool | None = None, warn_below: float | None = None,
                    warn_above: float | None = None):
    """Decorator registering ``fn(spectrum) -> value`` as the metric ``name`` (see :class:`Metric`).

    Columns appear in registration order.

    Raises
    ------
    ValueError
        The dtype is unknown, or a summary metric is not numeric.

    Warns
    -----
    hubscan.registry.RegistryWarning
        ``name`` is already registered: the new entry wins (the warning names both modules).
    """
    def deco(fn: Callable[[Spectrum], Any]) -> Callable[[Spectrum], Any]:
        _load()  # the built-in columns first, whoever registers (a plugin imported early, in an actor)
        METRICS.register(name, Metric(name, dtype, description, fn, summary=summary, correlate=correlate,
                                      label=label or name, higher_is_better=higher_is_better,
                                      warn_below=warn_below, warn_above=warn_above), module=fn.__module__)
        return fn
    return deco


def unregister_metric(name: str) -> None:
    """Remove a metric (tests that register a toy metric clean up with this)."""
    METRICS.unregister(name)


def _load() -> None:
    """Import the built-in metrics and every ``hubscan/esd/metric_*.py`` module once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import hubscan.esd as pkg
    importlib.import_module("hubscan.esd.metrics")
    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("metric_")):
        importlib.import_module(f"hubscan.esd.{mod}")


def metrics() -> dict[str, Metric]:
    """Every registered metric, name → :class:`Metric`, in registration order."""
    _load()
    return dict(METRICS)


def get_metric(name: str) -> Metric:
    """The metric ``name``.

    Raises
    ------
    KeyError
        No such metric.
    """
    _load()
    return METRICS[name]


def generation() -> int:
    """A number that changes whenever the registry changes (cache key of derived schemas)."""
    _load()
    return METRICS.generation


def summary_metrics() -> tuple[str, ...]:
    """Names of the metrics the model summary averages, in registration order."""
    return tuple(m.name for m in metrics().values() if m.summary)


def correlate_metrics() -> tuple[str, ...]:
    """Names of the metrics ``correlate`` tests by default, in registration order."""
    return tuple(m.name for m in metrics().values() if m.correlate)


def metric_labels() -> dict[str, str]:
    """name → axis label of every metric."""
    return {m.name: m.label for m in metrics().values()}
