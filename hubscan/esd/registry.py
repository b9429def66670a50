"""The metric registry: every per-layer column hubscan computes from a spectrum, defined once.

Each :class:`Metric` says what a column is (name, dtype, description), how it is computed (a
function of the layer's :class:`Spectrum`), whether the model summary averages it, whether
``correlate`` tests it against accuracy by default, its axis label, its direction and its warning
thresholds. The layers table's metric columns (:mod:`hubscan.schema`), the model summary
(:func:`hubscan.esd.metrics.summarize`), ``correlate``'s default metrics and the report's labels and
alpha guides are all derived from this registry, never listed again by hand.

Adding a metric is one :func:`register_metric` entry with its function, in a module of
``hubscan/esd/`` named ``metric_<name>.py`` (found and imported by :func:`metrics`) — see
CONTRIBUTING.md. A metric that costs more than the others is computed only when its **option** is on:
the module registers the option (:func:`register_option`: name, type, default, help, validation) and
its metrics name it (``register_metric(..., option=NAME)``). ``hubscan.analysis.AnalyzeOptions``, the CLI
flags, the config hash and the columns are derived from these entries. Both registries are
:class:`hubscan.registry.Registry` s: each entry records its module, and registering a name twice warns
and says which module's entry wins.

This module is pure: no I/O, no pyarrow. Dtypes are strings (``float64``, ``int64``, ``string``,
``bool``) that :mod:`hubscan.schema` maps to Arrow types.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import numbers
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
    shuffled : callable () -> ndarray of float64, shape (M·rf,), or None
        The same eigenvalues on demand, whatever ``randomize`` says (one seeded shuffle per layer, computed
        on the first call and shared with ``rand_distance``): for metrics of the randomized ESD behind an
        option of their own (``traps``). None where the analysis provides no slices.
    N, M : int
        Rows and columns of each slice, N ≥ M.
    slices : torch.Tensor, shape (rf, N, M), or None
        The (scaled) matrices themselves, for metrics of their elements.
    options : object or None
        The analysis options (``hubscan.analysis.AnalyzeOptions``: ``seed``, ``evals_thresh``,
        ``fix_fingers`` … and every registered :class:`Option`); None: every option at its default.
    tensor : torch.Tensor or None
        The tensor as read (before the split / orientation that gives ``slices``).
    part : str
        The block of a split tensor this layer is (``q``, a gate letter, a conv slice), or ``""``.
    """

    esd: Any
    fit: Any
    mp: Any = None
    mp_fit: bool = True
    rand_evals: Any = None
    shuffled: Callable[[], Any] | None = None
    N: int = 0
    M: int = 0
    slices: Any = None
    options: Any = None
    tensor: Any = None
    part: str = ""
    _memo: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def option(self, name: str) -> Any:
        """The value of an analysis option (a registered :class:`Option`'s default without ``options``).

        Raises
        ------
        KeyError
            Without ``options``, ``name`` is not a registered option.
        """
        return getattr(self.options, name) if self.options is not None else OPTIONS[name].default

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
    option : str or None
        The :class:`Option` that turns the metric on: computed only when the option is not at its
        default, else None.
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
    option: str | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"metric {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        if self.summary and self.dtype not in ("float64", "int64"):
            raise ValueError(f"metric {self.name!r}: only numeric metrics can be averaged into the summary")


@dataclasses.dataclass(frozen=True)
class Option:
    """An analysis option a metric module declares: a field of ``hubscan.analysis.AnalyzeOptions``, a flag
    of ``hubscan analyze`` / ``survey`` (``--name-with-dashes``), and an entry of the config hash when not at
    its default (so datasets written before the option existed keep their hashes).

    Attributes
    ----------
    name : str
        Python name (``alpha_ci``); the flag is :attr:`flag`.
    type : type
        ``bool`` (a switch), ``int``, ``float`` or ``str``.
    default : object
        The value that leaves the option off (its metrics None).
    help : str
        One line for ``--help``.
    check : callable (value) -> None, optional
        Raises ValueError with the reason when a value is not allowed (see :func:`at_least`, :func:`below`).
    metavar : str or None
        The value's name in ``--help`` (``LEVEL``).
    """

    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any], None] | None = None
    metavar: str | None = None

    def __post_init__(self):
        if self.type not in (bool, int, float, str):
            raise ValueError(f"option {self.name!r}: type {self.type!r} is not bool, int, float or str")

    @property
    def flag(self) -> str:
        """The command-line flag: ``--alpha-ci``."""
        return "--" + self.name.replace("_", "-")

    def parse(self, value: Any) -> Any:
        """``value`` as the option's type, checked.

        Raises
        ------
        ValueError
            Not of the type (an int given for a float is taken), or refused by ``check``; the message names
            the option and the reason.
        """
        try:
            if self.type is bool:
                if not _is_bool(value):
                    raise TypeError
                v = bool(value)
            elif self.type is float:
                if _is_bool(value):
                    raise TypeError
                v = float(value)
                if not math.isfinite(v):
                    raise _Refused("not a finite number")
            elif self.type is int:  # numpy's integers and integral floats too (numbers.Real)
                v = float(value) if isinstance(value, str) else value
                if _is_bool(v) or not isinstance(v, numbers.Real) or v != int(v):
                    raise TypeError
                v = int(v)
            else:
                v = str(value)
        except (TypeError, ValueError, OverflowError) as exc:  # Python's own messages not shown ("could not …")
            why = str(exc) if isinstance(exc, _Refused) else f"not of type {self.type.__name__}"
            raise ValueError(f"{self.name} = {value!r}: {why}") from None
        if self.check is not None:
            try:
                self.check(v)
            except ValueError as exc:
                raise ValueError(f"{self.name} = {v!r}: {exc}") from None
        return v

    def on(self, value: Any) -> bool:
        """Whether ``value`` turns the option's metrics on (any value but the default)."""
        return value != self.default


class _Refused(ValueError):
    """A value of the right kind that an option still refuses (its reason is shown as it is)."""


def _is_bool(value: Any) -> bool:
    """A Python or numpy bool (numpy not imported: ``numpy.bool_`` by its type's module and name)."""
    t = type(value)
    return isinstance(value, bool) or (t.__module__ == "numpy" and t.__name__ in ("bool_", "bool"))


def at_least(lo: float) -> Callable[[Any], None]:
    """An :class:`Option` check: value ≥ ``lo``."""
    def check(v):
        if v < lo:
            raise ValueError(f"below {lo:g}")
    return check


def below(hi: float, lo: float = 0.0) -> Callable[[Any], None]:
    """An :class:`Option` check: ``lo`` ≤ value < ``hi``."""
    def check(v):
        if not lo <= v < hi:
            raise ValueError(f"must be ≥ {lo:g} and below {hi:g}")
    return check


#: The metric registry: name → :class:`Metric`, in column order.
METRICS: Registry[Metric] = Registry("metric")
#: The analysis options metrics declare: name → :class:`Option`, in registration order.
OPTIONS: Registry[Option] = Registry("analysis option")
_LOADED: set = set()  # which of the built-in parts _load imported: "options" (metric_* modules), "metrics"
#: Metric modules imported first, in this order: the layers table's columns keep the order they had before
#: they moved into these modules (datasets written then have it). Other ``metric_*`` modules follow, sorted.
_COLUMN_ORDER = ("metric_alpha_ci", "metric_ks_pvalue", "metric_farms", "metric_vectors")


def register_option(name: str, type: type, default: Any, help: str, *, check: Callable[[Any], None] | None = None,
                    metavar: str | None = None) -> Option:
    """Register an analysis option (:class:`Option`) for the metrics of the calling module.

    Returns
    -------
    Option

    Raises
    ------
    ValueError
        The type is not bool, int, float or str, or the default is refused by ``check``.

    Warns
    -----
    hubscan.registry.RegistryWarning
        ``name`` is already registered: the new entry wins (the warning names both modules).
    """
    import inspect

    module = inspect.currentframe().f_back.f_globals.get("__name__")
    if not module.startswith("hubscan.esd."):
        _load(metrics=False)  # the built-in options first: a plugin's of the same name wins
    option = Option(name, type, default, help, check, metavar)
    option.parse(default)
    return OPTIONS.register(name, option, module=module)


def options() -> dict[str, Option]:
    """Every registered analysis option, name → :class:`Option`, in registration order (the built-in
    ``metric_*`` modules are imported for them, not the numpy-using metrics: the CLI's flags stay light)."""
    _load(metrics=False)
    return dict(OPTIONS)


def register_metric(name: str, dtype: str, description: str, *, summary: bool = False, correlate: bool = False,
                    label: str = "", higher_is_better: bool | None = None, warn_below: float | None = None,
                    warn_above: float | None = None, option: str | None = None):
    """Decorator registering ``fn(spectrum) -> value`` as the metric ``name`` (see :class:`Metric`).

    Columns appear in registration order. With ``option`` (a registered :class:`Option`'s name), ``fn`` is
    called only when the analysis has the option on; the column is None otherwise.

    Raises
    ------
    ValueError
        The dtype is unknown, a summary metric is not numeric, or ``option`` is not registered.

    Warns
    -----
    hubscan.registry.RegistryWarning
        ``name`` is already registered: the new entry wins (the warning names both modules).
    """
    def deco(fn: Callable[[Spectrum], Any]) -> Callable[[Spectrum], Any]:
        if not fn.__module__.startswith("hubscan.esd."):
            _load()  # the built-in metrics first: a plugin's of the same name wins
        if option is not None and option not in OPTIONS:
            raise ValueError(f"metric {name!r}: option {option!r} is not registered (register_option first)")
        compute = fn if option is None else _when(option, fn)
        METRICS.register(name, Metric(name, dtype, description, compute, summary=summary, correlate=correlate,
                                      label=label or name, higher_is_better=higher_is_better,
                                      warn_below=warn_below, warn_above=warn_above, option=option),
                         module=fn.__module__)
        return fn
    return deco


def _when(option: str, fn: Callable[[Spectrum], Any]) -> Callable[[Spectrum], Any]:
    def compute(s: Spectrum):
        return fn(s) if s.options is not None and OPTIONS[option].on(s.option(option)) else None
    compute.__name__ = getattr(fn, "__name__", "compute")
    return compute


def unregister_metric(name: str) -> None:
    """Remove a metric (tests that register a toy metric clean up with this)."""
    METRICS.unregister(name)


def unregister_option(name: str) -> None:
    """Remove an option (and leave its metrics' columns None); tests clean up with this."""
    OPTIONS.unregister(name)


def _load(metrics: bool = True) -> None:
    """Import every ``hubscan/esd/metric_*.py`` module and (``metrics``) the built-in metrics, each once."""
    if "options" not in _LOADED:
        _LOADED.add("options")
        import hubscan.esd as pkg
        found = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("metric_"))
        for mod in [m for m in _COLUMN_ORDER if m in found] + [m for m in found if m not in _COLUMN_ORDER]:
            importlib.import_module(f"hubscan.esd.{mod}")
    if metrics and "metrics" not in _LOADED:
        _LOADED.add("metrics")
        importlib.import_module("hubscan.esd.metrics")


def metrics() -> dict[str, Metric]:
    """Every registered metric, name → :class:`Metric`, in column order: the built-in metrics
    (:mod:`hubscan.esd.metrics`), then those of :data:`_COLUMN_ORDER`'s modules, then the others in
    registration order — whatever order the modules were imported in."""
    _load()
    if _ORDERED.get("generation") != METRICS.generation:
        def rank(e) -> int:
            if e.module == "hubscan.esd.metrics":
                return 0
            mod = e.module.removeprefix("hubscan.esd.")
            return 1 + _COLUMN_ORDER.index(mod) if mod in _COLUMN_ORDER else 1 + len(_COLUMN_ORDER)

        _ORDERED.update(generation=METRICS.generation,
                        metrics={e.name: e.value for e in sorted(METRICS.entries(), key=rank)})
    return dict(_ORDERED["metrics"])


_ORDERED: dict = {}


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
