"""Batched Gram eigenvalues (hubscan.esd.eigen.gram_eigvalsh_batched) and benchmarks/device_check.sh (the GPU
check of issue 20: eigh regression check + bench_gpu.py) at reduced size on CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hubscan.esd.eigen import compute_esd, gram_eigvalsh_batched

REPO = Path(__file__).resolve().parents[1]


def test_batched_equals_per_matrix():
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(90, 40, generator=g) for _ in range(5)]
    wide = [m.T.contiguous() for m in mats]
    for batch in (mats, wide):
        got = gram_eigvalsh_batched(batch, chunk=2)
        for W, ev in zip(batch, got):
            ref = np.linalg.svd(W.double().numpy(), compute_uv=False) ** 2
            assert ev.shape == (40,)
            np.testing.assert_allclose(ev, np.sort(ref), rtol=1e-10, atol=1e-10 * ref.max())
            np.testing.assert_allclose(ev, compute_esd(W).evals, rtol=0, atol=1e-12 * ref.max())
    f32 = gram_eigvalsh_batched(mats, precision="float32")
    assert max(np.max(np.abs(a - b) / b.max()) for a, b in zip(f32, gram_eigvalsh_batched(mats))) < 1e-5
    with pytest.raises(ValueError, match="one shape"):
        gram_eigvalsh_batched([torch.zeros(3, 2), torch.zeros(2, 3)])
    bad = torch.randn(10, 4)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        gram_eigvalsh_batched([bad])


def test_device_check_reduced_on_cpu():
    """``REDUCED=1 benchmarks/device_check.sh``: every step runs on CPU and its output parses."""
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "REDUCED": "1", "PYTHON": sys.executable})
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.rstrip().endswith("device_check: ok"), out
    eigh = re.findall(r"^eigh n=(\d+) backend=(\w+) cpu_s=([\d.]+) device_s=([\d.]+) ratio=([\d.]+) (OK|SLOW)$",
                      out, re.M)
    assert [(n, b) for n, b, *_ in eigh] == [("32", "cpu"), ("64", "cpu")], out
    assert all(float(c) > 0 and float(d) > 0 for _, _, c, d, _, _ in eigh)
    assert re.search(r"^eigh regression: (none|FLAGGED)", out, re.M)
    for line in (r"attn\s+8\s+128x128", r"mlp\s+6\s+128x344/344x128", r"embed\s+1\s+1000x128", r"total\s+15"):
        assert re.search("^" + line + r"(\s+[\d.]+){3}$", out, re.M), (line, out)
    assert re.search(r"^eigh backend: lapack$", out, re.M)
    values = dict(re.findall(r"^(max \|alpha[^:]*|speedup [^:]*): ([\d.e+-]+)x?$", out, re.M))
    assert float(values["max |alpha(production float64) - alpha(one-at-a-time)|"]) <= 1e-10
    assert float(values["max |alpha(auto) - alpha(float64)|"]) == 0.0   # CPU: auto is float64
    assert float(values["max |alpha(device float64) - alpha(CPU float64)| over block 0 + embed"]) <= 1e-10
    assert re.search(r"^auto float32 shapes: none$", out, re.M)
