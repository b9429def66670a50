"""FARMS alpha (hubscan.esd.farms) against the authors' published code and an independent loop.

Checked once against the authors' code (github.com/HUST-AI-HYZ/FARMS @ 8e07c3f,
``LLM_Pruning/lib/sampling.py`` ``fixed_sampling`` with their defaults 100 / 2.0 / 10 and
``esd_utils_farms.analysis_esd`` with ``fix_fingers=None``, ``filter_zeros=True``) on the 39
matrices of all-MiniLM-L6-v2 with M ≥ 8 and four random shapes (tall, wide, narrower than a window):
pooled eigenvalues equal to 6.9e-15 relative, alpha to 1.7e-6 (their alphas are stored in float32).
The two random-matrix alphas the published code gave are the reference values below; the repository
does not ship the authors' code, so the window rule is checked here against a plain loop as well.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hubscan
from hubscan.esd.farms import farms_esd, farms_windows
from hubscan.esd.powerlaw import fit_powerlaw

#: alpha from the authors' published code on these matrices (module docstring), float32 precision
PUBLISHED = {(1000, 500): 4.582213, (300, 1500): 4.139779}


def _t3_pair():
    rng = np.random.default_rng(0)
    return {(1000, 500): torch.from_numpy(rng.standard_t(3, (1000, 500))),
            (300, 1500): torch.from_numpy(rng.standard_t(3, (300, 1500)))}


def test_alpha_equals_published_code():
    for shape, W in _t3_pair().items():
        ev, windows = farms_esd(W)
        assert windows == 100 and len(ev) == 100 * 100
        assert fit_powerlaw(ev).alpha == pytest.approx(PUBLISHED[shape], abs=5e-6)


def test_windows_and_eigenvalues_by_loop():
    rng = np.random.default_rng(1)
    # square (384²: 10 × 10 windows of 100 × 200), narrower than a window (90 columns: the window is cut
    # at the edge), and 100 < cols < 200 (the authors' negative start counts from the right edge)
    expect = {(384, 384): (100, 100, 200), (150, 90): (10, 90, 90), (120, 150): (10, 100, 50)}
    for (rows, cols), (count, h, w) in expect.items():
        wins = farms_windows(rows, cols)
        assert len(wins) == count and {(b - a, d - c) for a, b, c, d in wins} == {(h, w)}
        W = torch.from_numpy(rng.standard_normal((rows, cols)))
        ref = np.sort(np.concatenate([np.linalg.svd(W[a:b, c:d].numpy(), compute_uv=False) ** 2
                                      for a, b, c, d in wins]))
        ev, _ = farms_esd(W)
        np.testing.assert_allclose(ev, ref, rtol=1e-10, atol=1e-12 * ref.max())
    # the windows of a 1536 × 384 matrix start on the authors' grid: steps (1536−100)//9 = 159, (384−200)//9 = 20
    starts = sorted({(a, c) for a, _, c, _ in farms_windows(1536, 384)})
    assert starts[:3] == [(0, 0), (0, 20), (0, 40)] and (1431, 180) in starts and len(starts) == 100


def test_farms_column_through_analyze(minilm_dir):
    rows = {r["name"]: r for r in hubscan.analyze(minilm_dir, mp_fit=False, farms=True,
                                                  layers="*layer.0.*").rows}
    r = rows["encoder.layer.0.intermediate.dense.weight"]
    W = __import__("safetensors.torch", fromlist=["load_file"]).load_file(
        str(minilm_dir / "model.safetensors"))["encoder.layer.0.intermediate.dense.weight"]
    assert r["farms_num_windows"] == 100
    assert r["farms_alpha"] == pytest.approx(fit_powerlaw(farms_esd(W.double())[0]).alpha, rel=1e-12)
    assert r["farms_alpha"] != r["alpha"]
    assert rows["embeddings.word_embeddings.weight"]["farms_alpha"] is None   # not selected: no FARMS
