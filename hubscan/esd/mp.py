"""Marchenko–Pastur (MP) bulk fit of an ESD and the spikes beyond its edge.

Follows WeightWatcher 0.7.7's ``mp_fit`` (``fit_density_with_range`` / ``resid_mp``), with its
scikit-learn kernel density replaced by the same estimator written in numpy:

1. Rescale the eigenvalues to mean 1: λ' = λ · n/Σλ (WW ``rescale``; W_scale² = n/Σλ).
2. Empirical density: a linear-kernel (triangular) KDE with bandwidth 0.1 on 1000 points of
   [0, max λ' + 0.5]; points where it is < 0.01 are left out (WW's residual).
3. Fit the MP scale σ by brute force over [0.05 s, 2 s) in steps of 0.01 s, s = sqrt(λ'_max)/(1 + 1/√Q)
   (``scipy.optimize.brute``, polished with its Nelder–Mead ``fmin``, as WW), minimising the squared
   difference between the MP density (Marchenko & Pastur 1967; Martin & Mahoney JMLR 2021 eq. 8)
   ρ(λ) = Q/(2π σ² λ) · sqrt((λ+ − λ)(λ − λ−)), λ± = σ²(1 ± 1/√Q)², and the KDE. A σ whose
   λ+ lies left of the KDE's peak or right of its support, or whose λ− lies right of the peak,
   scores 1000 per point. For Q = 1 the quarter-circle law of the singular values is fitted.
4. Spikes: eigenvalues λ' > λ+ + sqrt(TW), TW = Q^(−1/2) · λ+^(2/3) · M^(−2/3) (WW's Tracy–Widom
   margin). ``mp_softrank`` = λ+/λ'_max (Martin & Mahoney JMLR 2021 §4).

``lambda_plus`` and ``lambda_minus`` are reported in the units of the input eigenvalues.

Cost: WW evaluates the residual on all ~1000 KDE points for each of the ~195 grid values of σ and each
Nelder–Mead step. Here the penalised σ cost nothing, and a σ's residual reads only the KDE points
inside its bulk (λ−, λ+) — the rest add Σ ky² from prefix sums — so the search costs the bulk's
points per σ, not the grid's; the Nelder–Mead polish is scipy's ``fmin`` step for step on floats
(:func:`_fmin_1d`), and the grid's argmin is found coarse to fine (:meth:`_Residual.grid_argmin`:
about 42 of the 195 σ evaluated). The same start point and the same comparisons: σ equal bit for bit to
the full evaluation with scipy's ``fmin`` on all-MiniLM-L6-v2's 39 matrices and 869 of the transformers
zoo's (the residuals differ only in the order of summation; ``tests/test_mp_search.py``); CPU time, one
thread: MiniLM 91 → 47 → 13 ms, a 64-wide zoo layer 3.7 → 1.5 → 0.46 ms. For Q = 1 (square matrices: the
quarter-circle law) the residual is a quadratic in 1/(π σ²) whose three coefficients are sums over the KDE
points, so a σ costs O(1): the search then costs the KDE alone (a zoo layer 323 → 145 µs; σ bit for bit the
same on the 1,778 square matrices of a quarter of the zoo).
"""

from __future__ import annotations

import bisect
import dataclasses
import math

import numpy as np

_BW = 0.1
_KDE_POINTS = 1000
_KDE_THRESH = 0.01
#: The grid search's coarse step, in grid points (:meth:`_Residual.grid_argmin`).
_COARSE = 8


@dataclasses.dataclass
class MPFit:
    """Result of an MP bulk fit.

    Attributes
    ----------
    sigma_mp : float
        Fitted MP scale σ of the mean-1 rescaled ESD (1 for a purely random W).
    lambda_plus, lambda_minus : float
        Bulk edges σ²(1 ± 1/√Q)² in the input's units.
    num_spikes : int
        Eigenvalues beyond λ+ plus the Tracy–Widom margin.
    mp_softrank : float
        λ+/λ_max, in (0, 1] when λ_max is past the edge.
    W_scale : float
        sqrt(n/Σλ), the rescaling of W applied before the fit.
    """

    sigma_mp: float
    lambda_plus: float
    lambda_minus: float
    num_spikes: int
    mp_softrank: float
    W_scale: float


def _kde_linear(data: np.ndarray, grid: np.ndarray, bw: float) -> np.ndarray:
    """Triangular-kernel density (∫ = 1), as sklearn's ``KernelDensity(kernel='linear')``.

    Σᵢ max(0, 1 − |g − xᵢ|/h) over the points within h of g, from prefix sums of the sorted data:
    O(n log n + grid · log n) instead of a dense grid × n array.
    """
    x = np.sort(np.asarray(data, dtype=np.float64))
    csum = np.concatenate(([0.0], np.cumsum(x)))
    lo = np.searchsorted(x, grid - bw, side="right")   # first point with x > g − h
    mid = np.searchsorted(x, grid, side="right")       # first point with x > g
    hi = np.searchsorted(x, grid + bw, side="left")    # first point with x ≥ g + h
    n_left, n_right = mid - lo, hi - mid
    s_left, s_right = csum[mid] - csum[lo], csum[hi] - csum[mid]
    dist = (n_left * grid - s_left) + (s_right - n_right * grid)   # Σ |g − xᵢ| over the window
    out = (n_left + n_right) - dist / bw
    return np.clip(out, 0, None) / (len(x) * bw)


class _Residual:
    """WW's ``resid_mp`` (sum of squares between the MP density and the KDE) for a vector of σ values.

    The MP density is zero outside (λ−, λ+), so only the KDE points inside the edges are evaluated; the
    others add Σ ky² over them, read from prefix sums. The cost of a σ is the number of KDE points in
    its bulk, not the whole grid (WW evaluates every point for every σ); the values are WW's up to the
    order of the summation.
    """

    def __init__(self, kx: np.ndarray, ky: np.ndarray, Q: float, peak_x: float):
        self.kx, self.ky, self.Q, self.peak_x = kx, ky, Q, peak_x
        self._lists = None  # kx and c2 as Python lists, made on the first scalar call
        self.c2 = np.concatenate(([0.0], np.cumsum(ky * ky)))   # Σ ky² over kx[:i]
        self.penalty = len(ky) * 1000.0 ** 2  # WW's penalty for an edge left of the peak / off the support
        self.r = 1 / math.sqrt(Q)
        if Q == 1:  # quarter-circle law of the singular values: nonzero on [0, 2)
            # ρ_s(x) = a(x)·t, a = sqrt(4 − x²), t = 1/(π s²): the residual is a quadratic in t,
            # A·(t − t*)² + K with A = Σa², t* = Σa·ky / A, K = Σky² − A·t*² (every KDE point), so a σ costs
            # O(1), not the KDE's points. K is σ's constant: comparisons between σ read A·(t − t*)², exact to a
            # few ulp (WW's sum over the points rounds at least as much).
            q1 = int(np.searchsorted(kx, 2.0, side="left"))
            a, y = np.sqrt(np.clip(4 - kx[:q1] ** 2, 0, None)), ky[:q1]
            self.q_a = float(np.dot(a, a))
            self.q_t = float(np.dot(a, y)) / self.q_a if self.q_a > 0 else 0.0
            self.q_k = float(np.dot(y, y)) - self.q_a * self.q_t * self.q_t + float(self.c2[-1] - self.c2[q1])

    def scalar(self, sigma) -> float:
        """The residual of one σ (Nelder–Mead's calls): the same arithmetic on slices, no batching; the
        edges found with ``bisect`` on Python floats and the prefix sums read as Python floats (the same
        indices and the same IEEE operations as ``np.searchsorted`` and numpy scalars, without their
        per-call dispatch: this runs ~35 times a layer)."""
        s = float(sigma) if isinstance(sigma, float) else float(np.asarray(sigma).reshape(-1)[0])
        if self.Q == 1:
            t = 1 / (math.pi * s * s) if s else math.inf  # σ = 0: an infinite density, as numpy divides
            return self.q_a * (t - self.q_t) ** 2 + self.q_k
        if self._lists is None:
            self._lists = (self.kx.tolist(), self.c2.tolist())
        kxl, c2 = self._lists
        lp, lm = (s * (1 + self.r)) ** 2, (s * (1 - self.r)) ** 2
        if lp < self.peak_x or lp > kxl[-1] or lm > self.peak_x:
            return self.penalty
        i0 = bisect.bisect_right(kxl, lm)
        i1 = max(i0, bisect.bisect_left(kxl, lp))
        x = self.kx[i0:i1]
        d = self.Q / (2 * np.pi * s ** 2 * x) * np.sqrt((lp - x) * (x - lm)) - self.ky[i0:i1]
        return float(np.dot(d, d)) + (c2[-1] - (c2[i1] - c2[i0]))

    def grid_argmin(self, grid: np.ndarray) -> int:
        """The index of the smallest residual on ``grid`` (WW's brute-force start point), searched coarse to
        fine: every :data:`_COARSE`-th σ, then every σ within :data:`_COARSE` steps of the best of those.

        The residual over σ is one basin at the grid's resolution (the KDE is smooth at bandwidth 0.1,
        the penalised σ form plateaus on either side), so the fine pass finds the grid's argmin: the same
        index as ``np.argmin(self(grid))`` on all 8,267 distinct matrices of MiniLM and the transformers
        zoo and on every spectrum of ``tests/test_mp_search.py``, for about a quarter of the evaluations.
        (A second basin narrower than the coarse step and deeper than the first would be missed; WW's
        own 0.01·s grid misses basins narrower than its step in the same way.)"""
        c = int(np.argmin(self(grid[::_COARSE]))) * _COARSE
        lo, hi = max(0, c - _COARSE), min(len(grid), c + _COARSE + 1)
        return lo + int(np.argmin(self(grid[lo:hi])))

    def __call__(self, sigmas) -> np.ndarray:
        s = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
        kx, ky, Q, c2 = self.kx, self.ky, self.Q, self.c2
        if Q == 1:
            return self.q_a * (1 / (np.pi * s * s) - self.q_t) ** 2 + self.q_k
        r = self.r
        lp, lm = (s * (1 + r)) ** 2, (s * (1 - r)) ** 2
        out = np.full(len(s), self.penalty)
        ok = ~((lp < self.peak_x) | (lp > kx[-1]) | (lm > self.peak_x))
        if not ok.any():
            return out
        s, lp, lm = s[ok], lp[ok], lm[ok]
        i0 = np.searchsorted(kx, lm, side="right")   # first point > λ−
        i1 = np.searchsorted(kx, lp, side="left")    # first point ≥ λ+
        n = np.maximum(i1 - i0, 0)
        first = np.cumsum(n) - n
        idx = np.arange(int(n.sum())) - np.repeat(first - i0, n)   # the inside points of every σ, one run each
        x, sg = kx[idx], np.repeat(s, n)
        ymp = Q / (2 * np.pi * sg ** 2 * x) * np.sqrt((np.repeat(lp, n) - x) * (x - np.repeat(lm, n)))
        d = ymp - ky[idx]
        inside = np.zeros(len(s))
        has = n > 0
        if has.any():
            inside[has] = np.add.reduceat(d * d, first[has])
        out[ok] = inside + (c2[-1] - (c2[i1] - c2[np.minimum(i0, i1)]))
        return out


def _fmin_1d(f, x0: float, xatol: float = 1e-4, fatol: float = 1e-4, maxfun: int = 200) -> float:
    """``scipy.optimize.fmin(f, [x0], disp=False)[0]`` for a function of one variable: the same Nelder–Mead
    steps (scipy's ``_minimize_neldermead`` with its defaults: reflection 1, expansion 2, contraction ½,
    shrink ½, initial step 5 %, at most 200 evaluations and iterations) and the same float operations,
    on Python floats instead of (2, 1) arrays — scipy's per-step array work was half the MP fit's time on
    small layers. ``tests/test_mp_search.py`` checks it against scipy bit for bit.
    """
    calls = 0

    def func(x):
        nonlocal calls
        if calls >= maxfun:
            raise _MaxCalls
        calls += 1
        return float(f(x))

    def order(sim, fsim):  # np.argsort of two values: ascending, NaN last, ties kept in place
        if fsim[1] < fsim[0] or (math.isnan(fsim[0]) and not math.isnan(fsim[1])):
            sim.reverse()
            fsim.reverse()

    sim = [x0, (1 + 0.05) * x0 if x0 != 0 else 0.00025]
    fsim = [math.inf, math.inf]
    try:
        for k in range(2):
            fsim[k] = func(sim[k])
    except _MaxCalls:
        pass
    order(sim, fsim)
    iterations = 1
    while calls < maxfun and iterations < maxfun:
        try:
            if abs(sim[1] - sim[0]) <= xatol and abs(fsim[0] - fsim[1]) <= fatol:
                break
            xbar = sim[0]
            xr = 2 * xbar - 1 * sim[1]
            fxr = func(xr)
            shrink = False
            if fxr < fsim[0]:
                xe = 3 * xbar - 2 * sim[1]
                fxe = func(xe)
                sim[1], fsim[1] = (xe, fxe) if fxe < fxr else (xr, fxr)
            elif fxr < fsim[0]:  # scipy's fxr < fsim[-2]: for one variable the same test as above
                sim[1], fsim[1] = xr, fxr
            elif fxr < fsim[1]:
                xc = 1.5 * xbar - 0.5 * sim[1]
                fxc = func(xc)
                if fxc <= fxr:
                    sim[1], fsim[1] = xc, fxc
                else:
                    shrink = True
            else:
                xcc = 0.5 * xbar + 0.5 * sim[1]
                fxcc = func(xcc)
                if fxcc < fsim[1]:
                    sim[1], fsim[1] = xcc, fxcc
                else:
                    shrink = True
            if shrink:
                sim[1] = sim[0] + 0.5 * (sim[1] - sim[0])
                fsim[1] = func(sim[1])
            iterations += 1
        except _MaxCalls:
            pass
        order(sim, fsim)
    return sim[0]


class _MaxCalls(Exception):
    pass


def fit_mp(evals: np.ndarray, N: int, M: int) -> MPFit:
    """Fit the MP bulk of an ESD (see the module docstring for the method and its source).

    Parameters
    ----------
    evals : ndarray of float, shape (n,)
        Eigenvalues of X = WᵀW (pooled over slices for conv layers).
    N, M : int
        Slice sizes, N ≥ M; Q = N/M.

    Returns
    -------
    MPFit

    Raises
    ------
    ValueError
        All eigenvalues are zero.
    """
    evals = np.asarray(evals, dtype=np.float64)
    total = float(evals.sum())
    if total <= 0:
        raise ValueError("all eigenvalues are zero")
    Q = N / M
    w_scale = math.sqrt(len(evals) / total)
    lam = evals * w_scale ** 2
    lam_max = float(lam.max())
    s = math.sqrt(lam_max / (1 + 1 / math.sqrt(Q)) ** 2)
    data = np.sqrt(lam) if Q == 1 else lam
    kx = np.linspace(0, data.max() + 0.5, _KDE_POINTS)
    ky = _kde_linear(data, kx, _BW)
    peak_x = float(kx[np.argmax(ky)])
    good = ky > _KDE_THRESH
    kx, ky = kx[good], ky[good]
    resid = _Residual(kx, ky, Q, peak_x)
    grid = np.arange(0.05 * s, 2.0 * s, 0.01 * s)  # scipy.optimize.brute's grid for this slice
    start = grid[resid.grid_argmin(grid)]
    # brute's default finish: Nelder–Mead from the best grid point
    sigma = _fmin_1d(resid.scalar, float(start))
    lp = (sigma * (1 + 1 / math.sqrt(Q))) ** 2
    lm = (sigma * (1 - 1 / math.sqrt(Q))) ** 2
    tw = 1 / math.sqrt(Q) * lp ** (2 / 3) * M ** (-2 / 3)
    num_spikes = int(np.count_nonzero(lam > lp + math.sqrt(tw)))
    return MPFit(sigma_mp=sigma, lambda_plus=lp / w_scale ** 2, lambda_minus=lm / w_scale ** 2,
                 num_spikes=num_spikes, mp_softrank=lp / lam_max, W_scale=w_scale)
