"""Uncertainty of a power-law fit: a bootstrap confidence interval of alpha, and the CSN goodness-of-fit p-value.

Both are options (``AnalyzeOptions.alpha_ci`` / ``ks_pvalue``); their costs are measured in
``benchmarks/bench_uncertainty.py`` and listed in README.

Confidence interval of alpha (``alpha_ci_lo``, ``alpha_ci_hi``)
    Non-parametric bootstrap (Efron & Tibshirani 1993, ch. 13, percentile interval), as CSN (2009,
    §3.5) recommend for the uncertainty of both alpha and xmin: B resamples, with replacement, of the
    fitted eigenvalues (λ > evals_thresh), each fitted exactly as the data were (xmin search included,
    :func:`hubscan.esd.powerlaw.fit_powerlaw`); the interval is the (1 − level)/2 and (1 + level)/2
    quantiles of the B alphas. The resamples are drawn and sorted at once (one (B × m) index matrix,
    chunked at 2²⁴ elements); each fit is itself vectorised over its xmin candidates. Cost: B fits.
    ``refit_xmin=False`` keeps the fitted xmin (alpha_b = 1 + n / Σ ln(λ_b/xmin) over resampled tails:
    one matrix product, O(B·n), ~100× cheaper) but ignores the tail-choice uncertainty and
    under-covers: measured on i.i.d. Pareto samples (μ = 1.5, n = 500, 300 replicates, level 0.9)
    coverage 0.88 at the fitted xmin vs 0.92 with xmin refitted (0.92 at the true xmin).
    Coverage of the default is checked in ``tests/test_uncertainty.py``.

Goodness of fit (``ks_pvalue``; ``fit_quality`` = ``poor`` when p ≤ 0.1, else ``plausible``)
    The semi-parametric bootstrap of Clauset, Shalizi & Newman (2009, §4.1): each of B synthetic data
    sets has the size of the fitted data; each point is, with probability n_tail/n_data, drawn from the
    fitted power law above xmin (inverse CDF xmin·(1 − u)^(−1/(alpha−1))), otherwise drawn uniformly
    from the observed eigenvalues below xmin. Each synthetic set is fitted exactly as the data were
    (:func:`hubscan.esd.powerlaw.fit_powerlaw`, xmin search included) and its KS distance D_b recorded;
    p = #(D_b ≥ D) / B (a synthetic set whose fit fails counts as D_b ≥ D). CSN rule out the power law when p ≤ 0.1 (their §4.1); p's standard error is
    √(p(1−p)/B) (B = 100: ±0.03 at p = 0.1; CSN use B = 2,500 for ±0.01). Cost: B full fits.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hubscan.esd.powerlaw import EVALS_THRESH, fit_powerlaw

#: CSN's plausibility threshold for the KS p-value (§4.1: "p ≤ 0.1 rules out the power law").
PVALUE_THRESH = 0.1
_CHUNK = 1 << 24


@dataclasses.dataclass
class AlphaCI:
    """A bootstrap interval of alpha.

    Attributes
    ----------
    lo, hi : float
        Interval bounds (NaN when it cannot be computed: fewer than 2 tail points).
    level : float
        Nominal coverage, e.g. 0.95.
    samples : int
        Bootstrap resamples B.
    """

    lo: float
    hi: float
    level: float
    samples: int


def alpha_bootstrap_ci(evals: np.ndarray, xmin: float, *, level: float = 0.95, samples: int = 100,
                       seed: int = 0, refit_xmin: bool = True, evals_thresh: float = EVALS_THRESH) -> AlphaCI:
    """Percentile bootstrap interval of the CSN alpha (module docstring).

    Parameters
    ----------
    evals : ndarray of float, shape (m,)
        The ESD (any order).
    xmin : float
        The fitted tail start (used when ``refit_xmin`` is False).
    level : float
        Nominal coverage in (0, 1).
    samples : int
        Resamples B (≥ 10).
    seed : int
        Seed of ``numpy.random.default_rng``.
    refit_xmin : bool
        Refit xmin in every resample (default) or keep ``xmin``.
    evals_thresh : float
        As in the fit.

    Returns
    -------
    AlphaCI

    Raises
    ------
    ValueError
        level outside (0, 1) or samples < 10.
    """
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if samples < 10:
        raise ValueError(f"bootstrap samples must be >= 10, got {samples}")
    ev = np.asarray(evals, dtype=np.float64)
    x = ev[ev >= xmin] if not refit_xmin else np.sort(ev[ev > evals_thresh])
    if len(x) < 2 or not (math.isfinite(xmin) and xmin > 0):
        return AlphaCI(math.nan, math.nan, level, samples)
    rng = np.random.default_rng(seed)
    n = len(x)
    L = np.log(x / xmin)
    alphas = np.empty(samples)
    rows = max(1, _CHUNK // n)
    for start in range(0, samples, rows):
        idx = rng.integers(0, n, size=(min(rows, samples - start), n))   # (b, n) resample indices
        if refit_xmin:
            for j, xb in enumerate(np.sort(x[idx], axis=1)):
                fit = fit_powerlaw(xb, evals_thresh=evals_thresh)
                alphas[start + j] = fit.alpha if fit.status == "success" else math.nan
        else:
            with np.errstate(divide="ignore"):
                alphas[start:start + len(idx)] = 1.0 + n / L[idx].sum(axis=1)
    lo, hi = np.nanquantile(alphas, [(1 - level) / 2, (1 + level) / 2])
    return AlphaCI(float(lo), float(hi), level, samples)


def ks_pvalue(evals: np.ndarray, alpha: float, xmin: float, D: float, *, samples: int = 100,
              evals_thresh: float = EVALS_THRESH, seed: int = 0) -> float:
    """The CSN semi-parametric bootstrap p-value of a power-law fit (module docstring).

    Parameters
    ----------
    evals : ndarray of float, shape (m,)
        The ESD (the fit used those > ``evals_thresh``).
    alpha, xmin, D : float
        The fit of the data.
    samples : int
        Synthetic data sets B (≥ 1).
    evals_thresh : float
        As in the fit.
    seed : int

    Returns
    -------
    float
        p in [0, 1]; NaN when the fit has no tail (alpha ≤ 1 or non-finite).
    """
    if samples < 1:
        raise ValueError(f"KS bootstrap samples must be >= 1, got {samples}")
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > evals_thresh]
    if not (math.isfinite(alpha) and alpha > 1 and math.isfinite(D)) or len(x) < 2:
        return math.nan
    body = x[x < xmin]
    n_data, n_tail = len(x), int(np.count_nonzero(x >= xmin))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(samples):
        k = int(rng.binomial(n_data, n_tail / n_data)) if len(body) else n_data
        tail = xmin * (1.0 - rng.random(k)) ** (-1.0 / (alpha - 1.0))
        synth = np.concatenate([tail, rng.choice(body, n_data - k)]) if n_data > k else tail
        fit = fit_powerlaw(synth, evals_thresh=evals_thresh)
        if fit.status != "success" or fit.D >= D:
            hits += 1
    return hits / samples


def fit_quality(pvalue: float) -> str | None:
    """``plausible`` (p > 0.1), ``poor`` (p ≤ 0.1, CSN §4.1) or None when p is NaN."""
    if not math.isfinite(pvalue):
        return None
    return "poor" if pvalue <= PVALUE_THRESH else "plausible"
