"""Eigenvector localization metrics (hubscan.esd.vectors) against WeightWatcher 0.7.7's ``analyze(vectors=True)``.

WW in state-dict mode on the six matrices of all-MiniLM-L6-v2's first encoder block. WW splits bulk and
tail by comparing its ``scipy.linalg.eig`` eigenvalues with xmin, and rounding puts the xmin eigenvector
itself in the bulk in half of these layers (its tail then holds num_pl_spikes − 1 vectors); hubscan
splits by count (the num_pl_spikes largest). The arithmetic is compared at WW's own split (to 1e-9),
and the count rule is checked to differ only where WW's split count differs.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import hubscan
from hubscan.esd.vectors import COLUMNS, vector_metrics

ww = pytest.importorskip("weightwatcher")
logging.getLogger("weightwatcher").setLevel(logging.ERROR)


def test_vector_metrics_match_ww(minilm_dir):
    import scipy.linalg
    from safetensors.torch import load_file
    sd = load_file(str(minilm_dir / "model.safetensors"))
    sub = {k: v for k, v in sd.items() if k.startswith("encoder.layer.0.") and v.dim() == 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wdf = ww.WeightWatcher(model=dict(sub)).analyze(vectors=True)
    rows = {r["name"]: r for r in hubscan.analyze(minilm_dir, mp_fit=False, vectors=True,
                                                  layers="encoder.layer.0.*").rows}
    assert len(wdf) == 6
    differ = 0
    for _, w in wdf.iterrows():
        name = w["longname"] + ".weight"
        W = sub[name].double().numpy()
        X = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
        ww_tail = int(np.sum(np.sort(scipy.linalg.eig(X)[0].real) >= w["xmin"]))   # WW's split, as WW does it
        at_ww_split = vector_metrics(sub[name], ww_tail)
        for c in COLUMNS:
            assert at_ww_split[c] == pytest.approx(float(w[c]), rel=1e-9, abs=1e-12), (name, c)
        h = rows[name]
        assert h["num_pl_spikes"] == int(w["num_pl_spikes"])
        same = ww_tail == h["num_pl_spikes"]
        differ += not same
        for c in COLUMNS:
            if same:
                assert h[c] == pytest.approx(float(w[c]), rel=1e-9, abs=1e-12), (name, c)
    assert 0 < differ < 6     # WW's rounding split occurs here, and not everywhere


def test_localized_vs_delocalized():
    import torch
    # a diagonal-dominant matrix has localized eigenvectors (loc_ratio ≈ 1), a Gaussian one delocalized
    g = torch.Generator().manual_seed(0)
    G = torch.randn(400, 200, generator=g, dtype=torch.float64)
    D = torch.zeros(400, 200, dtype=torch.float64)
    D[torch.arange(200), torch.arange(200)] = torch.linspace(1, 10, 200, dtype=torch.float64)
    loc = vector_metrics(D + 1e-3 * G, 20)
    deloc = vector_metrics(G, 20)
    assert loc["tail_mean_loc_ratio"] < 1.5 < 50 < deloc["tail_mean_loc_ratio"]
    assert loc["tail_mean_part_ratio"] < deloc["tail_mean_part_ratio"]
