"""Run ``hubscan`` commands and measure each one's time and memory (used by ``tests/test_hostile.py``).

    python tests/bounded_cli.py CASES.json RESULTS.json

``CASES.json`` is a list of argument lists (``["analyze", "x.gguf", "-q"]``). This process imports hubscan,
its readers and the analysis once (and loads the MP search's compiled code: numba), then runs each command in a child forked from it (so an import is not
counted as the command's memory and every command starts from the same state) and writes one result per
case to ``RESULTS.json``: ``code`` (exit status), ``stdout``, ``stderr``, ``seconds`` (the command alone,
wall clock), ``cpu_seconds`` (its user + system CPU time: what the command costs, whatever else the machine
runs), ``growth`` (bytes: the child's peak resident set size, Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``, minus its resident set size before the command, read with psutil), or
``timed_out`` when a child ran past ``--timeout`` seconds (default 60) and was killed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024


def _child(argv: list[str], out: str, err: str, result: str) -> None:
    import psutil

    from hubscan.cli import main

    with open(out, "wb") as o, open(err, "wb") as e:
        os.dup2(o.fileno(), 1)
        os.dup2(e.fileno(), 2)
    with open("/proc/self/clear_refs", "w") as f:  # the peak restarts from the current resident set
        f.write("5")
    before = psutil.Process().memory_info().rss
    start, cpu = time.perf_counter(), time.process_time()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    growth = _peak_rss() - before
    sys.stdout.flush()
    sys.stderr.flush()
    with open(result, "w") as f:
        json.dump({"code": code, "seconds": seconds, "cpu_seconds": cpu, "growth": growth}, f)


def run(cases: list[list[str]], timeout: float) -> list[dict]:
    import hubscan.analysis  # noqa: F401 - what `analyze` imports, before any measurement
    import hubscan.cli  # noqa: F401
    import hubscan.sources  # noqa: F401
    import hubscan.weights  # noqa: F401 - the readers (torch, safetensors, onnx, gguf)
    import hubscan.weights.gguf
    import hubscan.weights.onnx

    hubscan.weights.gguf._gguf()
    hubscan.weights.onnx._onnx()
    import numpy as np

    from hubscan.esd.mp import fit_mp
    fit_mp(np.arange(1.0, 33.0), 64, 32)  # numba and the MP search's compiled code: ~150 MB, once a process
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, argv in enumerate(cases):
            out, err, result = (os.path.join(tmp, f"{i}.{k}") for k in ("out", "err", "json"))
            pid = os.fork()
            if pid == 0:
                try:
                    _child(argv, out, err, result)
                finally:
                    os._exit(0)
            deadline = time.monotonic() + timeout
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.02)
            got = {"argv": argv, "timed_out": not os.path.exists(result)}
            if os.path.exists(result):
                with open(result) as f:
                    got.update(json.load(f))
            for key, path in (("stdout", out), ("stderr", err)):
                with open(path, "rb") as f:
                    got[key] = f.read().decode("utf-8", "backslashreplace")
            results.append(got)
    return results


if __name__ == "__main__":
    args = sys.argv[1:]
    timeout = 60.0
    if args[0] == "--timeout":
        timeout, args = float(args[1]), args[2:]
    with open(args[0]) as f:
        todo = json.load(f)
    with open(args[1], "w") as f:
        json.dump(run(todo, timeout), f)
