#!/usr/bin/env python
"""The eigh regression check (pytorch issue 183806): ``torch.linalg.eigvalsh`` on the device vs on the CPU.

torch ≥ 2.11 CUDA 13 builds have been reported 30–130× slower in eig/eigh than older builds; hubscan's
pinned torch is such a build. For a few sizes n, a float64 symmetric n × n matrix (a Gram matrix of a
Gaussian one) is decomposed on the CPU (all its threads) and on ``--device`` under each CUDA linear-algebra
backend (``torch.backends.cuda.preferred_linalg_library``: cusolver, magma), best of ``--reps`` after a
warm-up. A device slower than the CPU by more than ``--flag`` (10×) is flagged: analyses should then run on
CPU (or the faster backend, which :func:`hubscan.esd.eigen.choose_eigh_backend` picks at actor start).

Usage::

    python benchmarks/eigh_check.py                                  # CUDA, n = 256 … 4096 (part of device_check.sh)
    python benchmarks/eigh_check.py --device cpu --sizes 32,64       # CPU against itself (CI: the script runs)

Output: one line per (n, backend) ``eigh n=… backend=… cpu_s=… device_s=… ratio=… OK|SLOW`` and a last line
``eigh regression: none|FLAGGED …``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch


def best_time(A: torch.Tensor, reps: int) -> float:
    """Best wall time of ``eigvalsh(A)`` over ``reps`` runs after one warm-up (synchronized on CUDA)."""
    cuda = A.device.type == "cuda"
    best = math.inf
    for i in range(reps + 1):
        if cuda:
            torch.cuda.synchronize(A.device)
        t = time.perf_counter()
        torch.linalg.eigvalsh(A)
        if cuda:
            torch.cuda.synchronize(A.device)
        if i:
            best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="256,1024,2048,4096")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--flag", type=float, default=10.0, help="flag a device this many times slower than the CPU")
    args = ap.parse_args()
    device = torch.device(args.device)
    backends = ("cusolver", "magma") if device.type == "cuda" else ("cpu",)
    worst, flagged = 0.0, []
    for n in (int(s) for s in args.sizes.split(",")):
        g = torch.Generator().manual_seed(n)
        X = torch.randn(n, n, generator=g, dtype=torch.float64)
        A = X.T @ X
        cpu = best_time(A, args.reps)
        for b in backends:
            if device.type == "cuda":
                try:
                    torch.backends.cuda.preferred_linalg_library(b)
                    dev = best_time(A.to(device), args.reps)
                except RuntimeError as exc:  # a build without this backend
                    print(f"eigh n={n} backend={b} unavailable: {' '.join(str(exc).split())[:120]}")
                    continue
            else:
                dev = best_time(A.clone(), args.reps)
            ratio = dev / cpu
            worst = max(worst, ratio)
            slow = ratio > args.flag
            if slow:
                flagged.append(f"n={n} {b} {ratio:.1f}x")
            print(f"eigh n={n} backend={b} cpu_s={cpu:.5f} device_s={dev:.5f} ratio={ratio:.2f} "
                  f"{'SLOW' if slow else 'OK'}")
    print("eigh regression: " + (f"FLAGGED ({'; '.join(flagged)} slower than the CPU)" if flagged
                                 else f"none (device / CPU at most {worst:.2f}x, flag above {args.flag:g}x)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
