"""Hub reads: one range request per tensor vs coalesced streamed ranges, surveyed through the loopback
fake Hub (``tests/hub_server.py``) with an injected latency on every request. Measured in one run.

    python benchmarks/bench_hub_reads.py [--models 200] [--latency 0.02] [--actors 2] [--json OUT]

The models are small transformer-shaped safetensors files (``--layers`` blocks of q/k/v/o ``--width``² and
an MLP width×4·width / 4·width×width, each with its bias, plus two norms: 6 matrices and 8 vectors a block),
one file served under ``--models`` repo ids. The survey (``--source hf``, embedded Ray) runs twice into
fresh datasets:

* **per tensor** — the merge rule off in the actors (``MERGE_GAP = MERGE_FRACTION = -1`` set by Ray's
  ``worker_process_setup_hook``): every needed tensor is its own range request, as hubscan read before;
* **coalesced** — the default rule (:func:`hubscan.weights.remote.coalesce`).

Prints models/min (survey wall time after start-up, as ``bench_survey.py``), HTTP requests per model
(as the fake Hub counted them) and bytes sent per model relative to the bytes the analysis needs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]


def per_tensor_reads() -> None:
    """Ray worker setup hook: turn the merge rule off (each tensor its own range request)."""
    from hubscan.weights import remote
    remote.MERGE_GAP = -1
    remote.MERGE_FRACTION = -1.0


def make_model(path: Path, layers: int, width: int = 64) -> int:
    """Write the model; returns the bytes the analysis needs (header + every ≥ 2-D tensor)."""
    import torch
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(0)
    t = {}
    w = width
    for i in range(layers):
        p = f"layers.{i}."
        for name in ("q", "k", "v", "o"):
            t[p + f"attn.{name}.weight"] = torch.randn(w, w, generator=g) / w ** 0.5
            t[p + f"attn.{name}.bias"] = torch.zeros(w)
        t[p + "mlp.up.weight"], t[p + "mlp.up.bias"] = torch.randn(4 * w, w, generator=g) / w ** 0.5, torch.zeros(4 * w)
        t[p + "mlp.down.weight"], t[p + "mlp.down.bias"] = torch.randn(w, 4 * w, generator=g) / w, torch.zeros(w)
        t[p + "norm1.weight"], t[p + "norm2.weight"] = torch.ones(w), torch.ones(w)
    save_file(t, str(path))
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    return header + sum(v.numel() * 4 for v in t.values() if v.dim() >= 2)


def run(hub, out: Path, n_models: int, actors: int, per_tensor: bool) -> dict:
    import ray
    from hubscan.survey import SurveyConfig, survey
    env = {"worker_process_setup_hook": per_tensor_reads} if per_tensor else {}
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, runtime_env=env)
    try:
        hub.reset_stats()
        s = survey(SurveyConfig(source="hf", out=str(out), actors=actors, progress=False, keep_esd=False,
                                limit=n_models, hub={"endpoint": hub.endpoint}))
    finally:
        ray.shutdown()
    assert s["num_success"] == n_models, s
    wall = s["seconds"] - s["startup_seconds"]
    resolves = [r for r in hub.requests() if r.kind == "resolve"]
    return {"seconds": wall, "models_per_min": n_models / wall * 60, "requests_per_model": len(resolves) / n_models,
            "bytes_per_model": sum(r.bytes_sent for r in resolves) / n_models,
            "info_calls": len(hub.requests(kind="info")), "list_calls": len(hub.requests(kind="list"))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=64, help="hidden size (MLP 4×)")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added to every request (default 0.02)")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO / "tests"))
    from hub_server import FakeHub, delay, isolated_hf_client

    work = Path(tempfile.mkdtemp(prefix="bench-hub-reads-"))
    model = work / "model.safetensors"
    needed = make_model(model, args.layers, args.width)
    results = {"models": args.models, "latency_s": args.latency, "actors": args.actors, "needed_bytes": needed,
               "layers": args.layers, "width": args.width,
               "cpus": os.cpu_count()}
    with isolated_hf_client(work / "cache"), FakeHub() as hub:
        for i in range(args.models):
            hub.add_model(f"bench/model-{i:04d}", {"model.safetensors": model}, info={"downloads": 10_000 - i})
        hub.inject(lambda rec: True, delay(args.latency), times=None)
        for label, per_tensor in (("per_tensor", True), ("coalesced", False)):
            r = run(hub, work / label, args.models, args.actors, per_tensor)
            results[label] = r
            print(f"{label:>10}: {r['models_per_min']:7.1f} models/min ({r['seconds']:.1f} s), "
                  f"{r['requests_per_model']:.1f} requests/model, bytes {r['bytes_per_model'] / needed:.3f}× needed, "
                  f"model_info calls {r['info_calls']}, list pages {r['list_calls']}")
    results["speedup"] = results["coalesced"]["models_per_min"] / results["per_tensor"]["models_per_min"]
    print(f"coalesced / per tensor: {results['speedup']:.2f}× models/min")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
