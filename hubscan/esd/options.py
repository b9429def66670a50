"""The core analysis options' values: what each accepts, in one place.

:class:`hubscan.analysis.AnalyzeOptions` checks its fields with these (the Python API) and ``hubscan
analyze`` / ``survey`` use them as their flags' types and choices (the command line), so a value is refused
by the same rule, with the same reason, however it is given. The options metric modules register
(:mod:`hubscan.esd.registry`) carry their own type and check the same way. Light: torch is imported only to
parse a device name other than ``cpu``, ``auto`` and ``cuda[:N]``.
"""

from __future__ import annotations

import re

from hubscan.esd.registry import Option, at_least

#: ``method``: eigenvalues from the Gram matrix WᵀW or from the SVD of W (:mod:`hubscan.esd.eigen`).
METHODS = ("gram", "svd")
#: ``precision`` (:mod:`hubscan.esd.precision`).
PRECISIONS = ("float64", "float32", "auto")
#: ``fix_fingers``: "" (none) or WeightWatcher's two options (:mod:`hubscan.esd.powerlaw`).
FIX_FINGERS = ("", "xmin_peak", "clip_xmax")
#: Largest ``min_evals`` accepted: a layer with 10**6 eigenvalues already needs an 8 TB float64 Gram matrix,
#: so a larger bound can only be a typo that skips every layer.
MAX_EVALS_BOUND = 1_000_000

_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def one_of(choices: tuple) -> callable:
    """An :class:`Option` check: value in ``choices``."""
    def check(v):
        if v not in choices:
            raise ValueError(f"not one of {', '.join(repr(c) for c in choices)}")
    return check


def _device(v: str) -> None:
    if not _DEVICE.match(v):
        from hubscan.esd.eigen import parse_device
        try:
            parse_device(v)
        except ValueError as exc:  # without the value (Option.parse names it)
            raise ValueError(str(exc).partition(": ")[2]) from None


def _min_evals(v: int) -> None:
    at_least(1)(v)
    if v > MAX_EVALS_BOUND:
        raise ValueError(f"above {MAX_EVALS_BOUND:,}")


def _non_negative(v: float) -> None:
    if v < 0:
        raise ValueError("must be ≥ 0")


def _option(name, type, help, check=None) -> Option:
    return Option(name, type, None, help, check)  # the defaults are AnalyzeOptions' fields


#: The core options' value rules, name → :class:`hubscan.esd.registry.Option` (type and check).
#: ``max_evals`` may also be None (no bound); ``layers`` is normalised by :func:`hubscan.esd.select.as_spec`.
CORE_OPTIONS = {o.name: o for o in (
    _option("device", str, "cpu | cuda | cuda:N | auto (or another torch device)", _device),
    _option("method", str, "eigenvalue method", one_of(METHODS)),
    _option("precision", str, "eigenvalue arithmetic", one_of(PRECISIONS)),
    _option("evals_thresh", float, "eigenvalues ≤ this are left out of the fit", _non_negative),
    _option("fix_fingers", str, "fix_fingers", one_of(FIX_FINGERS)),
    _option("tpl", bool, "truncated power law"),
    _option("mp_fit", bool, "Marchenko-Pastur fit"),
    _option("randomize", bool, "rand_distance"),
    _option("split_fused", bool, "split fused stacks"),
    _option("conv_slices", bool, "one row per conv slice"),
    _option("min_evals", int, "skip layers with fewer eigenvalues", _min_evals),
    _option("max_evals", int, "skip layers with more eigenvalues", at_least(1)),
    _option("keep_evals", bool, "keep eigenvalues"),
    _option("seed", int, "seed"),
)}


def check_core(values: dict) -> dict:
    """The core options' values checked: each by its :data:`CORE_OPTIONS` entry, then ``min_evals`` ≤ ``max_evals``.

    Parameters
    ----------
    values : dict
        Name → value of (some of) the core options; a ``max_evals`` of None is no bound.

    Returns
    -------
    dict
        The values as their types (an int given for a float taken as a float).

    Raises
    ------
    ValueError
        One line: ``name = value: reason`` (``min_evals = 50 is above max_evals = 10: …`` for the pair).
    """
    out = {name: v if name == "max_evals" and v is None else CORE_OPTIONS[name].parse(v) if name in CORE_OPTIONS else v
           for name, v in values.items()}
    lo, hi = out.get("min_evals"), out.get("max_evals")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min_evals = {lo} is above max_evals = {hi}: every layer would be skipped")
    return out
