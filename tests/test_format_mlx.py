"""MLX affine quantization (mlx-community checkpoints) against mlx itself: ``mlx.core.quantize`` writes the
packed weights, ``mlx.core.dequantize`` is the reference of hubscan's decoding; the bits and group size come
from ``config.json`` (per-layer overrides included); ``scales`` / ``biases`` are companions, never rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import hubscan
from hubscan.weights.quantized import dequantize_mlx

mx = pytest.importorskip("mlx.core")  # the test extra installs mlx[cpu] on Linux, mlx on macOS


def quantize(w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, ...]:
    q, s, b = mx.quantize(mx.array(w), group_size=group, bits=bits)
    return np.array(q), np.array(s), np.array(b)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_dequantize_equals_mlx(bits, group):
    w = np.random.default_rng(bits * group).standard_t(4, (2, 24, 384)).astype(np.float32)  # stacked experts
    q, s, b = quantize(w, bits, group)
    assert q.dtype == np.uint32 and q.shape == (2, 24, 384 * bits // 32) and s.shape == (2, 24, 384 // group)
    ref = np.array(mx.dequantize(mx.array(q), mx.array(s), mx.array(b), group_size=group, bits=bits))
    got = dequantize_mlx(*(torch.from_numpy(a) for a in (q, s, b)), bits, group).numpy()
    np.testing.assert_array_equal(got, ref)


def _mlx_model(folder, config: dict, layers: dict) -> dict:
    """An mlx-community style folder: each (name: (matrix, bits, group)) quantized by mlx, scales and biases in
    bfloat16 as mlx-lm saves them; returns the dequantized float matrices (mlx's)."""
    from safetensors.torch import save_file as save_torch

    folder.mkdir()
    tensors, dense = {}, {}
    for name, (w, bits, group) in layers.items():
        q, s, b = quantize(w, bits, group)
        s16, b16 = (torch.from_numpy(a).to(torch.bfloat16) for a in (s, b))
        tensors.update({f"{name}.weight": torch.from_numpy(q), f"{name}.scales": s16, f"{name}.biases": b16})
        dense[name] = np.array(mx.dequantize(mx.array(q), mx.array(s16.float().numpy()), mx.array(b16.float().numpy()),
                                             group_size=group, bits=bits))
    tensors["model.norm.weight"] = torch.ones(64)
    save_torch(tensors, str(folder / "model.safetensors"), metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config))
    return dense


def test_mlx_model_with_per_layer_overrides_equals_the_float_matrices(tmp_path):
    rng = np.random.default_rng(0)
    layers = {"model.layers.0.self_attn.q_proj": (rng.standard_t(3, (128, 256)).astype(np.float32), 4, 64),
              "model.layers.0.mlp.gate_proj": (rng.standard_t(5, (192, 256)).astype(np.float32), 8, 32),
              "lm_head": (rng.standard_t(3, (320, 128)).astype(np.float32), 6, 128)}
    config = {"model_type": "llama", "quantization": {"group_size": 64, "bits": 4,
                                                      "model.layers.0.mlp.gate_proj": {"group_size": 32, "bits": 8},
                                                      "lm_head": {"group_size": 128, "bits": 6}}}
    dense = _mlx_model(tmp_path / "m", config, layers)
    save_file({f"{n}.weight": w for n, w in dense.items()}, str(tmp_path / "float.safetensors"))
    got, ref = hubscan.analyze(tmp_path / "m"), hubscan.analyze(tmp_path / "float.safetensors")
    rows = {r["name"]: r for r in got.rows}
    assert set(rows) == {f"{n}.weight" for n in layers}  # scales / biases: no rows
    for r in ref.rows:
        assert rows[r["name"]]["alpha"] == pytest.approx(r["alpha"], rel=1e-9)
        assert rows[r["name"]]["companions"] == [r["name"].replace("weight", "scales"), r["name"].replace("weight", "biases")]
    assert rows["lm_head.weight"]["reason"] == "dequantized (mlx 6-bit group 128)"
    assert got.summary["status"] == "success" and got.summary["alpha"] == pytest.approx(ref.summary["alpha"], rel=1e-9)


def test_mlx_without_its_config_is_not_read_but_named(tmp_path):
    w = np.random.default_rng(1).standard_normal((64, 128)).astype(np.float32)
    _mlx_model(tmp_path / "m", {"model_type": "llama"}, {"proj": (w, 4, 64)})
    res = hubscan.analyze(tmp_path / "m")
    (row,) = res.rows
    assert row["status"] == "skipped" and row["reason"] == "quantized (mlx: config.json gives no quantization bits / group_size)"
    assert row["companions"] == ["proj.scales", "proj.biases"] and res.summary["status"] == "failed"


def test_mlx_config_that_does_not_fit_the_shapes_is_not_read(tmp_path):
    w = np.random.default_rng(2).standard_normal((64, 128)).astype(np.float32)
    _mlx_model(tmp_path / "m", {"quantization": {"group_size": 32, "bits": 4}}, {"proj": (w, 4, 64)})
    (row,) = hubscan.analyze(tmp_path / "m").rows
    assert row["status"] == "skipped" and "do not fit" in row["reason"]
