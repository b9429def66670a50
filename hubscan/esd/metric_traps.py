"""Correlation traps (option ``traps``, ``--traps``): the Marchenko–Pastur fit of the ESD of the element-shuffled
W and its outliers.

Definition (Prakash & Martin, "Grokking and Generalization Collapse: Insights from HTSR theory", arXiv
2506.04434, 2025; WeightWatcher ``analyze(randomize=True)``): shuffle the elements of W (one seeded permutation
of all the layer's elements, slices pooled as for the ESD), which destroys every correlation between rows and
columns, so the shuffled ESD should be Marchenko–Pastur. Fit its bulk exactly as the ESD's own MP fit
(:func:`hubscan.esd.mp.fit_mp`: rescale to mean 1, KDE + brute-force σ, edge λ+ = σ²(1 + 1/√Q)²). The
eigenvalues of the shuffled ESD beyond λ+ plus the Tracy–Widom margin √(Q^(−1/2)·λ+^(2/3)·M^(−2/3)) (the
rule of ``num_spikes``) are the **correlation traps**: what shuffling cannot remove — a few elements of
outsized magnitude, whose outer products stay rank-one spikes wherever the shuffle puts them. A layer with
traps is atypical (the paper: traps appear before anti-grokking, the late collapse of test accuracy).

Columns (WeightWatcher 0.7.7's ``randomize=True`` name in brackets where it has the quantity):

* ``num_traps`` (``num_traps`` = ``rand_num_spikes``): eigenvalues of the shuffled ESD beyond its edge;
* ``trap_size``: the largest trap over the edge, λ_max(W_rand)/λ+(W_rand) (null without a trap);
* ``trap_mass``: the share of ‖W‖²_F = Σλ(W_rand) the traps hold (0 without a trap);
* ``rand_sigma_mp`` (same), ``rand_lambda_plus`` (``rand_bulk_max``), ``rand_mp_softrank`` (same),
  ``rand_lambda_max`` (``max_rand_eval``): the shuffled ESD's MP fit, eigenvalue units as ``lambda_plus``.

For a planted single large element θ in i.i.d. noise of variance σ² (N × M, c = M/N, t = θ/(σ√N) > c^¼) the
trap is the BBP outlier λ = σ²N (1 + t²)(c + t²)/t² (Benaych-Georges & Nadakuditi, J. Multivar. Anal. 2012):
shuffling moves the element, not its size (``tests/test_traps.py``).

Differences from WeightWatcher 0.7.7, each deliberate: one shuffle per layer (WW pools 5 unseeded shuffles when
M < 100, which counts every trap five times), seeded by the analysis's ``seed``, shared with ``rand_distance``;
given the same shuffled eigenvalues every column equals WW's (``tests/test_traps.py``). WeightWatcher 0.8's
source was not available to compare (its GitHub master stops at 0.7.5.5 with "TODO: add find correlation traps").
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hubscan.esd.registry import Spectrum, register_metric, register_option

register_option("traps", bool, False, "correlation traps: MP fit of the element-shuffled W's ESD and its outliers "
                "(Prakash & Martin 2025): num_traps, trap_size, trap_mass, rand_* columns; one more "
                "eigendecomposition per layer")


@dataclasses.dataclass(frozen=True)
class Traps:
    """The correlation traps of one layer (module docstring).

    Attributes
    ----------
    mp : hubscan.esd.mp.MPFit
        The MP fit of the shuffled ESD (``num_spikes`` = the number of traps).
    evals : ndarray of float64, shape (num_traps,)
        The traps' eigenvalues, descending, in the units of the input.
    lambda_max : float
        The largest eigenvalue of the shuffled ESD.
    size : float
        ``evals[0] / mp.lambda_plus``; NaN without a trap.
    mass : float
        ``evals.sum()`` / Σ of the shuffled ESD.
    """

    mp: object
    evals: np.ndarray
    lambda_max: float
    size: float
    mass: float

    @property
    def count(self) -> int:
        return len(self.evals)


def correlation_traps(rand_evals: np.ndarray, N: int, M: int) -> Traps:
    """Fit the MP bulk of a shuffled ESD and return its outliers (module docstring).

    Parameters
    ----------
    rand_evals : ndarray of float, shape (M·rf,)
        Eigenvalues of X = W_randᵀ W_rand, W_rand = W with its elements shuffled (pooled over slices).
    N, M : int
        Slice sizes, N ≥ M ≥ 1.

    Returns
    -------
    Traps

    Raises
    ------
    ValueError
        Every eigenvalue is zero (no MP fit).
    """
    from hubscan.esd.mp import fit_mp

    ev = np.sort(np.asarray(rand_evals, dtype=np.float64))[::-1]
    mp = fit_mp(ev, N, M)
    traps = ev[:mp.num_spikes]  # the MP fit counts exactly the eigenvalues beyond its edge + margin
    total = float(ev.sum())
    return Traps(mp=mp, evals=traps, lambda_max=float(ev[0]),
                 size=float(traps[0] / mp.lambda_plus) if len(traps) else math.nan,
                 mass=float(traps.sum() / total))


def _traps(s: Spectrum) -> Traps | None:
    def run():
        if s.shuffled is None or not s.M:
            return None
        try:
            return correlation_traps(s.shuffled(), s.N, s.M)
        except ValueError:  # an all-zero W: no spectrum to fit
            return None
    return s.memo("traps", run)


def _units(s: Spectrum, value: float) -> float:
    """An eigenvalue-valued column in the units of W (the ESD may be scaled by 4^−k, ``ESD.scale_exp``)."""
    k = getattr(s.esd, "scale_exp", 0)
    with np.errstate(over="ignore", under="ignore"):
        return float(np.ldexp(value, 2 * k)) if k else value


@register_metric("num_traps", "int64", "correlation traps: eigenvalues of the element-shuffled W's ESD beyond its MP "
                 "edge + Tracy-Widom margin (WW num_traps / rand_num_spikes; --traps)", option="traps")
def num_traps(s: Spectrum) -> int | None:
    t = _traps(s)
    return t.count if t else None


@register_metric("trap_size", "float64", "largest correlation trap over the shuffled ESD's MP edge, "
                 "lambda_max(W_rand) / rand_lambda_plus; null without a trap (--traps)", option="traps")
def trap_size(s: Spectrum) -> float | None:
    t = _traps(s)
    return t.size if t and t.count else None


@register_metric("trap_mass", "float64", "share of the squared Frobenius norm in the correlation traps, "
                 "sum(trap eigenvalues) / sum(shuffled eigenvalues) (--traps)", option="traps")
def trap_mass(s: Spectrum) -> float | None:
    t = _traps(s)
    return t.mass if t else None


def _rand(name: str, get, description: str, eigenvalue: bool = False) -> None:
    """Register the column ``name``, ``get(traps)`` (in the units of W when ``eigenvalue``)."""
    def compute(s: Spectrum) -> float | None:
        t = _traps(s)
        return None if t is None else _units(s, get(t)) if eigenvalue else get(t)
    compute.__name__ = name
    register_metric(name, "float64", description + " (--traps)", option="traps")(compute)


_rand("rand_sigma_mp", lambda t: t.mp.sigma_mp, "MP scale of the element-shuffled W's mean-1 rescaled ESD (WW's)")
_rand("rand_lambda_plus", lambda t: t.mp.lambda_plus, "MP bulk edge of the element-shuffled W's ESD, eigenvalue "
      "units (WW rand_bulk_max)", eigenvalue=True)
_rand("rand_mp_softrank", lambda t: t.mp.mp_softrank, "rand_lambda_plus / largest shuffled eigenvalue (WW's)")
_rand("rand_lambda_max", lambda t: t.lambda_max, "largest eigenvalue of the element-shuffled W (WW max_rand_eval)",
      eigenvalue=True)
