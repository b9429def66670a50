"""Correlation traps (``--traps``, hubscan/esd/metric_traps.py) against WeightWatcher 0.7.7's ``randomize=True``
columns and against the definition (Prakash & Martin 2025: outliers of the MP fit of the element-shuffled W).

WW shuffles with numpy's global generator, so its shuffle cannot be hubscan's: the WW check captures the shuffled
eigenvalues WW fitted (its own ``apply_mp_fit(random=True)``) and gives them to hubscan's function. The planted
check uses theory: one large element θ in N(0, 1) noise is, wherever the shuffle puts it, a rank-one spike
whose eigenvalue is the BBP outlier N (1 + t²)(c + t²)/t², t = θ/√N, c = M/N (Benaych-Georges & Nadakuditi,
J. Multivar. Anal. 111, 2012).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import hubscan
from hubscan.esd.metric_traps import correlation_traps

COLUMNS = ("num_traps", "trap_size", "trap_mass", "rand_sigma_mp", "rand_lambda_plus", "rand_mp_softrank",
           "rand_lambda_max")


def _save(tmp_path, tensors: dict) -> str:
    import torch
    from safetensors.torch import save_file
    path = tmp_path / "m.safetensors"
    save_file({k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))).float().contiguous()
               for k, v in tensors.items()}, str(path))
    return str(path)


def test_equal_to_weightwatcher_given_its_shuffle(minilm_dir, tmp_path):
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    from safetensors.torch import load_file
    sd = load_file(str(minilm_dir / "model.safetensors"))
    sub = {k: v for k, v in sd.items() if k.startswith("encoder.layer.0.") and v.dim() == 2}
    sub["planted.weight"] = sub["encoder.layer.0.attention.self.query.weight"].clone()
    sub["planted.weight"][5, 9] = 40.0  # a trap WW finds too
    seen = {}
    original = ww.WeightWatcher.apply_mp_fit

    def spy(self, layer, random=True, params=None):
        if random:
            seen[layer.layer_id] = (np.array(layer.rand_evals, dtype=np.float64), layer.N, layer.M)
        return original(self, layer, random=random, params=params)

    np.random.seed(0)
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")
        mp.setattr(ww.WeightWatcher, "apply_mp_fit", spy)
        details = ww.WeightWatcher(model=dict(sub)).analyze(randomize=True)
    assert len(details) == len(sub) == len(seen) == 7
    trapped = 0
    for _, w in details.iterrows():
        rand_evals, N, M = seen[w["layer_id"]]
        t = correlation_traps(rand_evals, N, M)
        assert t.count == int(w["num_traps"]) == int(w["rand_num_spikes"]), w["name"]
        assert t.mp.sigma_mp == pytest.approx(float(w["rand_sigma_mp"]), rel=1e-9)
        assert t.mp.lambda_plus == pytest.approx(float(w["rand_bulk_max"]), rel=1e-9)
        assert t.mp.lambda_minus == pytest.approx(float(w["rand_bulk_min"]), rel=1e-9)
        assert t.mp.mp_softrank == pytest.approx(float(w["rand_mp_softrank"]), rel=1e-9)
        assert t.mp.W_scale == pytest.approx(float(w["rand_W_scale"]), rel=1e-9)
        assert t.lambda_max == pytest.approx(float(w["max_rand_eval"]), rel=1e-12)
        trapped += t.count > 0
    assert trapped >= 1  # the planted element is a trap for WW and for hubscan

    # the whole pipeline: hubscan's own shuffle finds the planted trap and none in the trained layers
    rows = {r["name"]: r for r in hubscan.analyze(_save(tmp_path, sub), traps=True).rows}
    wd = {w["longname"] + ".weight": w for _, w in details.iterrows()}
    assert rows["planted.weight"]["num_traps"] == int(wd["planted.weight"]["num_traps"]) == 1
    for name, r in rows.items():
        assert r["rand_lambda_plus"] == pytest.approx(float(wd[name]["rand_bulk_max"]), rel=0.05), name


def test_planted_rank_one_trap_found_with_its_size(tmp_path):
    N, M, t = 600, 300, 2.0
    c = M / N
    rng = np.random.default_rng(1)
    tensors = {}
    for i in range(6):
        W = rng.standard_normal((N, M))
        W[rng.integers(N), rng.integers(M)] += t * np.sqrt(N)  # one element: a rank-one trap
        tensors[f"planted{i}.weight"] = W
    for i in range(6):
        tensors[f"pure{i}.weight"] = rng.standard_normal((N, M))
    rows = {r["name"]: r for r in hubscan.analyze(_save(tmp_path, tensors), traps=True).rows}
    bbp = N * (1 + t * t) * (c + t * t) / (t * t)
    edge = N * (1 + c ** 0.5) ** 2
    errors = []
    for i in range(6):
        r = rows[f"planted{i}.weight"]
        assert r["num_traps"] == 1
        assert r["trap_size"] == pytest.approx(r["rand_lambda_max"] / r["rand_lambda_plus"], rel=1e-12)
        assert r["rand_lambda_plus"] == pytest.approx(edge, rel=0.06)    # the shuffled bulk is MP(σ = 1)
        errors.append(r["rand_lambda_max"] / bbp - 1)
        assert r["trap_mass"] == pytest.approx(r["rand_lambda_max"] / (np.sum(tensors[f"planted{i}.weight"] ** 2)),
                                               rel=1e-4)  # float32 storage
        r = rows[f"pure{i}.weight"]
        assert r["num_traps"] == 0 and r["trap_size"] is None and r["trap_mass"] == 0.0
        assert r["rand_sigma_mp"] == pytest.approx(1.0, abs=0.03)
    assert max(abs(e) for e in errors) < 0.12           # N^(-1/2) fluctuations of one spike
    assert abs(np.mean(errors)) < 0.03, errors          # the BBP size on average


def test_option_off_columns_null_and_shuffle_shared(tmp_path):
    rng = np.random.default_rng(2)
    path = _save(tmp_path, {"a.weight": rng.standard_t(3, (200, 100))})
    off = hubscan.analyze(path, randomize=True).rows[0]
    on = hubscan.analyze(path, randomize=True, traps=True).rows[0]
    assert all(off[c] is None for c in COLUMNS)
    assert all(on[c] is not None for c in COLUMNS if c != "trap_size")
    assert on["rand_distance"] == off["rand_distance"]  # one shuffle per layer, the seed's
    other = hubscan.analyze(path, traps=True, seed=7).rows[0]
    assert other["rand_lambda_max"] != on["rand_lambda_max"]


def test_all_zero_layer_has_no_trap_fit(tmp_path):
    rows = {r["name"]: r for r in hubscan.analyze(_save(tmp_path, {"z.weight": np.zeros((40, 20)),
                                                                   "g.weight": np.ones((40, 20))}), traps=True).rows}
    assert rows["z.weight"]["num_traps"] is None and rows["z.weight"]["rand_sigma_mp"] is None
    # a constant matrix is its own shuffle: rank one, its one eigenvalue 40·20 a trap holding all of ‖W‖²
    assert rows["g.weight"]["num_traps"] == 1 and rows["g.weight"]["trap_mass"] == pytest.approx(1.0)
    assert rows["g.weight"]["rand_lambda_max"] == pytest.approx(800.0)
