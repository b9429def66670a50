"""The 5+1 phases of training (Martin & Mahoney, JMLR 2021, §5): synthetic matrices of each kind
are classified as their phase by :func:`hubscan.esd.phases.classify_phase` through the full
engine (eigenvalues → power-law fit → MP fit → rules)."""

import numpy as np
import pytest
import torch

from hubscan.esd.eigen import compute_esd
from hubscan.esd.mp import fit_mp
from hubscan.esd.phases import PHASES, classify_phase
from hubscan.esd.powerlaw import fit_powerlaw

N, M = 2000, 500


def phase_of(W: np.ndarray) -> str:
    esd = compute_esd(torch.from_numpy(W))
    fit = fit_powerlaw(esd.evals)
    mp = fit_mp(esd.evals, *sorted(W.shape, reverse=True))
    return classify_phase(num_evals=len(esd.evals), rank_loss=esd.rank_loss, alpha=fit.alpha,
                          num_spikes=mp.num_spikes, lambda_max=esd.evals[-1], lambda_plus=mp.lambda_plus)


def _gauss(seed):
    return np.random.default_rng(seed).standard_normal((N, M))


def _planted(seed, rank, strength):
    rng = np.random.default_rng(seed + 100)
    U = np.linalg.qr(rng.standard_normal((N, rank)))[0]
    V = np.linalg.qr(rng.standard_normal((M, rank)))[0]
    return _gauss(seed) + strength * (N * M) ** 0.25 * U @ V.T


CASES = {
    "random-like": lambda s: _gauss(s),
    # a few strong, well separated spikes (spiked covariance far above the BBP threshold)
    "bulk+spikes": lambda s: _planted(s, 3, 6.0),
    # many weak directions just above the BBP threshold: eigenmass just past the bulk edge
    "bleeding-out": lambda s: _planted(s, 20, 1.3),
    # moderately heavy tails: Student-t entries, tail index 2 < mu < 4 ... alpha in (2, 4]
    "heavy-tailed": lambda s: np.random.default_rng(s).standard_t(2.0, (N, M)),
    # very heavy tails: Pareto tail index 1 → alpha ≈ 1.5
    "heavy-tailed-very": lambda s: (np.random.default_rng(s).pareto(1.0, (N, M)) + 1)
    * np.random.default_rng(s + 1).choice([-1.0, 1.0], (N, M)),
    # weakly heavy-tailed: a decaying spread of column scales, alpha > 4, many eigenvalues past the edge
    "bulk-decay": lambda s: _gauss(s) * (np.arange(1, M + 1) / M) ** -0.17,
    "rank-collapse": lambda s: np.random.default_rng(s).standard_normal((N, M // 2))
    @ np.random.default_rng(s + 1).standard_normal((M // 2, M)),
}


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_phase(kind, seed):
    expected = kind.replace("-very", "")
    assert expected in PHASES
    assert phase_of(CASES[kind](seed)) == expected


def test_decreasing_tail_index_moves_towards_heavy_tailed():
    """Student-t entries: lighter tails look random, heavier ones heavy-tailed (alpha falls with mu)."""
    rng = np.random.default_rng(5)
    phases = [phase_of(rng.standard_t(df, (N, M))) for df in (30.0, 2.0, 1.0)]
    assert phases[0] == "random-like"
    assert phases[1:] == ["heavy-tailed", "heavy-tailed"]
