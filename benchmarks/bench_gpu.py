#!/usr/bin/env python
"""A 7B-shaped stack of heavy-tailed layers through hubscan's production path on a device: seconds per matrix
kind, one layer at a time vs shape-grouped batches, float64 vs ``--precision auto``, device vs CPU alphas.

Usage::

    python benchmarks/bench_gpu.py                      # full size: needs a CUDA device (part of device_check.sh)
    python benchmarks/bench_gpu.py --scale 32 --blocks 2 --device cpu --threads 1   # reduced, CPU (CI)

The stack (Llama-2-7B's shapes): ``--blocks`` (32) transformer blocks of 4 attention matrices
4096 × 4096 (q, k, v, o) and 3 MLP matrices 11008 × 4096 (gate, up, down), plus one 32000 × 4096
embedding; every dimension divided by ``--scale``. Entries are Student-t(ν = 3) (heavy-tailed, as the
JMLR 2021 ensembles), generated on ``--device`` (fast on a GPU) and held on the host in float32, as a
reader hands them over; the tensors are offered in a checkpoint's order (names sorted, as safetensors
stores them), so same-shape layers of different blocks are apart.

Timed, each after one warm-up on a small stack (``time.perf_counter``, ``torch.cuda.synchronize()``):

* ``production float64``: :func:`hubscan.analysis.analyze_entries` with default options on ``--device``
  (prefetch thread with pinned host→device copies, shape-grouped batched eigvalsh, power-law and MP fits,
  every metric); per kind the sum of the rows' ``seconds``;
* ``one-at-a-time``: the same with one layer per eigvalsh call (``eigen.BATCH_MAX_LAYERS = 1``) — the path
  before shape batching;
* ``production auto``: the same with ``precision="auto"`` (float32 on CUDA where the float64 check of one
  layer per shape allows it), with max |Δalpha| against production float64 and the precision each shape got.

CPU vs device alphas: the first block's layers and the embedding on CPU float64 (``compute_esd``) against
production float64 on the device. Output lines are ``key: value`` (``benchmarks/device_check.sh`` and
``tests/test_bench_gpu.py`` read them).
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def _names(blocks: int) -> list[tuple[str, str, int, int, int]]:
    """(name, kind, rows, cols, seed) of every matrix, in a checkpoint's (sorted) order; full-size shapes."""
    out = [("model.embed_tokens.weight", "embed", 32000, 4096, 0)]
    for b in range(blocks):
        for j, p in enumerate(("q_proj", "k_proj", "v_proj", "o_proj")):
            out.append((f"model.layers.{b}.self_attn.{p}.weight", "attn", 4096, 4096, 1 + 7 * b + j))
        for j, (p, r, c) in enumerate((("gate_proj", 11008, 4096), ("up_proj", 11008, 4096),
                                       ("down_proj", 4096, 11008))):
            out.append((f"model.layers.{b}.mlp.{p}.weight", "mlp", r, c, 5 + 7 * b + j))
    return sorted(out)


def _generate(rows: int, cols: int, seed: int, device: torch.device) -> torch.Tensor:
    """A Student-t(3) float32 matrix made on ``device``, returned on the host."""
    torch.manual_seed(seed)
    return (torch.distributions.StudentT(torch.tensor(3.0, device=device)).sample((rows, cols)) * 0.02).to("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--scale", type=int, default=1, help="divide every dimension by this (CI: 32)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from hubscan.analysis import AnalyzeOptions, analyze_entries
    from hubscan.esd import eigen
    from hubscan.esd.eigen import choose_eigh_backend, compute_esd, resolve_device
    from hubscan.esd.powerlaw import fit_powerlaw
    from hubscan.weights.base import TensorEntry

    device = resolve_device(args.device)
    batch_max = eigen.BATCH_MAX_LAYERS
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)"
    print(f"device: {name}; torch {torch.__version__}; blocks {args.blocks}, scale 1/{args.scale}")
    backend = choose_eigh_backend(device)
    print("eigh backend: " + backend["backend"] + "".join(f"; {k} {v * 1e3:.2f} ms" for k, v in
                                                           backend["seconds"].items()))
    t = time.perf_counter()
    specs = [(n, k, max(1, r // args.scale), max(1, c // args.scale), s) for n, k, r, c, s in _names(args.blocks)]
    host = {n: _generate(r, c, s, device) for n, _, r, c, s in specs}
    kind = {n: k for n, k, *_ in specs}
    print(f"generated: {len(specs)} matrices, {sum(w.numel() for w in host.values()) / 1e9:.2f} G elements, "
          f"{time.perf_counter() - t:.1f} s")

    def entries(mats):
        return [TensorEntry(n, tuple(w.shape), "float32", "<bench>", (lambda w=w: w)) for n, w in mats.items()]

    def production(mats, precision):
        rows = [r for r, _ in analyze_entries(entries(mats), AnalyzeOptions(device=str(device), precision=precision))]
        bad = [(r.name, r.reason) for r in rows if r.status != "success"]
        assert not bad, bad
        return rows

    warm = {n: w[:64, :48].contiguous() for n, w in list(host.items())[:9]}
    for p in ("float64", "auto"):
        production(warm, p)

    secs: dict = {}
    rows, wall = {}, {}
    for mode in ("one", "float64", "auto"):
        eigen.BATCH_MAX_LAYERS = 1 if mode == "one" else batch_max  # one layer per eigvalsh call
        _sync(device)
        t = time.perf_counter()
        rows[mode] = production(host, "float64" if mode == "one" else mode)
        _sync(device)
        wall[mode] = time.perf_counter() - t
        for r in rows[mode]:
            secs[kind[r.name], mode] = secs.get((kind[r.name], mode), 0.0) + r.seconds
    eigen.BATCH_MAX_LAYERS = batch_max
    one = {r.name: r.metrics["alpha"] for r in rows["one"]}
    a64 = {r.name: r.metrics["alpha"] for r in rows["float64"]}
    auto = {r.name: r.metrics["alpha"] for r in rows["auto"]}
    f32 = sorted({f"{r.N}x{r.M}" for r in rows["auto"] if "float32 eigenvalues" in r.reason})

    count = {k: sum(v == k for v in kind.values()) for k in ("attn", "mlp", "embed")}
    shape = {k: "/".join(sorted({"x".join(map(str, host[n].shape)) for n in host if kind[n] == k}))
             for k in count}
    print(f"{'kind':6} {'n':>4} {'shape':>20} {'one-at-a-time s':>16} {'production f64 s':>17} "
          f"{'production auto s':>18}")
    for k in ("attn", "mlp", "embed"):
        print(f"{k:6} {count[k]:>4} {shape[k]:>20} {secs[k, 'one']:>16.3f} {secs[k, 'float64']:>17.3f} "
              f"{secs[k, 'auto']:>18.3f}")
    print(f"{'total':6} {len(host):>4} {'':>20} {wall['one']:>16.3f} {wall['float64']:>17.3f} {wall['auto']:>18.3f}")
    print(f"speedup production float64 vs one-at-a-time: {wall['one'] / wall['float64']:.2f}x")
    print(f"speedup production auto vs production float64: {wall['float64'] / wall['auto']:.2f}x")
    print("max |alpha(production float64) - alpha(one-at-a-time)|: "
          f"{max(abs(a64[n] - one[n]) for n in host):.2e}")
    print(f"max |alpha(auto) - alpha(float64)|: {max(abs(auto[n] - a64[n]) for n in host):.2e}")
    print(f"auto float32 shapes: {', '.join(f32) or 'none'}")
    first = [n for n in host if ".layers.0." in n or kind[n] == "embed"]
    cpu = {n: fit_powerlaw(compute_esd(host[n], device="cpu").evals).alpha for n in first}
    print(f"max |alpha(device float64) - alpha(CPU float64)| over block 0 + embed: "
          f"{max(abs(cpu[n] - a64[n]) for n in first):.2e}")


if __name__ == "__main__":
    main()
