"""Power-law fits of the ESD tail.

Default fitter: the continuous maximum-likelihood power law of Clauset, Shalizi & Newman (2009,
SIAM Review 51:661, eqs. 3.1 and 3.7 and §3.3), with xmin chosen to minimise the Kolmogorov–Smirnov
distance D — exactly WeightWatcher 0.7.7's default ``WWFit`` (identical to powerlaw 1.5's
``Fit(data)``):

* data = eigenvalues > ``evals_thresh`` (1e-5, an absolute threshold, as WW), sorted;
* candidates xmin = every data point but the largest; for candidate i, tail size n = len − i:
  alpha_i = 1 + n / (Σ_{j≥i} ln x_j − n ln x_i)                                   (CSN eq. 3.1)
  D_i = max_{k=0..n−1} | 1 − (x_{i+k}/x_i)^(1−alpha_i) − k/n |, D_i = 1 when alpha_i ≤ 1
* xmin = x_i at the first argmin of D; sigma = (alpha − 1)/√n                       (CSN eq. 3.2)

The suffix log-sums give every alpha at once (numpy); the xmin search runs compiled
(:mod:`hubscan.esd.powerlaw_kernels`, numba). Exact pruning: a lower bound of every D_i from 129 points
of its tail (a maximum over a subset never exceeds the maximum over all) orders the candidates and
discards those whose bound exceeds the best D found, and a D is abandoned once its running maximum
exceeds it; the rest are computed exactly, so the result is the full search's (ties → first index, as
``np.argmin``). D is evaluated with the C library's ``pow``: numpy's own search (kept as
:func:`_fit_sorted_numpy`, the tests' reference) may use a SIMD ``pow`` differing by an ulp, so D agrees
with it to ~1e-15 relative and xmin, alpha exactly (1,212 fits in ``tests/test_powerlaw_fit.py``).

Degenerate spectra (:func:`degenerate_reason`): fewer than 2 eigenvalues above the threshold (rank
collapse), none above it, or all of them equal to within 1e-3 relative give a failed fit with the
reason and ``degenerate=True``, never an exception (WW fits alpha ≈ 1e6 to the equal-up-to-rounding
eigenvalues of an orthogonal matrix stored in float32).

Small samples: WW 0.7.7 switches to a bias-corrected estimator with a different xmin objective when
fewer than 20 eigenvalues pass the threshold (and prints "SMALL N PL FIT"). hubscan keeps the
standard CSN estimator at every size — one definition everywhere, the one powerlaw.Fit uses — and
reports ``num_fit_evals`` so small fits (< 20) can be filtered out; their alpha differs from WW's.

Options (each broken in WW 0.7.7 under powerlaw 2.0, where these paths return alpha = −1):

* ``xmin_peak`` (WW ``fix_fingers='xmin_peak'``): xmin restricted to [0.95·p, 1.5·p] where p is the
  left edge of the most populated of 100 log10-spaced histogram bins of the ESD. (WW passes
  ``(log10(0.95 p), 1.5 p)`` to powerlaw — a log/linear mix-up; hubscan uses the evident intent.)
* ``clip_xmax`` (WW ``fix_fingers='clip_xmax'``, Martin & Mahoney's "fingers"): refit with the
  k = 1 … max_fingers−1 largest eigenvalues removed; the first k whose alpha drops by more than
  ``finger_thresh`` (1.0) below the unclipped alpha is kept (num_fingers = k); stop early when alpha
  ≤ 2. (WW starts at k = 2 and reports k − 1.)
* ``tpl``: truncated power law p(x) ∝ x^(−alpha) e^(−Lambda x), x ≥ xmin, fitted by maximum
  likelihood at the power law's xmin (as powerlaw's ``Fit.truncated_power_law``; Clauset et al.
  2009 Table 2 / appendix). Normalisation by numerical quadrature.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: WW's ``EVALS_THRESH``: eigenvalues at or below it are left out of the fit.
EVALS_THRESH = 1e-5
#: Below this many fitted eigenvalues WW 0.7.7 uses its small-sample variant.
SMALL_N = 20
#: Eigenvalues above the threshold all within this relative spread are "equal": no tail to fit
#: (:func:`degenerate_reason`).
EQUAL_RTOL = 1e-3
_GRID = 128                      # lower-bound sample points per candidate (+1)
_BLOCK_ELEMS = 1 << 21           # elements of one 2-D block of the exact D computation
_EXACT_ALL = 128                 # spectra of at most this many eigenvalues: exact D for every candidate (165 → 101 µs a fit on the zoo)
#: Spectra longer than this get the compiled search's lower bounds from numpy (scalar exp in the compiled
#: loop costs more than numpy's vectorised one there; measured, Student-t spectra: 768 eigenvalues 314 µs
#: compiled bounds vs numpy's search 366 µs; 384: 98 vs 187 µs).
_COMPILED_BOUNDS = 512
_NO_BOUNDS = np.empty(0)


@dataclasses.dataclass
class PowerLawFit:
    """Result of a power-law fit of an ESD tail.

    Attributes
    ----------
    alpha : float
        Exponent of p(λ) ∝ λ^(−alpha) for λ ≥ xmin (NaN when the fit failed).
    xmin, xmax : float
        Tail start (chosen by min D) and the largest eigenvalue fitted.
    D : float
        Kolmogorov–Smirnov distance of the fitted tail.
    sigma : float
        Standard error (alpha − 1)/√n.
    num_pl_spikes : int
        Eigenvalues ≥ xmin (the tail size n).
    num_fit_evals : int
        Eigenvalues above the threshold that entered the fit.
    status : str
        ``success`` or ``failed``.
    reason : str
        Why it failed ("" on success).
    degenerate : bool
        The spectrum has no tail at all (rank collapse, every eigenvalue below the threshold, all equal):
        a measurement of the spectrum, not a failure of the fitter (:func:`degenerate_reason`).
    fix_fingers : str
        ``""``, ``xmin_peak`` or ``clip_xmax``.
    num_fingers : int
        Eigenvalues clipped (``clip_xmax`` only).
    raw_alpha : float
        The unclipped alpha (``clip_xmax`` only, else NaN).
    Lambda : float
        Truncation rate of the TPL fit (NaN unless ``tpl``).
    """

    alpha: float = math.nan
    xmin: float = math.nan
    xmax: float = math.nan
    D: float = math.nan
    sigma: float = math.nan
    num_pl_spikes: int = 0
    num_fit_evals: int = 0
    status: str = "failed"
    reason: str = ""
    degenerate: bool = False
    fix_fingers: str = ""
    num_fingers: int = 0
    raw_alpha: float = math.nan
    Lambda: float = math.nan


def _alphas(x: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """alpha_i for every candidate i = 0 … len−2 (CSN eq. 3.1)."""
    n = (len(x) - np.arange(len(x) - 1)).astype(np.float64)
    suffix = np.cumsum(logx[::-1])[::-1][:-1]          # Σ_{j≥i} ln x_j
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 + n / (suffix - n * logx[:-1])


def _ks_exact(x: np.ndarray, alphas: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """D_i for the candidate indices ``cand`` (sorted ascending), computed as WW does."""
    N = len(x)
    out = np.ones(len(cand))
    ok = alphas[cand] > 1
    idx_all = cand[ok]
    res = np.ones(len(idx_all))
    pos = 0
    while pos < len(idx_all):
        width = N - idx_all[pos]                          # longest tail in this block
        rows = max(1, _BLOCK_ELEMS // width)
        block = idx_all[pos:pos + rows]
        k = np.arange(width)
        j = block[:, None] + k[None, :]
        valid = j < N
        n = (N - block).astype(np.float64)[:, None]
        ratio = x[np.minimum(j, N - 1)] / x[block][:, None]
        with np.errstate(over="ignore", invalid="ignore"):
            dev = np.abs(1 - ratio ** (-alphas[block][:, None] + 1) - k[None, :] / n)
        dev[~valid] = 0.0
        res[pos:pos + len(block)] = dev.max(axis=1)
        pos += len(block)
    out[ok] = res
    return out


def _ks_lower_bound(x: np.ndarray, logx: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """A lower bound of every D_i: the same maximum over at most 129 points of each tail.

    The grid has min(128, max(16, n/16)) steps (fewer points for small spectra, where the bound
    costs as much as the exact search); the power is evaluated as exp((1−α)(ln x_j − ln x_i)), which
    differs from the exact path's (x_j/x_i)^(1−α) by rounding: at most |1−α|·eps·(|ln x_j| + |ln x_i| + 1)
    plus a few eps (both powers are ≤ 1). The bound is lowered by that margin (times 4) plus 1e-12, so
    rounding can never lift it above the exact D and the pruning stays exact — also for the huge alphas
    of near-equal data (α ≈ 1e6 on an orthogonal matrix stored in float32, where a fixed 1e-12 margin
    pruned every candidate).
    """
    N = len(x)
    grid = int(min(_GRID, max(16, N // 16)))
    i = np.arange(N - 1)
    n = (N - i).astype(np.float64)
    t = np.arange(grid + 1) / grid
    k = np.floor(t[None, :] * (n[:, None] - 1)).astype(np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        dev = np.abs(1 - np.exp((1 - alphas[:, None]) * (logx[i[:, None] + k] - logx[:-1, None])) - k / n[:, None])
    # np.nanmax's result (NaN for an all-NaN row, e.g. tied data), without its warning on such rows
    some = ~np.isnan(dev).all(axis=1)
    lb = np.full(len(dev), np.nan)
    margin = 1e-12 + 4 * np.finfo(np.float64).eps * np.abs(1 - alphas) * (2 * float(np.abs(logx).max()) + 1)
    lb[some] = np.nanmax(dev[some], axis=1) - margin[some]
    lb[~(alphas > 1)] = 1.0
    return lb


def _fit_sorted(x: np.ndarray, lo: int = 0, hi: int | None = None) -> tuple[int, float, float] | None:
    """Fit sorted positive data; xmin candidates restricted to indices [lo, hi). Returns (i, alpha, D),
    or None when no candidate is left (every allowed tail is one repeated value).

    The candidate of smallest exact D (first on ties), found by the compiled search
    (:func:`hubscan.esd.powerlaw_kernels.ks_search`); spectra longer than :data:`_COMPILED_BOUNDS` get its
    lower bounds from numpy (:func:`_ks_lower_bound`, vectorised)."""
    from hubscan.esd import powerlaw_kernels  # numba: imported on the first fit

    powerlaw_kernels.ready()
    logx = np.log(x, dtype=np.float64)
    alphas = _alphas(x, logx)
    hi = len(x) - 1 if hi is None else min(hi, len(x) - 1)
    bounds = _ks_lower_bound(x, logx, alphas) if len(x) > _COMPILED_BOUNDS else _NO_BOUNDS
    i, D = powerlaw_kernels.ks_search(x, logx, alphas, lo, hi, _GRID, bounds)
    return None if i < 0 else (int(i), float(alphas[i]), float(D))


def _fit_sorted_numpy(x: np.ndarray, lo: int = 0, hi: int | None = None) -> tuple[int, float, float] | None:
    """:func:`_fit_sorted` in numpy alone (the reference ``tests/test_powerlaw_fit.py`` compares it with)."""
    logx = np.log(x, dtype=np.float64)
    alphas = _alphas(x, logx)
    hi = len(x) - 1 if hi is None else min(hi, len(x) - 1)
    allowed = np.zeros(len(x) - 1, dtype=bool)
    allowed[lo:hi] = True
    if len(x) <= _EXACT_ALL:  # small spectra: every candidate's exact D costs less than bounding them
        cand = np.flatnonzero(allowed & ~np.isposinf(alphas))
        if len(cand) == 0:
            return None
        D = _ks_exact(x, alphas, cand)
        k = int(np.argmin(D))                              # first on ties, as below
        return int(cand[k]), float(alphas[cand[k]]), float(D[k])
    lb = _ks_lower_bound(x, logx, alphas)
    lb[~allowed] = np.inf
    lb[np.isposinf(alphas)] = np.inf  # a tail of one repeated value (alpha = ∞): no power law, no candidate
    order = np.argsort(lb, kind="stable")
    seed = np.sort(order[:8])
    seed = seed[np.isfinite(lb[seed])]
    if len(seed) == 0:
        return None
    d_seed = _ks_exact(x, alphas, seed)
    best = float(d_seed.min())
    # every i with D_i ≤ best survives (the seed that gave best always does, even were a bound off)
    cand = np.union1d(np.flatnonzero(lb <= best), seed[d_seed <= best])
    D = _ks_exact(x, alphas, cand)
    k = int(np.argmin(D))                                  # first on ties
    return int(cand[k]), float(alphas[cand[k]]), float(D[k])


def _result(x: np.ndarray, evals: np.ndarray, found: tuple[int, float, float] | None) -> PowerLawFit:
    if found is None:
        return PowerLawFit(num_fit_evals=len(x), reason="no xmin candidate: every allowed tail is one repeated value")
    i, alpha, D = found
    n = len(x) - i
    xmin = float(x[i])
    return PowerLawFit(alpha=alpha, xmin=xmin, xmax=float(x[-1]), D=D,
                       sigma=(alpha - 1) / math.sqrt(n), num_pl_spikes=int(np.count_nonzero(evals >= xmin)),
                       num_fit_evals=len(x), status="success")


def fit_powerlaw(evals: np.ndarray, *, evals_thresh: float = EVALS_THRESH, fix_fingers: str = "",
                 max_fingers: int = 10, finger_thresh: float = 1.0, tpl: bool = False,
                 units_exp: int = 0) -> PowerLawFit:
    """Fit a power law to the tail of an ESD.

    Parameters
    ----------
    evals : ndarray of float, shape (n,)
        Eigenvalues (any order).
    evals_thresh : float
        Eigenvalues ≤ this are left out (WW: 1e-5, absolute).
    fix_fingers : {"", "xmin_peak", "clip_xmax"}
        See the module docstring.
    max_fingers, finger_thresh : int, float
        ``clip_xmax`` settings (WW defaults 10 and 1.0).
    tpl : bool
        Also fit a truncated power law at the chosen xmin (fills ``Lambda``; ``alpha`` becomes the
        TPL exponent, as WW's ``fit='TPL'``).
    units_exp : int
        ``evals`` are in units of 4^units_exp (W decomposed as W·2^−k beyond float64's range,
        :mod:`hubscan.esd.eigen` "Range"); ``evals_thresh`` is in W's units, compared in theirs, and
        a reason quotes values in W's units.

    Returns
    -------
    PowerLawFit
        ``status == "failed"`` with a ``reason`` (and NaN numbers) when no fit is possible; never
        raises for any finite input. ``degenerate`` is set when the spectrum itself has no tail
        (:func:`degenerate_reason`); otherwise the failure is the option's (no eigenvalue near the peak,
        every candidate tail in the allowed range one repeated value).

    Raises
    ------
    ValueError
        Unknown ``fix_fingers``.
    """
    evals = np.asarray(evals, dtype=np.float64)
    thresh = evals_thresh
    if units_exp:
        with np.errstate(over="ignore", under="ignore"):
            thresh = float(np.ldexp(evals_thresh, -2 * units_exp))  # inf: every eigenvalue below it
    x = np.sort(evals[evals > thresh])
    why = degenerate_reason(evals, x, evals_thresh, units_exp)
    if why:
        return PowerLawFit(num_fit_evals=len(x), reason=why, degenerate=True)
    if fix_fingers == "clip_xmax":
        return _fit_clipped(x, evals, max_fingers, finger_thresh, tpl)
    if fix_fingers == "xmin_peak":
        counts, edges = np.histogram(np.log10(x), bins=100)
        peak = 10 ** edges[int(np.argmax(counts))]
        lo = int(np.searchsorted(x, 0.95 * peak, side="left"))
        hi = int(np.searchsorted(x, 1.5 * peak, side="right"))
        if hi <= lo:
            return PowerLawFit(num_fit_evals=len(x), fix_fingers=fix_fingers,
                               reason="no eigenvalue near the ESD peak")
        fit = _result(x, evals, _fit_sorted(x, lo, hi))
        fit.fix_fingers = fix_fingers
    elif fix_fingers:
        raise ValueError(f"unknown fix_fingers {fix_fingers!r} (use '', 'xmin_peak' or 'clip_xmax')")
    else:
        fit = _result(x, evals, _fit_sorted(x))
    if tpl and fit.status == "success":
        _add_tpl(fit, x)
    return fit


def degenerate_reason(evals: np.ndarray, x: np.ndarray, evals_thresh: float, units_exp: int = 0) -> str:
    """Why a spectrum has no tail to fit ("" when it has one).

    * no eigenvalue above the threshold although some are positive: "all eigenvalues below the threshold";
    * fewer than 2 above it: "rank collapse: k nonzero eigenvalue(s)" (k = 0 for a zero matrix);
    * all of them equal (a scaled orthogonal matrix, c·I): "all nonzero eigenvalues are equal";
    * all of them within :data:`EQUAL_RTOL` (1e-3) of each other, x_max ≤ x_min·(1 + 1e-3): then every
      candidate alpha exceeds 1 + 1/ln(1.001) ≈ 1001, since α_i − 1 = n/Σ ln(x_j/x_i) ≥ 1/ln(x_max/x_min)
      — no heavy tail, only the rounding of stored weights (an orthogonal matrix stored in float32 spreads
      its equal eigenvalues by 1e-6–4e-6, where WW's ``WWFit`` returns alpha ≈ 1e6).

    Parameters
    ----------
    evals : ndarray of float64, shape (n,)
        The whole ESD.
    x : ndarray of float64, shape (m,)
        Its eigenvalues above the threshold, ascending.
    evals_thresh : float
        The threshold, in W's units.
    units_exp : int
        ``evals`` and ``x`` are in units of 4^units_exp (:func:`fit_powerlaw`): quoted in W's units.
    """
    if not len(x):
        top = float(evals.max()) if len(evals) else 0.0
        if top > 0:
            return f"all eigenvalues below the threshold {evals_thresh:g} (lambda_max = {_quoted(top, units_exp)})"
    if len(x) < 2:
        return f"rank collapse: {len(x)} nonzero eigenvalue{'' if len(x) == 1 else 's'} (above {evals_thresh:g})"
    if not np.isfinite(x[-1]):
        return "non-finite eigenvalues"
    if x[0] == x[-1]:
        return "all nonzero eigenvalues are equal: no tail to fit"
    if x[-1] <= x[0] * (1 + EQUAL_RTOL):
        return (f"all nonzero eigenvalues equal to within {x[-1] / x[0] - 1:.1e} (< {EQUAL_RTOL:g} relative): "
                "no tail to fit (any alpha > 1000)")
    return ""


def _quoted(value: float, units_exp: int) -> str:
    """``value · 4^units_exp`` to 3 significant digits, also beyond float64's range (``6.34e-400``)."""
    if not units_exp:
        return f"{value:.3g}"
    e = math.log10(value) + 2 * units_exp * math.log10(2)
    whole = math.floor(e)
    mantissa = float(f"{10 ** (e - whole):.3g}")
    if mantissa >= 10:  # rounded up to the next power of ten
        mantissa, whole = mantissa / 10, whole + 1
    return f"{mantissa:.3g}e{whole:+03d}"


def _fit_clipped(x, evals, max_fingers, finger_thresh, tpl) -> PowerLawFit:
    first = _result(x, evals, _fit_sorted(x))
    best, fingers = first, 0
    for k in range(1, max(1, max_fingers)):
        if len(x) - k < 3 or x[0] == x[-k - 1]:  # too few left, or only one repeated value
            break
        fit = _result(x[:-k], evals, _fit_sorted(x[:-k]))
        if fit.alpha + finger_thresh < first.alpha:
            best, fingers = fit, k
            break
        if fit.alpha <= 2.0:
            break
    best.fix_fingers, best.num_fingers, best.raw_alpha = "clip_xmax", fingers, first.alpha
    if tpl:
        _add_tpl(best, x[: len(x) - fingers])
    return best


def _add_tpl(fit: PowerLawFit, x: np.ndarray) -> None:
    """Truncated power law MLE at fixed xmin: maximise −alpha Σln x − Lambda Σx − n ln Z."""
    from scipy import integrate, optimize

    tail = x[x >= fit.xmin]
    xmin = fit.xmin
    n, slog, sx = len(tail), float(np.log(tail / xmin).sum()), float((tail / xmin).sum())

    def log_z(a: float, lam: float) -> float:
        # Z/xmin^(1-a) = ∫_0^∞ exp((1−a)t − lam·e^t) dt, x = xmin·e^t (lam in units of 1/xmin)
        # quad samples t up to ~1e300 on [0, ∞): e^t overflows past t ≈ 709, where the integrand is
        # 0 for any lam > 0 (an unguarded OverflowError made every evaluation fail).
        f = lambda t: 0.0 if t > 700.0 else math.exp((1 - a) * t - lam * math.expm1(t))
        val, _ = integrate.quad(f, 0, np.inf, limit=200)
        return math.log(val) - lam

    def nll(p):
        a, log_lam = p
        try:
            lam = math.exp(log_lam)
            if a <= 1 and lam < 1e-12:
                return 1e300
            return a * slog + lam * sx + n * log_z(a, lam)
        except (OverflowError, ValueError, ZeroDivisionError):
            return 1e300

    start = [max(fit.alpha, 1.01), math.log(1e-3)]
    res = optimize.minimize(nll, start, method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    a, log_lam = res.x
    fit.alpha = float(a)
    fit.Lambda = float(np.exp(log_lam) / xmin)
