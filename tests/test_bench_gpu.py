"""Batched Gram eigenvalues (hubscan.esd.eigen.gram_eigvalsh_batched) and benchmarks/bench_gpu.py at reduced size on CPU."""

from __future__ import annotations

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
            np.testing.assert_array_equal(ev, compute_esd(W).evals)
    f32 = gram_eigvalsh_batched(mats, precision="float32")
    assert max(np.max(np.abs(a - b) / b.max()) for a, b in zip(f32, gram_eigvalsh_batched(mats))) < 1e-5
    with pytest.raises(ValueError, match="one shape"):
        gram_eigvalsh_batched([torch.zeros(3, 2), torch.zeros(2, 3)])
    bad = torch.randn(10, 4)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        gram_eigvalsh_batched([bad])


def test_bench_gpu_reduced_on_cpu():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--scale", "32", "--blocks",
                           "2", "--device", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ("attn      8      128x128", "mlp       6      344x128", "embed     1     1000x128", "total    15"):
        assert line in out, out
    worst = float(out.split("alpha(batched float64)| = ")[1].split()[0])
    assert worst < 1e-2                                    # float32 mode: |Δalpha| reported and small
