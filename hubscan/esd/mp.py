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
Nelder–Mead step. Here a σ whose edges are penalised costs nothing, a σ's residual reads only the KDE points
inside its bulk (λ−, λ+) — the rest add Σ ky² from prefix sums — the grid's argmin is found coarse to fine
(about 42 of the 195 σ evaluated: every 8th, then the 17 around the best), and for Q = 1 the residual is a
quadratic in 1/(π σ²) whose three coefficients are sums over the KDE points (a σ costs O(1)). The search
runs compiled (:mod:`hubscan.esd.mp_kernels`, numba): ~70 residual evaluations of a few hundred points were
~0.6 ms of numpy calls a layer, at numpy's per-call floor, and are now tens of microseconds. The same start
point and the same comparisons: σ equal bit for bit to WW's search (every KDE point, every grid σ, scipy's
``fmin``) on the spectra of ``tests/test_mp_search.py``; the residuals differ only in the order of summation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_BW = 0.1
_KDE_POINTS = 1000
_KDE_THRESH = 0.01
#: The grid search's coarse step, in grid points (:func:`hubscan.esd.mp_kernels.mp_search`).
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
    RuntimeError
        The compiled search cannot be loaded (:func:`hubscan.esd.mp_kernels.ready`).
    """
    from hubscan.esd import mp_kernels  # numba: imported on the first fit

    mp_kernels.ready()

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
    grid = np.arange(0.05 * s, 2.0 * s, 0.01 * s)  # scipy.optimize.brute's grid for this slice
    # the best grid point, then brute's default finish: Nelder–Mead from it
    _, sigma = mp_kernels.mp_search(data, kx, grid, Q, _BW, _KDE_THRESH, _COARSE)
    lp = (sigma * (1 + 1 / math.sqrt(Q))) ** 2
    lm = (sigma * (1 - 1 / math.sqrt(Q))) ** 2
    tw = 1 / math.sqrt(Q) * lp ** (2 / 3) * M ** (-2 / 3)
    num_spikes = int(np.count_nonzero(lam > lp + math.sqrt(tw)))
    return MPFit(sigma_mp=sigma, lambda_plus=lp / w_scale ** 2, lambda_minus=lm / w_scale ** 2,
                 num_spikes=num_spikes, mp_softrank=lp / lam_max, W_scale=w_scale)
