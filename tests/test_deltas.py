"""PEFT adapters (ΔW = s·B·A) and base-model deltas (ΔW = W − W_base) against WeightWatcher 0.7.7.

The models are trained here, on scikit-learn's digits (no network): a base MLP 64 → 256 → 128 → 10,
then (a) a LoRA adapter (r = 32, lora_alpha = 64) fitted by hand in torch on a shifted task (labels
y + 1 mod 10) with the base frozen, and (b) a full fine-tune of the base on the same task.

WW oracles, each in state-dict mode (a dict of tensors, as in ``test_vs_weightwatcher.py``):
* ``analyze(peft=True)`` on the adapter's tensors. WW's ``lora_BA`` is the bare B·A (no lora_alpha/r,
  see ``WWPeftLayerIterator.update_peft_layers``), so it is given B·s to compare with hubscan's
  s·B·A; WW keeps the top r singular values (ARPACK ``svds``), as hubscan does. WW multiplies the
  factors in float32 (its state-dict layers are float32 whatever the stored dtype; 1e-7 relative
  rounding, which moved alpha by 2e-9 here), hubscan in float64. So that both multiply the same
  numbers exactly, the trained factors are stored on an 8-bit fixed-point grid (a power-of-two step,
  |integer| ≤ 255: every product of B·A and every partial sum of 32 of them is exact in float32);
  the quantised adapter's accuracy is checked too.
* ``WeightWatcher(model=fine_tuned, base_model=base).analyze()`` for the deltas;
  ``distances(fine_tuned, base)`` for ``delta_W``. WW subtracts in float32 (hubscan in float64); both
  models' weights are stored on one fixed-point grid per tensor (step 2^k, |integer| < 2^22), where
  float32 differences are exact. The output layer (10 × 128: 10 eigenvalues) is fitted by WW's
  small-sample variant (< 20 eigenvalues, a documented difference): its alpha-derived columns are not
  compared.
"""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest
import torch

import hubscan

ww = pytest.importorskip("weightwatcher")
logging.getLogger("weightwatcher").setLevel(logging.WARNING)
from safetensors.torch import save_file  # noqa: E402

R, LORA_ALPHA = 32, 64.0
SCALE = LORA_ALPHA / R
SIZES = (64, 256, 128, 10)
#: metric columns compared with WW, to 1e-9 (relative for scale-carrying ones)
COLUMNS = ("alpha", "xmin", "xmax", "D", "lambda_max", "norm", "log_norm", "stable_rank", "log_alpha_norm",
           "alpha_weighted", "entropy", "num_pl_spikes", "num_evals", "matrix_rank", "rank_loss")


def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0 - (X / 16.0).mean(0)) / ((X / 16.0).std(0) + 1e-6)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y)


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(),
                               torch.nn.Linear(SIZES[1], SIZES[2]), torch.nn.ReLU(),
                               torch.nn.Linear(SIZES[2], SIZES[3]))


def _fixed_point(t: torch.Tensor) -> torch.Tensor:
    """t rounded to a grid of step 2^k with |t / step| ≤ 255 (so float32 products of two are exact)."""
    step = 2.0 ** math.ceil(math.log2(float(t.abs().max()) / 255))
    return torch.round(t / step) * step


def _fit(params, forward, X, y, epochs, lr, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=gen).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(forward(X[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float((forward(X).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    X, y = _digits()
    base = _mlp()
    acc_base = _fit(base.parameters(), base, X, y, epochs=15, lr=0.05, seed=0)
    base_sd = {k: v.detach().clone().contiguous() for k, v in base.state_dict().items()}
    y2 = (y + 1) % 10                                   # the shifted task

    # (a) LoRA by hand on the two hidden layers, base frozen
    for p in base.parameters():
        p.requires_grad_(False)
    lora = {}
    for i in (0, 2):
        lin = base[i]
        A = torch.nn.Parameter(torch.randn(R, lin.in_features) / math.sqrt(lin.in_features))
        B = torch.nn.Parameter(torch.zeros(lin.out_features, R))
        lora[i] = (A, B)

    def lora_forward(x):
        for i, layer in enumerate(base):
            if i in lora:
                A, B = lora[i]
                x = layer(x) + SCALE * (x @ A.T) @ B.T
            else:
                x = layer(x)
        return x

    # lr 0.01: at 0.02 (momentum 0.9, s = 2) the fit sits at the edge of divergence, and float rounding that
    # differs with the BLAS thread count decides whether it learns (measured: 0.70 / 0.83 / chance)
    _fit([p for ab in lora.values() for p in ab], lora_forward, X, y2, epochs=15, lr=0.01, seed=1)
    with torch.no_grad():
        for A, B in lora.values():
            A.copy_(_fixed_point(A))
            B.copy_(_fixed_point(B))
        acc_lora = float((lora_forward(X).argmax(1) == y2).float().mean())
    adapter = tmp_path_factory.mktemp("adapter")
    tensors = {}
    for i, (A, B) in lora.items():
        tensors[f"base_model.model.{i}.lora_A.weight"] = A.detach().clone().contiguous()
        tensors[f"base_model.model.{i}.lora_B.weight"] = B.detach().clone().contiguous()
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": R, "lora_alpha": LORA_ALPHA, "target_modules": ["0", "2"]}))

    # (b) full fine-tune of a copy of the base on the shifted task
    ft = _mlp()
    ft.load_state_dict(base_sd)
    acc_ft = _fit(ft.parameters(), ft, X, y2, epochs=10, lr=0.02, seed=2)
    ft_sd = {k: v.detach().clone().contiguous() for k, v in ft.state_dict().items()}
    for k in base_sd:                                   # one exact grid per tensor for both models
        step = 2.0 ** math.ceil(math.log2(max(float(base_sd[k].abs().max()), float(ft_sd[k].abs().max())) / 2 ** 22))
        base_sd[k] = torch.round(base_sd[k] / step) * step
        ft_sd[k] = torch.round(ft_sd[k] / step) * step
    base_dir, ft_dir = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("ft")
    save_file(base_sd, str(base_dir / "model.safetensors"))
    save_file(ft_sd, str(ft_dir / "model.safetensors"))
    return dict(base_sd=base_sd, ft_sd=ft_sd, lora=tensors, adapter=adapter, base_dir=base_dir, ft_dir=ft_dir,
                acc=(acc_base, acc_lora, acc_ft))


def _ww(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base_model = kwargs.pop("base_model", None)
        return ww.WeightWatcher(model=model, base_model=base_model).analyze(**kwargs)


def _compare(h: dict, w, name: str, skip=()) -> None:
    for col in (c for c in COLUMNS if c not in skip):
        hv, wv = h[col], w[col]
        if isinstance(hv, (int, np.integer)) or col.startswith("num_") or col in ("matrix_rank", "rank_loss"):
            assert int(hv) == int(wv), (name, col, hv, wv)
        else:
            assert float(hv) == pytest.approx(float(wv), rel=1e-9, abs=1e-12), (name, col, hv, wv)


def test_models_really_learned(trained):
    acc_base, acc_lora, acc_ft = trained["acc"]
    assert acc_base > 0.95 and acc_lora > 0.9 and acc_ft > 0.95, trained["acc"]


def test_peft_adapter_matches_ww(trained):
    res = hubscan.analyze(trained["adapter"])
    rows = {r["name"]: r for r in res.rows}
    # the factors are not layers: one ΔW row per adapted module, nothing else
    assert set(rows) == {"0.lora_BA", "2.lora_BA"} and res.summary["status"] == "success"
    wsd = {k: (v * SCALE if ".lora_B." in k else v) for k, v in trained["lora"].items()}
    wdf = _ww(wsd, peft=True)
    assert sorted(wdf["longname"]) == ["base_model.model.0.lora_BA", "base_model.model.2.lora_BA"]
    for _, w in wdf.iterrows():
        h = rows[w["longname"].removeprefix("base_model.model.")]
        assert h["status"] == "success" and h["num_fit_evals"] >= 20   # WW's standard (not small-N) fit
        assert (h["N"], h["M"], h["num_evals"]) == (int(w["N"]), int(w["M"]), R)
        _compare(h, w, w["longname"])
    # ΔW is the real update: s·B·A equals what the LoRA forward adds
    A, B = trained["lora"]["base_model.model.0.lora_A.weight"], trained["lora"]["base_model.model.0.lora_B.weight"]
    lam = np.linalg.svd((SCALE * (B.double() @ A.double())).numpy(), compute_uv=False) ** 2
    assert rows["0.lora_BA"]["lambda_max"] == pytest.approx(lam[0], rel=1e-12)
    # without the scale WW's numbers are s² smaller: the scaling is what differs
    raw = _ww(dict(trained["lora"]), peft=True)
    assert float(raw["lambda_max"].iloc[0]) * SCALE ** 2 == pytest.approx(float(wdf["lambda_max"].iloc[0]), rel=1e-9)


def test_peft_adapter_with_base(trained):
    res = hubscan.analyze(trained["adapter"], base=trained["base_dir"])
    rows = {r["name"]: r for r in res.rows}
    assert set(rows) == {"0.lora_BA", "2.lora_BA", "0.weight", "2.weight"}
    merged = trained["base_sd"]["0.weight"].double() + SCALE * (
        trained["lora"]["base_model.model.0.lora_B.weight"].double() @ trained["lora"]["base_model.model.0.lora_A.weight"].double())
    lam = np.sort(np.linalg.svd(merged.numpy(), compute_uv=False) ** 2)
    h = rows["0.weight"]
    assert h["num_evals"] == 64 and h["lambda_max"] == pytest.approx(lam[-1], rel=1e-12)
    assert h["norm"] == pytest.approx(lam.sum(), rel=1e-12)
    # the terminal keeps the two kinds of rows apart: the mean alpha of the ΔW rows and of the W + ΔW rows
    import os
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(trained["adapter"]), "--base",
                           str(trained["base_dir"])], capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    for what, names in (("ΔW = s·B·A (2 layers)", ("0.lora_BA", "2.lora_BA")), ("W + ΔW (2 layers)", ("0.weight", "2.weight"))):
        line = next(ln for ln in proc.stdout.splitlines() if what in ln)
        mean = np.mean([rows[n]["alpha"] for n in names])
        assert f"alpha={mean:.4f}" in line, (line, mean)


def test_base_model_deltas_match_ww(trained):
    res = hubscan.analyze(trained["ft_dir"], base=trained["base_dir"])
    rows = {r["name"]: r for r in res.rows}
    wdf = _ww(dict(trained["ft_sd"]), base_model=dict(trained["base_sd"]))
    assert sorted(wdf["longname"]) == ["0", "2", "4"]
    small_n = ("alpha", "xmin", "D", "num_pl_spikes", "log_alpha_norm", "alpha_weighted")
    for _, w in wdf.iterrows():
        h = rows[w["longname"] + ".weight"]
        assert h["status"] == "success"
        _compare(h, w, w["longname"], skip=small_n if w["longname"] == "4" else ())
    # the ESD is that of W − W_base, not of W
    d = (trained["ft_sd"]["2.weight"].double() - trained["base_sd"]["2.weight"].double()).numpy()
    assert rows["2.weight"]["lambda_max"] == pytest.approx(np.linalg.norm(d, 2) ** 2, rel=1e-12)
    # distances: delta_W is WW's distances() delta_W (Frobenius); relative ones by numpy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, dist = ww.WeightWatcher().distances(dict(trained["ft_sd"]), dict(trained["base_sd"]))
    assert len(dist) == 3
    for _, w in dist.iterrows():
        h = rows[w["longname"] + ".weight"]
        # WW's np.linalg.norm runs on float32 arrays (float32 accumulation, ~1e-7 relative)
        assert h["delta_W"] == pytest.approx(float(w["delta_W"]), rel=1e-6)
        assert h["delta_W"] == pytest.approx(math.sqrt(h["norm"]), rel=1e-12)   # = ‖ΔW‖_F of the ESD
        Wb = trained["base_sd"][w["longname"] + ".weight"].double().numpy()
        Wf = trained["ft_sd"][w["longname"] + ".weight"].double().numpy()
        assert h["delta_W_rel"] == pytest.approx(np.linalg.norm(Wf - Wb) / np.linalg.norm(Wb), rel=1e-9)
        assert h["delta_spectral_rel"] == pytest.approx(np.linalg.norm(Wf - Wb, 2) / np.linalg.norm(Wb, 2),
                                                        rel=1e-8)
    # biases are vectors: no rows; nothing unmatched
    assert all(r["status"] == "success" for r in res.rows) and res.summary["status"] == "success"


def test_unmatched_tensors_are_reported(trained, tmp_path):
    ft = dict(trained["ft_sd"])
    ft["head.weight"] = torch.randn(10, 32)             # new in the fine-tune
    ft["2.weight"] = torch.randn(64, 256)               # reshaped
    del ft["4.weight"]                                  # dropped
    save_file(ft, str(tmp_path / "m.safetensors"))
    rows = {r["name"]: r for r in hubscan.analyze(tmp_path / "m.safetensors", base=trained["base_dir"]).rows}
    assert rows["0.weight"]["status"] == "success"
    assert rows["head.weight"]["status"] == "skipped" and "no tensor of this name" in rows["head.weight"]["reason"]
    assert rows["2.weight"]["status"] == "skipped" and "differs from the base" in rows["2.weight"]["reason"]
    assert rows["4.weight"]["status"] == "skipped" and rows["4.weight"]["reason"] == "only in the base model"


def test_cli_base_option(trained, tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    out = tmp_path / "d.parquet"
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(trained["ft_dir"]), "--base",
                           str(trained["base_dir"]), "--out", str(out), "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    t = pq.read_table(out).to_pylist()
    api = {r["name"]: r for r in hubscan.analyze(trained["ft_dir"], base=trained["base_dir"]).rows}
    assert {r["name"] for r in t} == set(api)
    for r in t:
        assert r["alpha"] == pytest.approx(api[r["name"]]["alpha"], rel=1e-12)
        assert r["delta_W_rel"] == pytest.approx(api[r["name"]]["delta_W_rel"], rel=1e-12)
    # the terminal summary counts ΔW's alphas without calling them over- / under-trained (guides for W)
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(trained["ft_dir"]), "--base",
                           str(trained["base_dir"])], capture_output=True, text=True,
                          env={**__import__("os").environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    n_low = sum(1 for r in api.values() if r["status"] == "success" and r["alpha"] < 2)
    assert f"layers with alpha<2: {n_low}," in text and "(of ΔW: the 2 / 6 training guides are for W)" in text
    assert "over-trained" not in text and "under-trained" not in text
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(trained["ft_dir"]), "--base",
                           str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode != 0 and "nope" in proc.stderr and "Error" not in proc.stderr


def test_base_deltas_through_the_hub(trained, tmp_path):
    """Both models from the (loopback) Hub, or one from the Hub and one local: the same rows as local."""
    from hub_server import FakeHub, isolated_hf_client

    from hubscan.hub import HubClient

    local = {r["name"]: r for r in hubscan.analyze(trained["ft_dir"], base=trained["base_dir"]).rows}
    with isolated_hf_client(tmp_path / "hfcache"), FakeHub() as hub:
        hub.add_model_from_dir("org/base", trained["base_dir"])
        hub.add_model_from_dir("org/ft", trained["ft_dir"])
        client = HubClient(endpoint=hub.endpoint, max_retries=1, backoff=0.1, cache_dir=None)
        for model, base in (("hf:org/ft", "hf:org/base"), ("hf:org/ft", trained["base_dir"]),
                            (trained["ft_dir"], "hf:org/base")):
            res = hubscan.analyze(model, base=base, client=client)
            got = {r["name"]: r for r in res.rows}
            assert set(got) == set(local) and res.summary["status"] == "success"
            for name, r in got.items():
                for col in ("alpha", "lambda_max", "delta_W", "delta_W_rel", "delta_spectral_rel"):
                    assert r[col] == pytest.approx(local[name][col], rel=1e-12, nan_ok=True), (model, base, name, col)


def test_low_rank_and_unchanged_deltas(tmp_path):
    """Issue 21: a child whose one layer got a rank-1 update s·u·vᵀ (u, v unit) and whose other layer is
    unchanged. ΔW = s·u·vᵀ is measured — lambda_max = norm = s², rank 1, alpha and phase null ("rank collapse") —
    and the unchanged layer is skipped "unchanged from base"; nothing failed, the command exits 0. A merged
    LoRA of rank 4 (≪ M = 64) gives numpy's eigenvalues of ΔW. A child equal to its base is skipped."""
    import subprocess
    import sys

    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(128, 64, generator=g, dtype=torch.float64) for _ in range(3))
    u, v = torch.randn(128, generator=g, dtype=torch.float64), torch.randn(64, generator=g, dtype=torch.float64)
    u, v, s = u / u.norm(), v / v.norm(), 3.0
    B, A = torch.randn(128, 4, generator=g, dtype=torch.float64), torch.randn(4, 64, generator=g, dtype=torch.float64)
    save_file({"a.weight": a, "b.weight": b, "c.weight": c}, str(tmp_path / "base.safetensors"))
    save_file({"a.weight": a + s * torch.outer(u, v), "b.weight": b.clone(), "c.weight": c + B @ A},
              str(tmp_path / "child.safetensors"))
    res = hubscan.analyze(tmp_path / "child.safetensors", base=tmp_path / "base.safetensors")
    rows = {r["name"]: r for r in res.rows}
    ra = rows["a.weight"]
    assert ra["status"] == "success" and "rank collapse: 1 nonzero eigenvalue" in ra["reason"]
    assert ra["alpha"] is None or math.isnan(ra["alpha"])
    assert ra["lambda_max"] == pytest.approx(s * s, rel=1e-12) and ra["norm"] == pytest.approx(s * s, rel=1e-12)
    assert ra["matrix_rank"] == 1 and ra["phase"] is None  # no tail: no phase guessed
    assert (rows["b.weight"]["status"], rows["b.weight"]["reason"]) == ("skipped", "unchanged from base")
    rc_ = rows["c.weight"]
    dW = ((c + B @ A) - c).numpy()  # ΔW as stored and subtracted (B·A up to the rounding of c + B·A)
    ref = np.sort(np.linalg.svd(dW, compute_uv=False) ** 2)
    assert rc_["status"] == "success" and rc_["matrix_rank"] == np.linalg.matrix_rank(dW) == 4
    assert rc_["lambda_max"] == pytest.approx(ref[-1], rel=1e-12) and rc_["norm"] == pytest.approx(ref.sum(), rel=1e-12)
    assert "fit on 4 (< 20)" in rc_["reason"] and "not in the model's means" in rc_["reason"]
    assert res.summary["status"] == "success" and res.summary["num_failed"] == 0
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(tmp_path / "child.safetensors"),
                           "--base", str(tmp_path / "base.safetensors")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "summary status=success" in proc.stdout and "b.weight: skipped: unchanged from base" in proc.stdout
    same = hubscan.analyze(tmp_path / "base.safetensors", base=tmp_path / "base.safetensors")
    assert {r["status"] for r in same.rows} == {"skipped"}
    assert (same.summary["status"], same.summary["reason"]) == ("skipped", "no tensor differs from the base: 3 "
                                                                           "unchanged from base")


def test_peft_adapter_reads_the_same_from_a_folder_its_file_and_the_hub(tmp_path):
    """One rule for every source (README "Beyond WeightWatcher"): a model whose chosen weight files are
    ``adapter_model.*`` is a PEFT adapter, read as ΔW = s·B·A with the ``adapter_config.json`` beside them — the
    folder, the file ``adapter_model.safetensors`` itself, and the repository on the (loopback) Hub give the same
    rows, alone and with the base (ΔW and W + ΔW). Reference: PEFT's own ``get_delta_weight`` of each module
    (the library that wrote the adapter), a GPT-2 adapter on Conv1D layers (``fan_in_fan_out``)."""
    from hub_server import FakeHub, isolated_hf_client
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from hubscan.hub import HubClient

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=100, n_positions=32))
    base.save_pretrained(tmp_path / "base")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=12, target_modules=["c_attn", "c_proj"],
                                            init_lora_weights=False, fan_in_fan_out=True))
    model.save_pretrained(tmp_path / "adapter")
    adapter = tmp_path / "adapter"
    assert {p.name for p in adapter.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    deltas = {}  # PEFT's scaling · B·A in float64; its own get_delta_weight (float32, (in, out) for Conv1D) agrees
    for name, m in model.named_modules():
        if hasattr(m, "get_delta_weight") and hasattr(m, "lora_A"):
            d = m.scaling["default"] * (m.lora_B["default"].weight.double() @ m.lora_A["default"].weight.double())
            torch.testing.assert_close(m.get_delta_weight("default").detach().double().T, d, rtol=1e-5, atol=1e-7)
            deltas[name.removeprefix("base_model.model.") + ".lora_BA"] = d.detach()
    assert len(deltas) == 6  # c_attn, attn.c_proj, mlp.c_proj of 2 blocks

    def rows(res):
        return {r["name"]: r for r in res.rows}

    def same(a: dict, b: dict):
        assert a.keys() == b.keys()
        for name in a:
            for col in ("status", "N", "M", "alpha", "lambda_max", "norm", "matrix_rank", "num_evals", "phase"):
                x, y = a[name][col], b[name][col]
                assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), (name, col, x, y)

    folder = rows(hubscan.analyze(adapter))
    assert folder.keys() == deltas.keys()
    for name, d in deltas.items():
        ev = np.linalg.svd(d.numpy(), compute_uv=False) ** 2
        assert folder[name]["lambda_max"] == pytest.approx(ev[0], rel=1e-10)
        assert folder[name]["norm"] == pytest.approx(ev.sum(), rel=1e-10) and folder[name]["matrix_rank"] == 4
    with_base = rows(hubscan.analyze(adapter, base=tmp_path / "base"))
    assert len(with_base) == 12  # ΔW and W + ΔW of each module
    same(folder, rows(hubscan.analyze(adapter / "adapter_model.safetensors")))
    same(with_base, rows(hubscan.analyze(adapter / "adapter_model.safetensors", base=tmp_path / "base")))
    with isolated_hf_client(tmp_path / "hfcache"), FakeHub() as hub:
        hub.add_model_from_dir("org/adapter", adapter)
        hub.add_model_from_dir("org/base", tmp_path / "base")
        client = HubClient(endpoint=hub.endpoint, max_retries=1, backoff=0.1, cache_dir=None)
        remote = hubscan.analyze("hf:org/adapter", client=client)
        assert remote.ref.files == ("adapter_model.safetensors",)
        same(folder, rows(remote))
        same(with_base, rows(hubscan.analyze("hf:org/adapter", base="hf:org/base", client=client)))


def test_a_base_of_other_shapes_fails_the_model_naming_why(tmp_path):
    """Every tensor skipped because the base's shapes differ: nothing measured, the model `failed`, and its
    reason names the tensors and the shapes (not a bare "no layer could be analyzed")."""
    g = torch.Generator().manual_seed(0)
    save_file({"a.weight": torch.randn(64, 32, generator=g), "b.weight": torch.randn(48, 32, generator=g)},
              str(tmp_path / "child.safetensors"))
    save_file({"a.weight": torch.randn(32, 32, generator=g), "b.weight": torch.randn(40, 32, generator=g)},
              str(tmp_path / "base.safetensors"))
    res = hubscan.analyze(tmp_path / "child.safetensors", base=tmp_path / "base.safetensors")
    assert [(r["name"], r["status"]) for r in res.rows] == [("a.weight", "skipped"), ("b.weight", "skipped")]
    assert res.summary["status"] == "failed"
    assert res.summary["reason"] == ("no layer could be analyzed | 2 tensor(s) skipped: a.weight (shape [64, 32] "
                                     "differs from the base's [32, 32]); b.weight (shape [48, 32] differs from the "
                                     "base's [40, 32])")


def test_non_finite_weights_in_a_pair_fail_it_before_any_decomposition(tmp_path):
    """NaN in the base, NaN in the model, inf in both: the pair's row fails naming who holds them, as a plain
    model's non-finite row does — never an ARPACK or LAPACK message (row or stderr) from the distances' SVDs;
    the other pairs are analyzed. A 2×2 pair (too few eigenvalues) is skipped by its shape, unread."""
    import subprocess
    import sys

    g = torch.Generator().manual_seed(0)
    fine = {"a.weight": torch.randn(64, 32, generator=g), "b.weight": torch.randn(48, 64, generator=g),
            "t.weight": torch.randn(2, 2, generator=g)}
    child = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in fine.items()}
    bad_base, bad_child = dict(fine), dict(child)
    bad_base["b.weight"] = fine["b.weight"].clone().index_put_((torch.tensor(3), torch.tensor(4)),
                                                                torch.tensor(float("nan")))
    bad_child["b.weight"] = child["b.weight"].clone().index_put_((torch.tensor(0), torch.tensor(0)),
                                                                  torch.tensor(float("nan")))
    both_c, both_b = dict(child), dict(fine)
    both_c["b.weight"] = child["b.weight"].clone().fill_(float("inf"))
    both_b["b.weight"] = fine["b.weight"].clone().fill_(float("-inf"))
    expected = {"base": (child, bad_base, "non-finite values (NaN or inf) in the base model's weights"),
                "child": (bad_child, fine, "non-finite values (NaN or inf) in the weights"),
                "both": (both_c, both_b,
                         "non-finite values (NaN or inf) in the weights and the base model's weights")}
    for case, (c, b, reason) in expected.items():
        save_file(c, str(tmp_path / f"{case}_c.safetensors"))
        save_file(b, str(tmp_path / f"{case}_b.safetensors"))
        res = hubscan.analyze(tmp_path / f"{case}_c.safetensors", base=tmp_path / f"{case}_b.safetensors")
        rows = {r["name"]: r for r in res.rows}
        assert (rows["b.weight"]["status"], rows["b.weight"]["reason"]) == ("failed", reason), case
        assert rows["a.weight"]["status"] == "success" and res.summary["status"] == "incomplete"
        assert rows["t.weight"]["status"] == "skipped" and rows["t.weight"]["reason"].startswith("too few eigenvalues")
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(tmp_path / "base_c.safetensors"),
                           "--base", str(tmp_path / "base_b.safetensors")], capture_output=True, text=True,
                          env={**__import__("os").environ, "COLUMNS": "200"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "b.weight: failed: non-finite values (NaN or inf) in the base model's weights" in proc.stdout
    assert not proc.stderr and "ARPACK" not in proc.stdout and "DLASCL" not in proc.stdout
