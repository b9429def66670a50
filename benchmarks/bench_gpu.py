#!/usr/bin/env python
"""Batched eigenvalues of a 7B-shaped stack of heavy-tailed layers: seconds per matrix kind, CPU vs GPU alphas.

Usage::

    python benchmarks/bench_gpu.py                      # full size: needs a CUDA device (≤ 5 min on one GPU)
    python benchmarks/bench_gpu.py --scale 16 --blocks 2 --device cpu   # reduced, CPU (what CI runs)

The stack (Llama-2-7B's shapes): ``--blocks`` (32) transformer blocks of 4 attention matrices
4096 × 4096 (q, k, v, o) and 3 MLP matrices 11008 × 4096 (gate, up, down), plus one 32000 × 4096
embedding; every dimension divided by ``--scale``. Entries are Student-t(ν = 3) (heavy-tailed, as the
JMLR 2021 ensembles), generated block by block on the host in float32 (the model is never held whole).

Per matrix kind (attn, mlp, embed) the script times:

* ``per-matrix``: hubscan's :func:`hubscan.esd.eigen.compute_esd`, one call per layer (what
  ``hubscan analyze`` does today), on ``--device``;
* ``batched``: :func:`hubscan.esd.eigen.gram_eigvalsh_batched`, the block's same-shape layers in one
  eigvalsh call, copies from pinned memory overlapped with the Gram products (CUDA);
* the same batched call in float32 (``--precision`` of the fast mode), with max |Δalpha| against float64.

"end to end" = generation excluded, host→device copies, Gram, eigvalsh, power-law fits included.
CPU vs device alphas: for the first block, alphas of every layer computed on CPU float64 and on the
device (float64 and float32); the max |Δalpha| is printed. Timings: ``time.perf_counter`` after
``torch.cuda.synchronize()``; one warm-up call per kind.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def _layers(blocks: int, scale: int, seed: int):
    """Yield (kind, [host float32 tensors]) block by block."""
    d, f, v = 4096 // scale, 11008 // scale, 32000 // scale
    t = torch.distributions.StudentT(3.0)
    torch.manual_seed(seed)
    for _ in range(blocks):
        yield "attn", [t.sample((d, d)) for _ in range(4)]
        yield "mlp", [t.sample((f, d)) for _ in range(3)]
    yield "embed", [t.sample((v, d))]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--scale", type=int, default=1, help="divide every dimension by this (CI: 16)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--chunk", type=int, default=8, help="matrices per batched eigvalsh call")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from hubscan.esd.eigen import compute_esd, gram_eigvalsh_batched, resolve_device
    from hubscan.esd.powerlaw import fit_powerlaw

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)"
    print(f"device {name}; blocks {args.blocks}, scale 1/{args.scale}, chunk {args.chunk}")
    warm = [torch.randn(64, 32) for _ in range(2)]
    compute_esd(warm[0], device=device)
    gram_eigvalsh_batched(warm, device=device)
    gram_eigvalsh_batched(warm, device=device, precision="float32")

    secs = {}   # (kind, mode) -> seconds
    count = {}
    worst32 = 0.0
    cpu_vs_dev = None
    t_all = time.perf_counter()
    for i, (kind, mats) in enumerate(_layers(args.blocks, args.scale, args.seed)):
        count[kind] = count.get(kind, 0) + len(mats)
        _sync(device)
        t = time.perf_counter()
        per = [fit_powerlaw(compute_esd(W, device=device).evals).alpha for W in mats]
        _sync(device)
        secs[kind, "per-matrix"] = secs.get((kind, "per-matrix"), 0.0) + time.perf_counter() - t
        for prec in ("float64", "float32"):
            _sync(device)
            t = time.perf_counter()
            alphas = [fit_powerlaw(ev).alpha for ev in gram_eigvalsh_batched(mats, device=device, precision=prec,
                                                                               chunk=args.chunk)]
            _sync(device)
            secs[kind, f"batched {prec}"] = secs.get((kind, f"batched {prec}"), 0.0) + time.perf_counter() - t
            if prec == "float64":
                a64 = alphas
            else:
                worst32 = max(worst32, max(abs(a - b) for a, b in zip(alphas, a64)))
        if i < 2 and device.type != "cpu":   # first block: CPU float64 reference
            cpu = [fit_powerlaw(compute_esd(W, device="cpu").evals).alpha for W in mats]
            d = max(max(abs(a - b) for a, b in zip(cpu, per)), max(abs(a - b) for a, b in zip(cpu, a64)))
            cpu_vs_dev = d if cpu_vs_dev is None else max(cpu_vs_dev, d)
        assert np.allclose(per, a64, rtol=0, atol=1e-6), (kind, per, a64)
    total = time.perf_counter() - t_all
    print(f"{'kind':6} {'n':>4} {'shape':>12} " + " ".join(f"{m:>18}" for m in
                                                         ("per-matrix s", "batched f64 s", "batched f32 s")))
    d, f, v = 4096 // args.scale, 11008 // args.scale, 32000 // args.scale
    shapes = {"attn": f"{d}x{d}", "mlp": f"{f}x{d}", "embed": f"{v}x{d}"}
    for kind in ("attn", "mlp", "embed"):
        print(f"{kind:6} {count[kind]:>4} {shapes[kind]:>12} " + " ".join(
            f"{secs[kind, m]:>18.2f}" for m in ("per-matrix", "batched float64", "batched float32")))
    tot = {m: sum(secs[k, m] for k in ("attn", "mlp", "embed")) for m in ("per-matrix", "batched float64",
                                                                            "batched float32")}
    print(f"{'total':6} {sum(count.values()):>4} {'':>12} " + " ".join(f"{tot[m]:>18.2f}" for m in tot))
    print(f"end to end (all modes, incl. generation): {total:.1f} s")
    print(f"max |alpha(batched float32) - alpha(batched float64)| = {worst32:.2e}")
    print("max |alpha(device) - alpha(CPU float64)| over the first block = "
          + (f"{cpu_vs_dev:.2e}" if cpu_vs_dev is not None else "n/a (device is the CPU)"))


if __name__ == "__main__":
    main()
