"""A new quantization layout is one ``@register_scheme`` function: the toy layout below (uint8 codes with a
per-tensor affine scale and offset, stored as two companion tensors) is folded into its weight, dequantized
before the ESD, and gives the rows of the same weights stored dequantized; without it the weights are a
layout hubscan does not read (skipped rows, never a quiet success)."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

import hubscan
from hubscan.weights.layouts import SCHEMES, folded, register_scheme

TOY = "toy affine uint8"


def toy_fold(by_name: dict) -> list:
    """``<w>`` uint8 (out, in) + ``<w>_toy_scale`` (1,) + ``<w>_toy_offset`` (1,): W = (q − offset) · scale."""
    out = []
    for name, q in by_name.items():
        scale, offset = by_name.get(name + "_toy_scale"), by_name.get(name + "_toy_offset")
        if q.dtype != "uint8" or len(q.shape) != 2 or scale is None or offset is None:
            continue

        def load(q=q, s=scale, o=offset):
            return (q.load().float() - o.load().float()) * s.load().float()

        out.append(folded(q, [scale.name, offset.name], q.shape, "toy affine uint8", load))
    return out


@pytest.fixture
def toy_scheme():
    register_scheme(TOY)(toy_fold)
    yield
    SCHEMES.unregister(TOY)


def _files(tmp_path):
    g = np.random.default_rng(3)
    q = {n: g.integers(0, 256, s).astype(np.uint8) for n, s in (("a.weight", (96, 64)), ("b.weight", (64, 48)))}
    params = {"a.weight": (0.02, 128.0), "b.weight": (0.05, 120.0)}
    stored = dict(q)
    for n, (s, o) in params.items():
        stored[n + "_toy_scale"] = np.array([s], np.float32)
        stored[n + "_toy_offset"] = np.array([o], np.float32)
    plain = {n: (q[n].astype(np.float32) - np.float32(o)) * np.float32(s) for n, (s, o) in params.items()}
    save_file(stored, str(tmp_path / "quantized.safetensors"))
    save_file(plain, str(tmp_path / "plain.safetensors"))
    return tmp_path / "quantized.safetensors", tmp_path / "plain.safetensors"


def test_toy_scheme_is_one_function(toy_scheme, tmp_path):
    quantized, plain = _files(tmp_path)
    got, ref = hubscan.analyze(quantized), hubscan.analyze(plain)
    assert got.summary["status"] == "success"
    assert [r["name"] for r in got.rows] == ["a.weight", "b.weight"]  # the companions get no row
    for g, r in zip(got.rows, ref.rows):
        assert g["companions"] == [g["name"] + "_toy_scale", g["name"] + "_toy_offset"]
        assert g["reason"] == "dequantized (toy affine uint8)" and g["dtype"] == "uint8"
        for col in ("N", "M", "alpha", "D", "xmin", "lambda_max", "stable_rank"):
            assert g[col] == pytest.approx(r[col], rel=1e-12), (g["name"], col)


def test_without_the_scheme_the_layout_is_not_read(tmp_path):
    quantized, _ = _files(tmp_path)
    res = hubscan.analyze(quantized)
    assert res.summary["status"] == "failed"
    assert res.summary["reason"] == ("no layer could be analyzed | 2 tensor(s) in a layout hubscan does not read: "
                                     "a.weight (quantized (uint8)); b.weight (quantized (uint8))")
    assert [(r["name"], r["status"], r["reason"]) for r in res.rows] == [
        ("a.weight", "skipped", "quantized (uint8)"), ("b.weight", "skipped", "quantized (uint8)")]
