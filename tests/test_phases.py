"""The 5+1 phases of training (Martin & Mahoney, JMLR 2021, §5): simulated ensembles of each phase
(:mod:`hubscan.esd.ensembles`) are classified through the full engine (eigenvalues → power-law fit →
MP fit → element tail index → rules of :mod:`hubscan.esd.phases`).

This is the reduced version of ``jobs/calibrate_phases.py`` (which writes ``docs/phases.md`` over
1000×500 … 4000×2000 and 5 seeds): the smallest size, 2 seeds, every scored ensemble. Every
threshold sits between the feature ranges of the ensembles it separates (docs/phases.md), so each
matrix is expected to land in its phase.
"""

import numpy as np
import pytest

from hubscan.esd.ensembles import ENSEMBLES, UNSCORED, classify_matrix, pareto, student_t
from hubscan.esd.phases import PHASES, element_tail_index

N, M = 1000, 500
SCORED = sorted(n for n in ENSEMBLES if n not in UNSCORED)


@pytest.mark.parametrize("name", SCORED)
@pytest.mark.parametrize("seed", [0, 1])
def test_phase(name, seed):
    expected, gen = ENSEMBLES[name]
    assert expected in PHASES
    got = classify_matrix(gen(N, M, seed))
    assert got["phase"] == expected, got


@pytest.mark.parametrize("seed", range(3))
def test_iid_heavy_tailed_never_bulk_spikes(seed):
    """The issue's cases: ±Pareto μ = 2.5 and Student-t ν = 3 at the largest size too."""
    for W in (pareto(2000, 1000, seed + 10, 2.5), student_t(2000, 1000, seed + 10, 3.0)):
        assert classify_matrix(W)["phase"] == "heavy-tailed"


def test_decreasing_tail_index_moves_towards_heavy_tailed():
    """Student-t entries: lighter tails look random, heavier ones heavy-tailed (alpha falls with mu)."""
    rng = np.random.default_rng(5)
    phases = [classify_matrix(rng.standard_t(df, (N, M)))["phase"] for df in (30.0, 2.0, 1.0)]
    assert phases[0] == "random-like"
    assert phases[1:] == ["heavy-tailed", "heavy-tailed"]


def test_element_tail_index_recovers_mu():
    for mu in (1.5, 2.5, 3.5):
        assert element_tail_index(pareto(2000, 1000, 0, mu)) == pytest.approx(mu, rel=0.05)
    assert element_tail_index(np.random.default_rng(0).standard_normal((2000, 1000))) > 6
