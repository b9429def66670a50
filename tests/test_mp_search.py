"""The MP fit's search (:mod:`hubscan.esd.mp`) against the search WeightWatcher 0.7.7 runs: the residual
evaluated on every KDE point for every grid σ (WW's ``resid_mp``), the grid's argmin polished with
``scipy.optimize.fmin``. hubscan evaluates a σ only on the KDE points inside its bulk, searches the grid
coarse to fine and polishes with a compiled re-implementation of ``fmin`` (:mod:`hubscan.esd.mp_kernels`);
both must give the same σ bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from hubscan.esd import mp as MP
from hubscan.esd import mp_kernels as K


def ww_resid(sigmas, kx, ky, Q, peak_x):
    """WW's resid_mp on every KDE point (the residual as WW 0.7.7 defines it, written out here)."""
    out = []
    for s in np.atleast_1d(sigmas):
        if Q == 1:
            ymp = np.sqrt(np.clip(4 - kx ** 2, 0, None)) / (np.pi * s * s)
        else:
            r = 1 / math.sqrt(Q)
            lp, lm = (s * (1 + r)) ** 2, (s * (1 - r)) ** 2
            if lp < peak_x or lp > kx[-1] or lm > peak_x:
                out.append(len(ky) * 1000.0 ** 2)
                continue
            inside = (kx > lm) & (kx < lp)
            ymp = np.zeros_like(kx)
            x = kx[inside]
            ymp[inside] = Q / (2 * np.pi * s ** 2 * x) * np.sqrt((lp - x) * (x - lm))
        out.append(float(np.sum((ymp - ky) ** 2)))
    return np.array(out)


def spectra():
    rng = np.random.default_rng(3)
    for i in range(24):
        N = int(rng.integers(16, 700))
        M = N if i % 6 == 0 else int(rng.integers(8, N + 1))  # Q = 1: the quarter-circle law
        W = rng.standard_t(rng.uniform(1.5, 8), (N, M)) if i % 2 else rng.standard_normal((N, M))
        if i % 3 == 0:
            W[:, : 1 + i % 4] *= 8  # spikes
        yield f"{N}x{M}-{i}", np.sort(np.clip(np.linalg.eigvalsh(W.T @ W), 0, None)), N, M


@pytest.mark.parametrize("name,evals,N,M", list(spectra()), ids=lambda v: v if isinstance(v, str) else "")
def test_search_equals_wws(name, evals, N, M):
    Q = N / M
    lam = evals * math.sqrt(len(evals) / float(evals.sum())) ** 2  # fit_mp's mean-1 rescaling, as it rounds
    s = math.sqrt(lam.max() / (1 + 1 / math.sqrt(Q)) ** 2)
    data = np.sqrt(lam) if Q == 1 else lam
    kx = np.linspace(0, data.max() + 0.5, 1000)
    ky = K.kde_linear(np.sort(data), kx, 0.1)
    dense = np.clip(1 - np.abs(kx[:, None] - data[None, :]) / 0.1, 0, None).sum(axis=1) / (len(data) * 0.1)
    assert ky == pytest.approx(dense, rel=1e-9, abs=1e-12)  # the triangular KDE, point by point
    args = K.prepare(data, kx, Q, 0.1, 0.01)
    kxg, kyg, peak = args[0], args[1], args[5]
    assert peak == float(kx[np.argmax(ky)]) and np.array_equal(kxg, kx[ky > 0.01])
    grid = np.arange(0.05 * s, 2.0 * s, 0.01 * s)
    ours, ref = np.array([K.residual(g, *args) for g in grid]), ww_resid(grid, kxg, kyg, Q, peak)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-12)
    start = grid[int(np.argmin(ref))]
    sigma = float(optimize.fmin(lambda v: float(ww_resid(v, kxg, kyg, Q, peak)[0]), [start], disp=False)[0])
    index, found = K.mp_search(data, kx, grid, Q, 0.1, 0.01, 8)
    assert index == int(np.argmin(ref))  # coarse to fine: the same point
    assert found == sigma and MP.fit_mp(evals, N, M).sigma_mp == sigma
    for maxfun in (3, 4, 5, 8, 13):  # stopped mid-iteration by scipy's evaluation budget: the same point
        assert K.fmin_1d(start, *args, maxfun=maxfun) == float(optimize.fmin(
            lambda v: float(ww_resid(v, kxg, kyg, Q, peak)[0]), [start], maxfun=maxfun, disp=False)[0])
