"""Theory checks of the ESD engine against random-matrix results.

* Marchenko–Pastur (1967): for W (N × M) with i.i.d. entries of variance s², the eigenvalues of
  WᵀW fill [N s²(1 − 1/√Q)², N s²(1 + 1/√Q)²], Q = N/M, up to Tracy–Widom fluctuations.
* Heavy-tailed RMT (Martin & Mahoney, JMLR 2021, Table 1 / §3; Biroli, Bouchaud & Potters 2007):
  entries with Pareto tail index mu < 2 give an ESD tail with alpha ≈ 1 + mu/2.
* Spiked covariance (Baik, Ben Arous & Péché 2005): a planted rank-r signal above the detection
  threshold gives r eigenvalues outside the bulk.
"""

import math

import numpy as np
import pytest
import torch

from hubscan.esd.eigen import compute_esd
from hubscan.esd.mp import fit_mp
from hubscan.esd.powerlaw import fit_powerlaw

N, M = 2000, 500
Q = N / M


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(7).standard_normal((N, M))


def _esd(W):
    return compute_esd(torch.from_numpy(W)).evals


def test_gaussian_esd_inside_mp_bulk(gaussian):
    ev = _esd(gaussian)
    s2 = gaussian.var()
    lam_plus = N * s2 * (1 + 1 / math.sqrt(Q)) ** 2
    lam_minus = N * s2 * (1 - 1 / math.sqrt(Q)) ** 2
    # finite-size slack: Tracy–Widom scale N s² · (√N+√M)^{4/3}/(√N·√M)^{1/3}/N… ≈ 2 % here
    assert ev[-1] < lam_plus * 1.03
    assert ev[0] > lam_minus * 0.95
    fit = fit_mp(ev, N, M)
    assert abs(fit.lambda_plus / lam_plus - 1) < 0.05
    assert fit.num_spikes == 0
    assert abs(fit.sigma_mp - 1) < 0.05  # mean-1 rescaled ESD of a random W has sigma 1


@pytest.mark.parametrize("mu", [1.0])
def test_pareto_entries_alpha(mu):
    rng = np.random.default_rng(3)
    W = (rng.pareto(mu, size=(N, M)) + 1) * rng.choice([-1.0, 1.0], size=(N, M))
    fit = fit_powerlaw(_esd(W))
    assert fit.status == "success"
    assert abs(fit.alpha - (1 + mu / 2)) <= 0.15, fit.alpha


def test_planted_rank5_gives_5_spikes(gaussian):
    rng = np.random.default_rng(11)
    U = np.linalg.qr(rng.standard_normal((N, 5)))[0]
    V = np.linalg.qr(rng.standard_normal((M, 5)))[0]
    # singular values of the signal: 3–7 × the BBP threshold sqrt(N·M)^(1/2)-scale (far above detection)
    strengths = np.array([3.0, 4.0, 5.0, 6.0, 7.0]) * (N * M) ** 0.25
    W = gaussian + (U * strengths) @ V.T
    fit = fit_mp(_esd(W), N, M)
    assert fit.num_spikes == 5
