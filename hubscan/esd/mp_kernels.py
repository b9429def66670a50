"""The MP fit's search compiled with numba: the KDE, WeightWatcher's grid and its Nelder–Mead polish in one call.

:func:`hubscan.esd.mp.fit_mp` states the method and its source; this module is its arithmetic, written as
loops that numba compiles to machine code (``cache=True``: compiled once per installation, then loaded).
A small layer's fit was ~70 residual evaluations of a few hundred KDE points, each a handful of numpy calls
at numpy's per-call floor (~0.6 ms a layer, a quarter of hubscan's time on a zoo of small models); compiled,
the same evaluations cost tens of microseconds. Imported on the first fit (numba's import takes ~0.2 s).

Every operation is the one the numpy formulation performs, in the same order, without fast-math (no
reassociation, no fused multiply-add): the KDE is bit for bit numpy's prefix-sum KDE, the residual differs
from WW's only in the order of its summation, and the Nelder–Mead steps are scipy's ``fmin``'s
(``tests/test_mp_search.py`` checks the fitted σ against WW's search, scipy's ``fmin`` included, bit for bit).
"""

from __future__ import annotations

import math

import numpy as np

from hubscan.esd.compiled import compiled as _compiled, load


@_compiled
def kde_linear(x: np.ndarray, grid: np.ndarray, bw: float) -> np.ndarray:
    """Triangular-kernel density (∫ = 1) of the sorted sample ``x`` (float64, ascending) at the ascending
    points ``grid``, as sklearn's ``KernelDensity(kernel='linear', bandwidth=bw)``: Σᵢ max(0, 1 − |g − xᵢ|/h)
    / (n·h), from prefix sums of the sample (the points within h of g are a contiguous run)."""
    n = x.shape[0]
    csum = np.zeros(n + 1)
    acc = 0.0
    for i in range(n):
        acc += x[i]
        csum[i + 1] = acc
    out = np.empty(grid.shape[0])
    lo = mid = hi = 0  # the searchsorted indices below, swept once: the grid ascends
    for k in range(grid.shape[0]):
        g = grid[k]
        while lo < n and x[lo] <= g - bw:    # first point with x > g − h
            lo += 1
        while mid < n and x[mid] <= g:       # first point with x > g
            mid += 1
        while hi < n and x[hi] < g + bw:     # first point with x ≥ g + h
            hi += 1
        n_left, n_right = mid - lo, hi - mid
        s_left, s_right = csum[mid] - csum[lo], csum[hi] - csum[mid]
        dist = (n_left * g - s_left) + (s_right - n_right * g)
        v = (n_left + n_right) - dist / bw
        out[k] = (v if v > 0 else 0.0) / (n * bw)
    return out


@_compiled
def residual(s, kx, ky, c2, Q, r, peak_x, penalty, quarter, sq):
    """WW's ``resid_mp`` of one σ: Σ over the KDE points of (ρ_MP(x) − KDE(x))², ρ_MP zero outside (λ−, λ+);
    the points outside add Σ KDE² from the prefix sums ``c2``. ``quarter`` = (A, t*, K) of the Q = 1 residual,
    a quadratic in t = 1/(π σ²): A·(t − t*)² + K; ``sq`` is scratch, as long as ``kx``."""
    if Q == 1.0:
        t = 1.0 / (math.pi * s * s) if s != 0.0 else math.inf
        return quarter[0] * (t - quarter[1]) ** 2 + quarter[2]
    lp, lm = (s * (1 + r)) ** 2, (s * (1 - r)) ** 2
    if lp < peak_x or lp > kx[kx.shape[0] - 1] or lm > peak_x:
        return penalty
    i0 = np.searchsorted(kx, lm, side="right")   # first point > λ−
    i1 = max(i0, np.searchsorted(kx, lp, side="left"))   # first point ≥ λ+
    # the squares first (into the scratch ``sq``), in a loop the compiler vectorises; then summed in order
    for i in range(i0, i1):
        x = kx[i]
        d = Q / (2 * np.pi * s ** 2 * x) * math.sqrt((lp - x) * (x - lm)) - ky[i]
        sq[i - i0] = d * d
    inside = 0.0
    for i in range(i1 - i0):
        inside += sq[i]
    return inside + (c2[c2.shape[0] - 1] - (c2[i1] - c2[i0]))


@_compiled
def fmin_1d(s0, kx, ky, c2, Q, r, peak_x, penalty, quarter, sq, xatol=1e-4, fatol=1e-4, maxfun=200, maxiter=200):
    """scipy's ``fmin(resid, [s0])`` (``_minimize_neldermead`` with its defaults: reflection 1, expansion 2,
    contraction ½, shrink ½, initial step 5 %, at most ``maxfun`` evaluations and ``maxiter`` iterations) for
    one variable, step for step, on floats instead of (2, 1) arrays; where scipy stops mid-iteration at
    ``maxfun`` evaluations, this stops at the same point. Returns the best σ."""
    x0 = s0
    x1 = (1 + 0.05) * s0 if s0 != 0 else 0.00025
    f0 = residual(x0, kx, ky, c2, Q, r, peak_x, penalty, quarter, sq)
    f1 = residual(x1, kx, ky, c2, Q, r, peak_x, penalty, quarter, sq)
    calls = 2
    if f1 < f0 or (math.isnan(f0) and not math.isnan(f1)):  # np.argsort of two: ascending, NaN last, stable
        x0, x1, f0, f1 = x1, x0, f1, f0
    iterations = 1
    while calls < maxfun and iterations < maxiter:
        if abs(x1 - x0) <= xatol and abs(f0 - f1) <= fatol:
            break
        xbar = x0
        xr = 2 * xbar - 1 * x1
        fxr = residual(xr, kx, ky, c2, Q, r, peak_x, penalty, quarter, sq)
        calls += 1
        shrink = False
        done = calls < maxfun  # False: scipy's maxfun error mid-iteration (the iteration is not counted)
        if done:  # expansion past the reflection, or a contraction outside / inside
            step = 0 if fxr < f0 else (1 if fxr < f1 else 2)
            if step == 0:
                xt = 3 * xbar - 2 * x1
            elif step == 1:
                xt = 1.5 * xbar - 0.5 * x1
            else:
                xt = 0.5 * xbar + 0.5 * x1
            ft = residual(xt, kx, ky, c2, Q, r, peak_x, penalty, quarter, sq)
            calls += 1
            if step == 0:
                x1, f1 = (xt, ft) if ft < fxr else (xr, fxr)
            elif (ft <= fxr) if step == 1 else (ft < f1):
                x1, f1 = xt, ft
            else:
                shrink = True
        if done and shrink:
            x1 = x0 + 0.5 * (x1 - x0)
            if calls >= maxfun:
                done = False
            else:
                f1 = residual(x1, kx, ky, c2, Q, r, peak_x, penalty, quarter, sq)
                calls += 1
        if done:
            iterations += 1
        if f1 < f0 or (math.isnan(f0) and not math.isnan(f1)):
            x0, x1, f0, f1 = x1, x0, f1, f0
    return x0


@_compiled
def _argmin(v):
    """``np.argmin``: the first minimum, or the first NaN when there is one."""
    best = 0
    for i in range(v.shape[0]):
        if math.isnan(v[i]):
            return i
        if v[i] < v[best]:
            best = i
    return best


@_compiled
def prepare(data: np.ndarray, kx: np.ndarray, Q: float, bw: float, thresh: float) -> tuple:
    """The residual's fixed arguments for :func:`residual` and :func:`fmin_1d`: (KDE points kept, their
    densities, prefix sums of the densities squared, Q, 1/√Q, the KDE's peak, WW's penalty, the Q = 1
    quadratic's (A, t*, K), a scratch array for the residual's terms)."""
    x = np.sort(data)
    ky_all = kde_linear(x, kx, bw)
    peak_x = kx[np.argmax(ky_all)]
    keep = ky_all > thresh
    kxg, kyg = kx[keep], ky_all[keep]
    m = kxg.shape[0]
    c2 = np.zeros(m + 1)   # Σ ky² over kx[:i]
    acc = 0.0
    for i in range(m):
        acc += kyg[i] * kyg[i]
        c2[i + 1] = acc
    penalty = m * 1000.0 ** 2  # WW's penalty for an edge left of the peak / off the support
    r = 1 / math.sqrt(Q)
    quarter = np.zeros(3)
    if Q == 1.0:  # quarter-circle law of the singular values, nonzero on [0, 2): a quadratic in 1/(π σ²)
        q1 = np.searchsorted(kxg, 2.0, side="left")
        aa = ay = yy = 0.0
        for i in range(q1):
            v = 4 - kxg[i] ** 2
            a = math.sqrt(v if v > 0 else 0.0)
            aa += a * a
            ay += a * kyg[i]
            yy += kyg[i] * kyg[i]
        quarter[0] = aa
        quarter[1] = ay / aa if aa > 0 else 0.0
        quarter[2] = yy - aa * quarter[1] * quarter[1] + (c2[m] - c2[q1])
    return kxg, kyg, c2, Q, r, peak_x, penalty, quarter, np.empty(m)


@_compiled
def mp_search(data: np.ndarray, kx: np.ndarray, grid: np.ndarray, Q: float, bw: float, thresh: float,
              coarse: int) -> tuple:
    """(index of the best grid σ, fitted MP scale σ), as WW 0.7.7's ``fit_density_with_range``
    (:func:`hubscan.esd.mp.fit_mp` states the method): the KDE of ``data`` (the rescaled eigenvalues, or for
    Q = 1 their square roots; any order) on the points ``kx``, the points whose density exceeds ``thresh`` kept,
    the best σ of ``grid`` (every ``coarse``-th first, then every σ within ``coarse`` steps of the best of
    those) polished by Nelder–Mead.

    The coarse-to-fine search finds the grid's argmin when the residual over σ is one basin at the grid's
    resolution (the KDE is smooth at bandwidth 0.1; the penalised σ plateau on either side): the same index as
    evaluating every σ on all 8,267 distinct matrices of MiniLM and the transformers zoo and on every spectrum of
    ``tests/test_mp_search.py``, for about a quarter of the evaluations. (A second basin narrower than the coarse
    step and deeper than the first would be missed; WW's own 0.01·s grid misses basins narrower than its step.)
    """
    kxg, kyg, c2, Q, r, peak_x, penalty, quarter, sq = prepare(data, kx, Q, bw, thresh)
    n = grid.shape[0]
    coarse_vals = np.empty((n + coarse - 1) // coarse)
    for j in range(coarse_vals.shape[0]):
        coarse_vals[j] = residual(grid[j * coarse], kxg, kyg, c2, Q, r, peak_x, penalty, quarter, sq)
    c = _argmin(coarse_vals) * coarse
    lo, hi = max(0, c - coarse), min(n, c + coarse + 1)
    fine = np.empty(hi - lo)
    for j in range(lo, hi):
        fine[j - lo] = residual(grid[j], kxg, kyg, c2, Q, r, peak_x, penalty, quarter, sq)
    start = grid[lo + _argmin(fine)]
    return lo + _argmin(fine), fmin_1d(start, kxg, kyg, c2, Q, r, peak_x, penalty, quarter, sq)


_ready = False


def ready() -> None:
    """Load the compiled search once a process (or compile it), on a small spectrum of each law (Q > 1, Q = 1).

    A cache numba cannot read — a damaged or truncated file in it, which would fail every fit — is removed
    (this module's files only; numba writes them again) and the search compiled anew, with a warning naming
    the folder.

    Raises
    ------
    RuntimeError
        The search still cannot be loaded or compiled (e.g. a damaged cache in a folder this process may not
        change), naming the folder and what to do.
    """
    global _ready
    if _ready:
        return
    load(__name__, mp_search, _probe, "the MP fit")
    _ready = True


def _probe() -> None:
    kx = np.linspace(0.0, 3.0, 1000)
    grid = np.arange(0.05, 2.0, 0.01)
    for Q in (4.0, 1.0):
        mp_search(np.linspace(0.2, 2.5, 32), kx, grid, Q, 0.1, 0.01, 8)
