"""The GPU path on CPU: shape-grouped batches (CUDA's grouping policy), ``--precision auto``'s decision,
host→device staging and the eigh-backend choice — each checked against the one-at-a-time float64 path or
numpy, so the code a CUDA actor runs is exercised without a GPU (``benchmarks/device_check.sh`` runs it on
one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hubscan
from hubscan.esd import eigen, precision
from hubscan.esd.powerlaw import fit_powerlaw


def _model(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    t = torch.distributions.StudentT(3.0)
    sd = {f"blocks.{i}.{p}.weight": t.sample((64, 64) if p != "up" else (128, 64)) for i in range(4)
          for p in ("q", "k", "v", "up")}
    sd["blocks.2.k.weight"][3, 3] = float("nan")
    sd["conv.weight"] = torch.randn(16, 8, 3, 3)
    save_file(sd, str(tmp_path / "m.safetensors"))
    return tmp_path / "m.safetensors"


def _same_rows(a, b, rel=1e-12):
    assert [r.key for r in a.rows] == [r.key for r in b.rows]
    for x, y in zip(a.rows, b.rows):
        assert x.status == y.status, x.key
        for col, v in y.metrics.items():
            w = x.metrics[col]
            if isinstance(v, float) and np.isfinite(v):
                assert w == pytest.approx(v, rel=rel, abs=1e-300), (x.key, col)
            else:
                assert w == v or (isinstance(v, float) and np.isnan(w)), (x.key, col)


def test_shape_groups_over_a_window_equal_one_at_a_time(tmp_path, monkeypatch):
    """CUDA's grouping (by shape over a window, not only consecutive layers), run on CPU: the 12 64×64
    layers in one batch and the 4 up projections in another although they alternate in the file; rows in
    tensor order, each equal to one at a time to 1e-12; the NaN layer failed alone."""
    path = _model(tmp_path)
    calls = []
    real = eigen.compute_esds
    monkeypatch.setattr(eigen, "compute_esds", lambda st, *a, **k: calls.append(len(st)) or real(st, *a, **k))
    cpu_limits = eigen.batch_limits(torch.device("cpu"))
    monkeypatch.setattr(eigen, "batch_limits", lambda dev: (*cpu_limits[:3], True))
    grouped = hubscan.analyze(path)
    assert calls == [12, 4]
    monkeypatch.setattr(eigen, "BATCH_MAX_LAYERS", 1)
    monkeypatch.setattr(eigen, "batch_limits", lambda dev: (1, *cpu_limits[1:3], False))
    alone = hubscan.analyze(path)
    _same_rows(grouped, alone)
    assert {r.name: r.status for r in grouped.rows}["blocks.2.k.weight"] == "failed"
    assert [r.layer_id for r in grouped.rows] == sorted(r.layer_id for r in grouped.rows)


def _alpha64_32(W: np.ndarray) -> tuple[float, float]:
    """Independent reference: numpy's eigvalsh of the Gram matrix in float64 and in float32."""
    a = []
    for dt in (np.float64, np.float32):
        X = W.astype(dt)
        ev = np.clip(np.linalg.eigvalsh(X.T @ X).astype(np.float64), 0, None)
        a.append(fit_powerlaw(np.sort(ev)).alpha)
    return a[0], a[1]


def test_auto_precision_keeps_float32_for_a_heavy_tailed_layer(monkeypatch):
    monkeypatch.setattr(precision, "FLOAT32_DEVICES", ("cuda", "cpu"))
    torch.manual_seed(0)
    W = torch.distributions.StudentT(3.0).sample((400, 200)) * 0.02
    chk = precision.check_precision(W, device=torch.device("cpu"), layer="w")
    a64, a32 = _alpha64_32(W.double().numpy())
    assert abs(a64 - a32) <= 1e-4                       # numpy agrees that float32 is good enough here
    assert chk.precision == "float32" and chk.dalpha <= 1e-4
    assert chk.dalpha > 0  # float32 did round: the check measured a difference, not a copy (numpy's own
    #                        float32 rounding differs from torch's, so only the side of 1e-4 is compared)
    assert "|Δalpha| =" in chk.note() and "on w" in chk.note()
    # the same layer with a zero tolerance: float64 unless the two alphas are bit-equal
    strict = precision.check_precision(W, device=torch.device("cpu"), tolerance=0.0)
    assert strict.precision == ("float32" if strict.dalpha == 0 else "float64")


def test_auto_precision_refuses_float32_when_the_tail_is_below_its_resolution(monkeypatch):
    """A power-law ESD (alpha 1.25: the quantiles of a Pareto law) spread over 9 decades: float32's Gram
    (error ~N·eps32·λmax) loses the small eigenvalues the fit uses, alpha moves by more than 1e-4 (numpy's
    float32 says so too: ~1.5e-2) and the check keeps float64."""
    monkeypatch.setattr(precision, "FLOAT32_DEVICES", ("cuda", "cpu"))
    rng = np.random.default_rng(1)
    lam = (np.arange(1, 201) / 201) ** (-1 / 0.25)
    U, _ = np.linalg.qr(rng.standard_normal((400, 200)))
    V, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    W = (U * np.sqrt(lam)) @ V.T
    a64, a32 = _alpha64_32(W)
    assert not abs(a64 - a32) <= 1e-4
    chk = precision.check_precision(torch.from_numpy(W), device=torch.device("cpu"))
    assert chk.precision == "float64" and not chk.dalpha <= 1e-4


def test_auto_precision_on_cpu_is_float64_and_on_a_float32_device_within_tolerance(tmp_path, monkeypatch):
    path = _model(tmp_path)
    f64 = hubscan.analyze(path)
    auto = hubscan.analyze(path, precision="auto")          # CPU: auto = float64, bit for bit
    _same_rows(auto, f64, rel=0)
    assert not any("float32" in r.reason for r in auto.rows)
    monkeypatch.setattr(precision, "FLOAT32_DEVICES", ("cuda", "cpu"))  # CPU standing in for a GPU
    auto32 = hubscan.analyze(path, precision="auto")
    noted = [r for r in auto32.rows if "float32 eigenvalues (--precision auto" in r.reason]
    assert noted and all(r.status == "success" for r in noted)
    ref = {r.key: r.metrics["alpha"] for r in f64.rows}
    for r in noted:
        assert abs(r.metrics["alpha"] - ref[r.key]) <= 1e-4, r.key   # the check's bound holds per layer here
    untouched = [r for r in auto32.rows if r not in noted and r.status == "success"]
    for r in untouched:
        assert r.metrics["alpha"] == ref[r.key] or math.isnan(ref[r.key])


def test_stage_and_backend_choice_on_cpu():
    W = torch.randn(5, 3)
    assert eigen.stage(W, "cpu") is W
    assert eigen.choose_eigh_backend("cpu") == {"backend": "lapack", "seconds": {}}
    assert eigen.fastest_backend({"cusolver": 2.0, "magma": 0.5}) == "magma"
    assert eigen.fastest_backend({"cusolver": 0.1, "magma": math.inf}) == "cusolver"
    assert eigen.fastest_backend({"cusolver": math.inf, "magma": math.inf}) == "cusolver"
    with pytest.raises(ValueError):
        eigen.fastest_backend({})
