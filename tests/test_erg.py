"""ERG / detX (SETOL) against WeightWatcher 0.7.7's ``analyze(detX=True)`` / ``ERG=True``.

WW is run in state-dict mode on all-MiniLM-L6-v2 (as in ``test_vs_weightwatcher.py``); layers are
matched by name (WW's longname + ``.weight``). The detX columns are integer counts and eigenvalues
picked by index, so they must be identical (eigenvalues to float64 rounding of Gram vs SVD).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest

import hubscan
from hubscan.esd.erg import detx_condition

ww = pytest.importorskip("weightwatcher")
logging.getLogger("weightwatcher").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def ww_erg(minilm_dir):
    from safetensors.torch import load_file
    sd = load_file(str(minilm_dir / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=dict(sd)).analyze(ERG=True)


def test_erg_columns_equal_ww_on_minilm(ww_erg, minilm_dir):
    rows = {r["name"]: r for r in hubscan.analyze(minilm_dir, mp_fit=False).rows}
    assert len(ww_erg) == 39
    assert {"num_ERG_spikes", "ERG_gap", "detX_val", "detX_val_unrescaled"} <= set(ww_erg.columns)
    for _, w in ww_erg.iterrows():
        h = rows[w["longname"] + ".weight"]
        assert h["num_ERG_spikes"] == int(w["num_ERG_spikes"]) == int(w["detX_num"]), w["longname"]
        assert h["ERG_gap"] == float(w["ERG_gap"]), w["longname"]
        assert h["detX_val"] == pytest.approx(float(w["detX_val"]), rel=1e-9), w["longname"]
        assert h["detX_val_unrescaled"] == pytest.approx(float(w["detX_val_unrescaled"]), rel=1e-9)
    # not vacuous: gaps of both signs and several sizes occur
    gaps = set(int(g) for g in ww_erg["ERG_gap"])
    assert len(gaps) > 5 and min(gaps) < 0 < max(gaps)


def test_detx_condition_by_hand():
    # rescaled to mean 1: [0.1, 0.4, 0.5, 1.0, 3.0] (sum 5); from the top: 3 > 1, 3·1 = 3 > 1,
    # 3·1·0.5 = 1.5 > 1, 3·1·0.5·0.4 = 0.6 < 1 → idx 1, 4 eigenvalues in the detX tail
    ev = np.array([0.1, 0.4, 0.5, 1.0, 3.0]) * 7.0
    d = detx_condition(ev)
    assert (d.num_ERG_spikes, d.detX_idx) == (4, 1)
    assert d.detX_val == pytest.approx(0.4 * 7.0) and d.detX_val_unrescaled == pytest.approx(0.4)
    # the top eigenvalue alone below 1 after rescaling cannot happen (mean 1), but equal evals can:
    d = detx_condition(np.ones(6))
    assert (d.num_ERG_spikes, d.detX_idx) == (0, 0)
    # a product that never drops below 1 above index 0: WW reports all n with idx 1
    d = detx_condition(np.array([0.01, 1.0, 1.0, 2.0]))
    assert (d.num_ERG_spikes, d.detX_idx) == (4, 1)
    # overflow-free: 4000 eigenvalues whose top product overflows float64
    rng = np.random.default_rng(0)
    ev = np.sort(rng.pareto(1.5, 4000) + 1)
    d = detx_condition(ev)
    lam = ev * len(ev) / ev.sum()
    assert math.fsum(np.log(lam[d.detX_idx:])) < 0 <= math.fsum(np.log(lam[d.detX_idx + 1:]))
