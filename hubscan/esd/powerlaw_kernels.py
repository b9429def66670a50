"""The power-law fit's xmin search compiled with numba (:func:`hubscan.esd.powerlaw.fit_powerlaw` states the
method and its source): for small spectra, where numpy's per-call cost was most of a fit (~50–160 µs a layer
of ≤ 512 eigenvalues, ~15–55 µs compiled).

The search is exact: it returns the candidate xmin of smallest Kolmogorov–Smirnov distance D over the allowed
candidates (the first on ties), as the exhaustive search does. A cheap lower bound of every D (the same
maximum over at most 129 points of the tail) orders the candidates; one whose bound exceeds the best D so far
cannot win and is not computed, and a D is abandoned as soon as its running maximum exceeds the best.
D itself is computed as the numpy path and WW do, |1 − (x_j/x_i)^(1−α) − k/n| — with the C library's ``pow``,
where numpy may use its SIMD ``pow``: the two differ by an ulp in a few per cent of the values, so D by ~1e-15
relative (``tests/test_powerlaw_fit.py`` checks the chosen xmin, alpha and D against the numpy search).
"""

from __future__ import annotations

import math

import numpy as np

from hubscan.esd.compiled import compiled, load

_EPS = 2.220446049250313e-16


@compiled
def ks_search(x: np.ndarray, logx: np.ndarray, alphas: np.ndarray, lo: int, hi: int, grid_max: int,
              bounds: np.ndarray) -> tuple:
    """(i, D): the index of the best xmin candidate in [lo, hi) and its exact D, or (−1, NaN) when no
    candidate is left (every allowed tail's alpha is +∞: one repeated value).

    ``x`` ascending positive float64 (n,), ``logx`` its natural log, ``alphas`` (n − 1,) the MLE exponent of
    each candidate tail (CSN eq. 3.1); a candidate with alpha ≤ 1 (or NaN) has D = 1, as in WW's search.
    ``bounds``: a lower bound of every candidate's D (n − 1,) computed by the caller (numpy's vectorised
    ``exp`` is the faster for long spectra), or empty: computed here.
    """
    N = x.shape[0]
    hi = min(hi, N - 1)
    lo = max(lo, 0)
    cands = np.empty(max(hi - lo, 0), dtype=np.int64)
    nc = 0
    for i in range(lo, hi):
        if alphas[i] != math.inf:
            cands[nc] = i
            nc += 1
    if nc == 0:
        return -1, math.nan
    # lower bounds: the deviation at ≤ 129 points of each tail through exp/log, lowered by its rounding margin
    # (|1 − α|·eps·(|ln x_j| + |ln x_i| + 1) plus a few eps, times 4, plus 1e-12: see powerlaw._ks_lower_bound)
    grid = min(grid_max, max(16, N // 16))
    big = 0.0
    for j in range(N):
        v = abs(logx[j])
        if v > big:
            big = v
    base = 4 * _EPS * (2 * big + 1)
    lbs = np.empty(nc)
    kstar = np.zeros(nc, dtype=np.int64)  # where the bound's maximum is: the exact D is tried there first
    for c in range(nc if bounds.shape[0] == 0 else 0):
        i = cands[c]
        a = alphas[i]
        if not a > 1:
            lbs[c] = 1.0
            continue
        n = float(N - i)
        top = math.nan
        for t in range(grid + 1):
            k = int(math.floor((t / grid) * (n - 1)))
            dev = abs(1 - math.exp((1 - a) * (logx[i + k] - logx[i])) - k / n)
            if dev == dev and not (dev <= top):
                top = dev
                kstar[c] = k
        lbs[c] = top - (1e-12 + base * abs(1 - a))
    if bounds.shape[0]:
        for c in range(nc):
            lbs[c] = bounds[cands[c]]
    order = np.argsort(lbs, kind="mergesort")
    best = math.inf
    best_i = -1
    for o in range(nc):
        c = order[o]
        lb = lbs[c]
        if lb != lb:  # a tail whose every bound point is NaN: never a candidate (as the numpy search)
            continue
        if lb > best:  # sorted: no later candidate can beat best either
            break
        i = cands[c]
        a = alphas[i]
        if not a > 1:
            D = 1.0
        else:
            e = -a + 1.0
            n = float(N - i)
            xi = x[i]
            ks = kstar[c]
            D = abs(1.0 - (x[i + ks] / xi) ** e - ks / n)
            if D > best or (D == best and i > best_i):
                continue
            for k in range(N - i):
                d = abs(1.0 - (x[i + k] / xi) ** e - k / n)
                if d > D:
                    D = d
                    if D > best or (D == best and i > best_i):
                        break
        if D < best or (D == best and i < best_i):
            best, best_i = D, i
    return best_i, best


_ready = False


def ready() -> None:
    """Load the compiled search once a process (or compile it; a damaged cache is compiled again:
    :func:`hubscan.esd.compiled.load`).

    Raises
    ------
    RuntimeError
        The search cannot be loaded or compiled, naming the folder and what to do.
    """
    global _ready
    if not _ready:
        load(__name__, ks_search, _probe, "the power-law fit")
        _ready = True


def _probe() -> None:
    x = np.linspace(1.0, 4.0, 40) ** 3
    logx = np.log(x)
    alphas = np.full(39, 2.5)
    ks_search(x, logx, alphas, 0, 39, 128, np.empty(0))
    ks_search(x, logx, alphas, 0, 39, 128, np.zeros(39))
