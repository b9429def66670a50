#!/usr/bin/env python
"""Cost of alpha's bootstrap CI and of the CSN KS p-value per layer, against the layer's eigendecomposition.

Usage::

    python benchmarks/bench_uncertainty.py [--sizes 384,1024,4096,16384] [--ci-samples 100]
                                           [--ks-samples 100] [--threads N] [--eig-max 4096]

For each n: a Student-t(ν = 3) n × n matrix (heavy-tailed, as the JMLR 2021 ensembles); the
eigendecomposition time is hubscan's own ``compute_esd`` (float64 Gram + eigvalsh, CPU); then the
power-law fit, the bootstrap CI (``--ci-samples`` full refits) and the KS p-value (``--ks-samples``
synthetic fits) on that ESD, each timed once (``time.perf_counter``; ``--clock cpu`` for
``time.process_time``). Above ``--eig-max`` the eigendecomposition is not run (a 16,384² float64
eigvalsh takes many minutes on 2 cores): its time is extrapolated as (n/n₀)³ from the largest
measured n₀ and marked ``~``; the ESD used for the CI/KS timing is then the n₀ ESD resampled to n
points (same shape, hence the same fit work per point). Prints one table row per n with the ratio
CI / eig; the acceptance point is the ratio at n = 4096 (≤ 0.20).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def main() -> None:
    warnings.filterwarnings("ignore", category=RuntimeWarning)   # nanmax on tied resamples
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="384,1024,4096,16384")
    ap.add_argument("--ci-samples", type=int, default=100)
    ap.add_argument("--ks-samples", type=int, default=100)
    ap.add_argument("--eig-max", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from hubscan.esd.eigen import compute_esd
    from hubscan.esd.powerlaw import fit_powerlaw
    from hubscan.esd.uncertainty import alpha_bootstrap_ci, ks_pvalue

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    compute_esd(torch.randn(64, 64, dtype=torch.float64))          # warm-up (lazy LAPACK / thread pools)
    fit_powerlaw(np.linspace(1.0, 2.0, 50))
    print(f"threads {args.threads}, clock {args.clock}, CI B = {args.ci_samples}, KS B = {args.ks_samples}")
    print(f"{'n':>6} {'eig s':>9} {'fit s':>7} {'CI s':>7} {'KS s':>7} {'CI/eig':>7} {'KS/eig':>7}  alpha [CI]   p")
    last = None
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(n)
        if n <= args.eig_max:
            W = torch.from_numpy(rng.standard_t(3.0, size=(n, n)))
            t = clock()
            evals = compute_esd(W).evals
            t_eig, mark = clock() - t, " "
            last = (n, t_eig, evals)
        else:
            n0, t0, ev0 = last
            t_eig, mark = t0 * (n / n0) ** 3, "~"
            evals = np.sort(rng.choice(ev0, n))
        t = clock()
        fit = fit_powerlaw(evals)
        t_fit = clock() - t
        t = clock()
        ci = alpha_bootstrap_ci(evals, fit.xmin, level=0.95, samples=args.ci_samples)
        t_ci = clock() - t
        t = clock()
        p = ks_pvalue(evals, fit.alpha, fit.xmin, fit.D, samples=args.ks_samples)
        t_ks = clock() - t
        print(f"{n:>6} {mark}{t_eig:>8.2f} {t_fit:>7.3f} {t_ci:>7.2f} {t_ks:>7.2f} {t_ci / t_eig:>7.3f} "
              f"{t_ks / t_eig:>7.3f}  {fit.alpha:.2f} [{ci.lo:.2f}, {ci.hi:.2f}] {p:.2f}", flush=True)


if __name__ == "__main__":
    main()
