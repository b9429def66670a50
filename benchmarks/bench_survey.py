"""Survey overhead and throughput, measured in one run on this machine.

    python benchmarks/bench_survey.py [--quick] [--json OUT]

Over the local hub of real weights (``hubscan.demo.localhub``: all-MiniLM-L6-v2, silero-vad, the 15
LigandMPNN-family checkpoints, 5 PocketNet folds):

* **plain loop**: ``hubscan.analyze`` of every model in one process, each model's rows written to
  a Parquet file (what ``hubscan analyze MODEL --out`` does, without a process per model);
* **survey, 1 actor** and **survey, 2 actors** on an embedded local Ray, each into a fresh dataset
  (esd table on); the survey reports its start-up (``ray.init`` → first analysis actor ready, i.e.
  Ray plus the actor's torch/hubscan imports), which is subtracted:
  overhead = (survey − start-up) / plain loop − 1 (target ≤ 15 %); Ray's shutdown is not counted.
  The survey also writes the ``esd`` table and the ``models`` rows, which the plain loop does not.

Prints the ratios, throughput (models/min) with 1 vs 2 actors, and the dataset's size per model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 models instead of 22")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import ray
    import torch
    import hubscan
    from hubscan.demo.localhub import build_local_hub
    from hubscan.sources import enumerate_models
    from hubscan.survey import SurveyConfig, survey

    work = Path(tempfile.mkdtemp(prefix="bench-survey-"))
    hub = work / "hub"
    links = build_local_hub(hub)
    if args.quick:
        for link in links[5:]:
            os.unlink(link)
    models = [ref.path for ref, _ in enumerate_models(f"local:{hub}")]
    print(f"{len(models)} models, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")

    import pyarrow.parquet as pq
    hubscan.analyze(models[0]).to_arrow()  # warm-up (imports, BLAS)
    t = time.perf_counter()
    for i, m in enumerate(models):  # what `hubscan analyze MODEL --out layers.parquet` does, in one process
        pq.write_table(hubscan.analyze(m).to_arrow(), str(work / f"plain-{i}.parquet"))
    plain = time.perf_counter() - t
    print(f"plain loop of hubscan.analyze + Parquet rows: {plain:.2f} s ({len(models) / plain * 60:.1f} models/min)")

    results = {"models": len(models), "plain_loop_s": plain}
    for actors in (1, 2):
        out = work / f"ds{actors}"
        t = time.perf_counter()
        s = survey(SurveyConfig(source=f"local:{hub}", out=str(out), actors=actors, cpus_per_actor=os.cpu_count() / actors,
                                progress=False))  # embedded Ray: started and stopped by the survey
        total = time.perf_counter() - t
        startup = s["startup_seconds"]  # ray.init + first actor process up with torch/hubscan imported
        wall = s["seconds"] - startup   # the survey's own wall time after start-up (Ray shutdown excluded)
        assert s["num_success"] == len(models), s
        size = dir_size(out)
        results[f"survey_{actors}_actor_s"] = wall
        results[f"ray_startup_{actors}_s"] = startup
        results[f"dataset_bytes_per_model_{actors}"] = size / len(models)
        print(f"survey, {actors} actor(s): {wall:.2f} s after start-up {startup:.2f} s (Ray + actor imports) "
              f"({len(models) / wall * 60:.1f} models/min); dataset {size / 1e6:.2f} MB = "
              f"{size / len(models) / 1e3:.0f} kB/model")

    over1 = results["survey_1_actor_s"] / plain - 1
    results["overhead_1_actor"] = over1
    results["speedup_2_vs_1_actor"] = results["survey_1_actor_s"] / results["survey_2_actor_s"]
    print("\nratios")
    print(f"  survey (1 actor, excl. Ray start-up) vs plain loop: {over1 * 100:+.1f} % "
          f"(target ≤ +15 %) {'PASS' if over1 <= 0.15 else 'FAIL'}")
    print(f"  throughput 2 actors / 1 actor: {results['speedup_2_vs_1_actor']:.2f}× "
          f"(2 cores; each actor gets cores/actors BLAS threads)")
    print(f"  dataset size per model: {results['dataset_bytes_per_model_1'] / 1e3:.0f} kB "
          f"(models + layers + esd tables, zstd Parquet)")
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
