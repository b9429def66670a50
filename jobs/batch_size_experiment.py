"""Toy batch-size experiment: does a smaller SGD batch give heavier-tailed layer ESDs (smaller alpha)?

Trains a small MLP / CNN on scikit-learn's digits at batch sizes 2 … 512, surveys the checkpoints with
hubscan and tests the trend of alpha with batch size (Martin & Mahoney, JMLR 2021 §7). The work is
:mod:`hubscan.experiments.batch_size`; this file parses the command line and calls it.

    python jobs/batch_size_experiment.py                 # default run: 54 models, 1.5-5.5 min on 2 busy CPU cores
    python jobs/batch_size_experiment.py --small         # ≈ 20-40 s smoke run (MLP, 3 batch sizes, 1 seed, 2 epochs)
    python jobs/batch_size_experiment.py --models mlp --budget steps --steps 3000 --out out/bs_steps
                                                         # variant: the same number of SGD steps for every B
    python jobs/batch_size_experiment.py --variants out/bs_steps   # summarize earlier runs in results.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hubscan.experiments import batch_size as bs


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="smoke run: MLP, batch sizes 4/64/512, 1 seed, 2 epochs")
    p.add_argument("--out", default=None, help="output folder (default out/batch_size[_small])")
    p.add_argument("--seeds", type=int, default=None, help="seeds per batch size (default 3; small 1)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20; small 2)")
    p.add_argument("--budget", choices=("epochs", "steps"), default="epochs",
                   help="same number of epochs for every batch size (MM regime, default) or same number of steps")
    p.add_argument("--steps", type=int, default=3000, help="SGD steps per run with --budget steps")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, the same for every batch size")
    p.add_argument("--width", type=int, default=256, help="hidden width W")
    p.add_argument("--channels", type=int, default=64, help="CNN conv channels")
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default 2,4,…,512; small 4,64,512)")
    p.add_argument("--models", default=None, help="mlp,cnn (default both; small mlp)")
    p.add_argument("--jobs", type=int, default=None, help="training processes (default min(2, CPUs))")
    p.add_argument("--actors", type=int, default=None, help="survey actors (default min(2, CPUs))")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--variants", default="",
                   help="comma-separated output folders of earlier runs (e.g. --budget steps) summarized in results.md")
    a = p.parse_args(argv)
    a.seeds = a.seeds if a.seeds is not None else (1 if a.small else 3)
    a.epochs = a.epochs if a.epochs is not None else (2 if a.small else 20)
    sizes = a.batch_sizes or ",".join(map(str, bs.SMALL_BATCH_SIZES if a.small else bs.DEFAULT_BATCH_SIZES))
    a.batch_sizes = sorted({int(b) for b in sizes.split(",") if b.strip()})
    a.models = [m.strip() for m in (a.models or ("mlp" if a.small else "mlp,cnn")).split(",") if m.strip()]
    cpus = os.cpu_count() or 1
    a.jobs = a.jobs or min(2, cpus)
    a.actors = a.actors or min(2, cpus)
    a.out = Path(a.out or ("out/batch_size_small" if a.small else "out/batch_size")).resolve()
    return a



def main(argv=None) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the job is the entry point: its local Ray, no token
    return bs.run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
