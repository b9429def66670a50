#!/usr/bin/env python
"""hubscan vs WeightWatcher 0.7.7 over a zoo of tiny transformers models: the fixed costs of small layers.

Usage::

    python benchmarks/bench_zoo.py ZOO_DIR [--suffix __base] [--every K] [--clock wall|cpu] [--json OUT]

``ZOO_DIR`` is a folder of models saved by transformers' ``save_pretrained`` (one per sub-folder with its
``config.json``), e.g. the ``models/`` folder that ``tools/zoo/build_zoo.py`` (project ``shared/``) writes:
every transformers architecture built at hidden size 64, 2 layers (about 480 base models, 12,000 matrices,
most of them 64 × 64 … 64 × 256). ``--suffix __base`` takes the folders whose name ends so (build_zoo's base
models; ``__lm`` its language-model heads), ``--every K`` every K-th of them (sorted by name).

For each model, in one process and one thread (torch, MKL, OpenMP, OpenBLAS), with a full garbage collection
before each timed call (outside the timer: otherwise one contender's call can pay for collecting the cycles
another left — the loaded model, WW's frames — which put single models 10× off their own time):

* **WW**: ``weightwatcher.WeightWatcher(model=m).analyze()`` (its defaults: no MP fit) on the model loaded
  with ``from_pretrained`` (loading is outside the timer);
* **hubscan**: ``hubscan.analyze(folder)`` with its defaults (MP fit, phases; the file read and the tensors
  typed from ``config.json`` inside the timer, as a first analysis of that model pays: the typing cache is
  cleared before each call);
* **hubscan, mp_fit=False**: the same with ``mp_fit=False`` (like-for-like with WW's default).

Prints the sums over the models every contender analyzed and their ratios (issue 20's criterion: hubscan's
default summed ≥ 2.5× faster than WW's default), then the models whose ratio is lowest. Models that WW or
hubscan cannot analyze (WW crashes on some parametrizations) are left out of every sum and counted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zoo_dir", help="folder of save_pretrained model folders")
    ap.add_argument("--suffix", default="", help="only the model folders whose name ends with this")
    ap.add_argument("--every", type=int, default=1, help="every K-th model (sorted by name)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time (robust on a busy machine)")
    ap.add_argument("--json", metavar="OUT", help="also write the per-model seconds to this JSON file")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch
    torch.set_num_threads(1)
    import transformers
    import weightwatcher
    from transformers.models.auto import modeling_auto

    import hubscan
    from hubscan.weights import modules

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    folders = sorted(d for d in os.listdir(args.zoo_dir) if os.path.isfile(os.path.join(args.zoo_dir, d, "config.json")))
    folders = [d for d in folders if d.endswith(args.suffix)][::max(1, args.every)]
    rows, left_out = [], []
    warm = False
    for name in folders:
        path = os.path.join(args.zoo_dir, name)
        try:
            with open(os.path.join(path, "config.json")) as f:
                cfg = json.load(f)
            cls = (cfg.get("architectures") or [None])[0]
            cls = getattr(transformers, cls, None) if isinstance(cls, str) else None
            if cls is None:
                base = modeling_auto.MODEL_MAPPING_NAMES.get(cfg.get("model_type"))
                cls = getattr(transformers, base if isinstance(base, str) else base[0])
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                model = cls.from_pretrained(path)
                ww = weightwatcher.WeightWatcher(model=model)
                if not warm:  # first calls import lazily: not timed
                    ww.analyze()
                    hubscan.analyze(path)
                    warm = True
                gc.collect()
                t = clock()
                ww.analyze()
                t_ww = clock() - t
            modules._cached_map.cache_clear()
            gc.collect()
            t = clock()
            hubscan.analyze(path)
            t_hub = clock() - t
            modules._cached_map.cache_clear()
            gc.collect()
            t = clock()
            hubscan.analyze(path, mp_fit=False)
            t_nomp = clock() - t
        except Exception as exc:  # noqa: BLE001 - a model either side cannot analyze is counted, not timed
            left_out.append((name, " ".join(str(exc).split())[:100]))
            continue
        rows.append({"model": name, "ww": t_ww, "hubscan": t_hub, "hubscan_mp_fit_false": t_nomp})
    ww_s = sum(r["ww"] for r in rows)
    hub_s = sum(r["hubscan"] for r in rows)
    nomp_s = sum(r["hubscan_mp_fit_false"] for r in rows)
    print(f"{len(rows)} models timed ({len(left_out)} left out), clock: {args.clock}, 1 thread")
    print(f"  WeightWatcher 0.7.7 analyze()      {ww_s:8.2f} s")
    print(f"  hubscan default (MP fit, phases)   {hub_s:8.2f} s   WW / hubscan = {ww_s / hub_s:.2f}× "
          f"(target ≥ 2.5×: {'PASS' if ww_s / hub_s >= 2.5 else 'FAIL'})")
    print(f"  hubscan mp_fit=False               {nomp_s:8.2f} s   WW / hubscan = {ww_s / nomp_s:.2f}×")
    print("  lowest ratios (WW / hubscan default):")
    for r in sorted(rows, key=lambda r: r["ww"] / r["hubscan"])[:5]:
        print(f"    {r['model'][:40]:40s} {r['ww'] / r['hubscan']:5.2f}×  ({r['hubscan'] * 1e3:.0f} vs {r['ww'] * 1e3:.0f} ms)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clock": args.clock, "rows": rows, "left_out": left_out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
