"""The census dress rehearsal: a hub-in-a-box served by the fake Hub, surveyed end to end, every outcome
explained. Measured in one run.

    python benchmarks/bench_rehearsal.py [--box DIR] [--quick] [--actors 2] [--latency 0.02]
                                         [--rate-limit api=1000/300 ...] [--week2] [--budget 200/20]
                                         [--budget-models 100] [--json OUT]

Steps:

1. **box** — ``python -m hubscan.demo.hubbox DIR`` (generated unless ``--box`` names one already made;
   ``--quick``: the small box).
2. **serve** — ``FakeHub.add_hubbox`` on loopback with ``--latency`` on every request (and ``--rate-limit``
   windows when given), LFS files redirected (302) to a second origin as the Hub's CDN; gated repositories
   gated, the ones marked deleted-after-listing armed.
3. **survey** — ``hubscan survey --source hf --endpoint … --actors N`` (the CLI, in a subprocess, embedded Ray).
4. **local** — ``hubscan survey --source list:…`` of the same files on disk (each repository's folder, or the
   one file the hub survey analyzed), the reference for "rows equal".
5. **report** — models/min (survey time after Ray start-up), HTTP requests per repository (median, p99, from
   the fake Hub's own log), bytes sent ÷ bytes needed (needed: each analyzed safetensors file's header and
   its tensors of rank ≥ 2; whole other files), outcomes against the manifest's expectations (failures grouped
   by reason, each explained: as expected, a capability the manifest says is not built yet, or UNEXPECTED
   with what the manifest says the repository holds),
   and the layer rows of every model compared with the local analysis (status, N, M, alpha).
   **dedupe**: each byte-identical re-upload pair of the box — which one got the other's rows
   (``same_content_as``), and the copy's requests and bytes from the fake Hub's log.
6. **week 2** (``--week2``) — ``python -m hubscan.demo.hubbox BOX --week2`` (new revisions for 10 % of the
   repositories, new ones, deleted ones, one made gated), served by a fresh fake Hub, surveyed into the same
   dataset: the repositories read (any resolve / CDN request) against those the week-2 manifest says must be
   read, the deleted ones' rows (kept, ``last_seen`` of week 1), and ``hubscan changes``' counts.
7. **budget** (``--budget B/W``) — the first ``--budget-models`` models surveyed again into a fresh dataset by
   4 actors with ``--hub-budget resolvers=B/W`` through a fake Hub that limits resolvers to B per W seconds
   itself: the most requests in any W seconds of its log (≤ B), its 429s, and the survey's time against
   requests ÷ rate (rate = B / (W + the budget's 1 s slack)).

Nothing stops the report: a step that fails is reported with its reason and the next steps run on what there
is. Exit status 0 when the report was written (its figures say how the survey did).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
           "HF_HUB_DISABLE_TELEMETRY": "1", "RAY_AUTH_MODE": "disabled", "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)  # the survey is anonymous: gated repositories stay closed
    return env


def _run(cmd: list[str], log: Path, timeout: float) -> tuple[int, float]:
    t = time.monotonic()
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.monotonic() - t


def _read(dataset: Path, table: str):
    from hubscan.store import Dataset
    try:
        return Dataset(str(dataset), create=False).read(table).to_pylist()
    except Exception as exc:  # noqa: BLE001 - the report says what is missing
        print(f"  cannot read {table} of {dataset}: {exc}", file=sys.stderr)
        return []


def expand(folder: Path, files: list[str]) -> list[str]:
    """The weight files behind a models row's ``files``: a shard index (``*.index.json``, how hubscan names a
    sharded model) stands for the shards of its ``weight_map``."""
    out = []
    for name in files:
        p = folder / name
        if name.endswith(".index.json") and p.is_file():
            base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
            out += sorted({base + v for v in json.loads(p.read_text()).get("weight_map", {}).values()})
        else:
            out.append(name)
    return out


def needed_bytes(folder: Path, files: list[str]) -> int:
    """Bytes an analysis needs from the files it analyzed: a safetensors file's 8-byte length, header and
    tensors of rank ≥ 2; the whole of any other file."""
    total = 0
    for name in expand(folder, files):
        p = folder / name
        if not p.is_file():
            continue
        if p.suffix == ".safetensors":
            with p.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            total += 8 + n + sum(t["data_offsets"][1] - t["data_offsets"][0] for k, t in header.items()
                                 if k != "__metadata__" and len(t.get("shape", [])) >= 2)
        else:
            total += p.stat().st_size
    return total


def _norm(reason: str | None) -> str:
    """A reason without its ids, paths and numbers (to group failures)."""
    r = reason or ""
    r = re.sub(r"(/[\w.\-]+)+", "<path>", r)
    r = re.sub(r"\b[\w.\-]+/[\w.\-]+\b", "<id>", r)
    r = re.sub(r"\d+", "N", r)
    return r[:140]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def outcomes(manifest: dict, models: list[dict], box: Path) -> dict:
    """Each repository's outcome against the manifest's expectation (status, and the weight files a complete
    analysis reads): counts, and the failures and surprises grouped by reason, each explained."""
    got = {m["model_id"]: m for m in models}
    verdicts, groups = Counter(), defaultdict(list)
    for r in manifest["repos"]:
        exp, m = r["expect"], got.get(r["repo_id"])
        status, reason = (m["status"], m.get("reason")) if m else ("absent", "no models row")
        problems = []
        if m and exp.get("files") is not None and status in ("success", "incomplete"):
            read, want = set(expand(box / r["folder"], list(m.get("files") or []))), set(exp["files"])
            if want - read:
                problems.append(f"weight files not read: {', '.join(sorted(want - read)[:3])}")
            if read - want:
                problems.append(f"files read beyond the model: {', '.join(sorted(read - want)[:3])}")
        if status == exp["status"] and not problems:
            verdict = "as expected"
        elif exp.get("needs"):
            verdict = f"needs {exp['needs']} (not built yet)"
        else:
            verdict = "UNEXPECTED"
        verdicts[verdict] += 1
        if status != "success" or verdict != "as expected":
            label = status + (" but partial" if problems else "")
            groups[(label, _norm("; ".join(problems) or reason), verdict)].append(
                {"repo_id": r["repo_id"], "kind": r["kind"], "expected": exp["status"], "why": exp["why"]})
    failures = [{"status": s, "reason": rr, "verdict": v, "count": len(items),
                 "explanation": items[0]["why"] if v != "UNEXPECTED" else
                 f"manifest expected {items[0]['expected']}: {items[0]['why']}",
                 "repos": [i["repo_id"] for i in items[:6]]}
                for (s, rr, v), items in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
    return {"verdicts": dict(verdicts), "failures": failures,
            "status": dict(Counter(m["status"] for m in models))}


def compare_rows(hub_layers: list[dict], local_layers: list[dict], local_to_repo: dict) -> dict:
    """Layer rows of each model: the hub survey's against the local analysis of the same files."""
    def index(rows, key):
        out = defaultdict(dict)
        for r in rows:
            out[key(r["model_id"])][(r["name"], r["part"])] = r
        return out
    hub = index(hub_layers, lambda x: x)
    loc = index(local_layers, lambda x: local_to_repo.get(x, x))
    equal, differ, max_da = 0, [], 0.0
    for repo in sorted(set(hub) & set(loc)):
        a, b = hub[repo], loc[repo]
        same = a.keys() == b.keys()
        for k in a.keys() & b.keys():
            x, y = a[k], b[k]
            if (x["status"], x.get("N"), x.get("M")) != (y["status"], y.get("N"), y.get("M")):
                same = False
            ax, ay = x.get("alpha"), y.get("alpha")
            if ax is not None and ay is not None:
                max_da = max(max_da, abs(ax - ay))
                same &= ax == ay or abs(ax - ay) <= 1e-9 * max(1.0, abs(ay))
            elif (ax is None) != (ay is None):
                same = False
        equal += same
        if not same:
            differ.append(repo)
    return {"models_compared": len(set(hub) & set(loc)), "models_equal": equal, "max_abs_dalpha": max_da,
            "differ": differ[:20], "only_hub": sorted(set(hub) - set(loc))[:20],
            "only_local": sorted(set(loc) - set(hub))[:20]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--box", default=None, help="a generated hub-in-a-box (default: generate one in a temp folder)")
    ap.add_argument("--quick", action="store_true", help="generate the small box")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added to every request (default 0.02)")
    ap.add_argument("--rate-limit", action="append", default=[], metavar="KIND=R/W")
    ap.add_argument("--no-redirect", action="store_true",
                    help="serve LFS files from the hub itself (default: a 302 to a second origin, as the Hub's CDN)")
    ap.add_argument("--work", default=None, help="folder for the datasets and logs (default: a temp folder)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds each survey may take")
    ap.add_argument("--week2", action="store_true", help="mutate the box and survey week 2 into the same dataset")
    ap.add_argument("--budget", default=None, metavar="B/W",
                    help="also survey --budget-models models with 4 actors under a budget of B resolver requests per W s")
    ap.add_argument("--budget-models", type=int, default=100)
    ap.add_argument("--budget-only", action="store_true", help="run the budget step alone (on --box)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from hub_server import FakeHub, isolated_hf_client

    work = Path(args.work or tempfile.mkdtemp(prefix="rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"actors": args.actors, "latency_s": args.latency, "redirect": not args.no_redirect,
                 "rate_limits": args.rate_limit, "cpus": os.cpu_count(), "steps": {}}
    # 1. box
    box = Path(args.box) if args.box else work / "box"
    if not (box / "manifest.json").exists():
        rc, sec = _run([sys.executable, "-m", "hubscan.demo.hubbox", str(box)] + (["--quick"] if args.quick else []),
                       work / "hubbox.log", 3600)
        res["steps"]["box"] = {"rc": rc, "seconds": round(sec, 1)}
        if rc != 0:
            print(f"box generation failed (rc {rc}): see {work / 'hubbox.log'}")
            return res
    manifest = json.loads((box / "manifest.json").read_text())
    res["box"] = {"repos": manifest["repos_total"], "counts": manifest["counts"], "seconds": manifest["seconds"],
                  "not_built": len(manifest["not_built"])}
    print(f"box: {manifest['repos_total']} repositories ({manifest['counts']}), generated in {manifest['seconds']} s")
    if args.budget_only:
        res["budget"] = budget(box, work, args)
        print(f"budget: {res['budget']}")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=str))
        return res
    limits = {}
    for spec in args.rate_limit:
        kind, _, rw = spec.partition("=")
        r, _, w = rw.partition("/")
        limits[kind] = (int(r), float(w))
    hub_ds, local_ds = work / "hub-dataset", work / "local-dataset"
    with isolated_hf_client(work / "hf-cache"), \
            FakeHub(latency=args.latency, rate_limits=limits, lfs_redirect=not args.no_redirect) as hub:
        hub.add_hubbox(box)
        hub.reset_stats()
        # 3. survey through the fake Hub
        rc, sec = _run([sys.executable, "-m", "hubscan.cli", "survey", "--source", "hf", "--endpoint", hub.endpoint,
                        "--out", str(hub_ds), "--actors", str(args.actors), "--no-progress", "--sort", "downloads"],
                       work / "survey-hub.log", args.timeout)
        res["steps"]["survey_hub"] = {"rc": rc, "seconds": round(sec, 1)}
        log = hub.requests()
        windows = {k: max(hub.window_counts(k, 300).values() or [0]) for k in ("api", "resolvers")}
    print(f"hub survey: rc {rc}, {sec:.1f} s (log: {work / 'survey-hub.log'})")
    models = _read(hub_ds, "models")
    surveys = _read(hub_ds, "surveys")
    s = surveys[-1] if surveys else {}
    wall = (s.get("seconds") or sec) - (s.get("startup_seconds") or 0.0)
    analyzed = [m for m in models if m["status"] in ("success", "incomplete")]
    res["survey"] = {"models": len(models), "analyzed": len(analyzed), "seconds_after_startup": round(wall, 1),
                     "models_per_min": round(len(models) / wall * 60, 1) if wall > 0 else None,
                     "startup_seconds": s.get("startup_seconds")}
    # requests and bytes per repository, from the fake Hub's own log
    per_repo_req, per_repo_bytes = Counter(), Counter()
    for r in log:
        if r.repo_id:
            per_repo_req[r.repo_id] += 1
            if r.kind in ("resolve", "cdn"):
                per_repo_bytes[r.repo_id] += r.bytes_sent
    reqs = [per_repo_req[m["model_id"]] for m in models]
    need = {m["model_id"]: needed_bytes(box / next(r["folder"] for r in manifest["repos"] if r["repo_id"] == m["model_id"]),
                                        list(m.get("files") or []))
            for m in analyzed if any(r["repo_id"] == m["model_id"] for r in manifest["repos"])}
    sent = sum(per_repo_bytes[k] for k in need)
    res["requests"] = {"total": len(log), "list": sum(r.kind == "list" for r in log),
                       "per_model_median": statistics.median(reqs) if reqs else None,
                       "per_model_p99": _pct(reqs, 0.99), "per_model_max": max(reqs) if reqs else None,
                       "by_kind": dict(Counter(r.kind for r in log)), "max_per_5min_window": windows,
                       "statuses": dict(Counter(str(r.status) for r in log))}
    res["bytes"] = {"sent_for_analyzed": sent, "needed": sum(need.values()),
                    "ratio": round(sent / sum(need.values()), 3) if need and sum(need.values()) else None}
    res["outcomes"] = outcomes(manifest, models, box)
    # 4. the same files analyzed locally
    files = work / "local-list.txt"
    local_to_repo = {}
    lines = []
    hub_layers = _read(hub_ds, "layers")
    with_rows = {x["model_id"] for x in hub_layers}
    for m in models:  # every model the hub survey has layer rows of (failed ones too: the same failure locally)
        r = next((r for r in manifest["repos"] if r["repo_id"] == m["model_id"]), None)
        if r is None or m["model_id"] not in with_rows or not (box / r["folder"]).is_dir():
            continue
        folder, fs = box / r["folder"], list(m.get("files") or [])
        # the folder, as the repository; the one file read where the repository holds several whole models
        lines.append(str(folder / fs[0] if r["expect"].get("files") is None and len(fs) == 1 else folder))
    files.write_text("\n".join(lines) + "\n")
    rc, sec = _run([sys.executable, "-m", "hubscan.cli", "survey", "--source", f"list:{files}", "--out", str(local_ds),
                    "--actors", str(args.actors), "--no-progress", "--no-esd"], work / "survey-local.log", args.timeout)
    res["steps"]["survey_local"] = {"rc": rc, "seconds": round(sec, 1)}
    local_models = _read(local_ds, "models")
    for m in local_models:
        p = Path(m["model_id"]).resolve() if os.path.isabs(m["model_id"]) else (REPO / m["model_id"]).resolve()
        try:
            rel = p.relative_to((box / "repos").resolve()).parts
            local_to_repo[m["model_id"]] = "/".join(rel[:2])
        except ValueError:
            pass
    res["rows"] = compare_rows(hub_layers, _read(local_ds, "layers"), local_to_repo)
    res["dedupe"] = dedupe(manifest, models, log)
    if args.week2:
        res["week2"] = week2(box, work, hub_ds, args)
    if args.budget:
        res["budget"] = budget(box, work, args)
    _print(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return res


def dedupe(manifest: dict, models: list[dict], log) -> dict:
    """Each re-upload pair of the box (``same_as``): which of the two took the other's rows, the copy's requests
    and bytes (fake Hub log), and whether its rows are the original's."""
    got = {m["model_id"]: m for m in models}
    reqs, sent = Counter(), Counter()
    for r in log:
        if r.repo_id and r.kind != "list":
            reqs[r.repo_id] += 1
            sent[r.repo_id] += r.bytes_sent
    pairs = []
    for r in manifest["repos"]:
        if r["kind"] != "reupload" or r["same_as"] not in got or r["repo_id"] not in got:
            continue
        a, b = got[r["repo_id"]], got[r["same_as"]]
        copy = a if a.get("same_content_as") else b if b.get("same_content_as") else None
        pairs.append({"reupload": r["repo_id"], "original": r["same_as"], "status": b["status"],
                      "copy": copy["model_id"] if copy else None,
                      "copy_requests": reqs[copy["model_id"]] if copy else None,
                      "copy_bytes": sent[copy["model_id"]] if copy else None,
                      "reason_not": None if copy else f"{a['status']} / {b['status']}: {b.get('reason') or a.get('reason')}"})
    copied = [p for p in pairs if p["copy"]]
    return {"pairs": len(pairs), "deduped": len(copied),
            "max_requests": max((p["copy_requests"] for p in copied), default=None),
            "max_bytes": max((p["copy_bytes"] for p in copied), default=None),
            "not_deduped": [p for p in pairs if not p["copy"]]}


def week2(box: Path, work: Path, hub_ds: Path, args) -> dict:
    """The week-2 survey (see the module docstring): what was read against what the manifest says changed."""
    sys.path.insert(0, str(REPO / "tests"))
    from hub_server import FakeHub, isolated_hf_client
    if not (box / "week2" / "manifest.json").exists():
        rc, sec = _run([sys.executable, "-m", "hubscan.demo.hubbox", str(box), "--week2"], work / "week2.log", 3600)
        if rc != 0:
            return {"error": f"hubbox --week2 failed (rc {rc}): see {work / 'week2.log'}"}
    m2 = json.loads((box / "week2" / "manifest.json").read_text())
    with isolated_hf_client(work / "hf-cache-2"), \
            FakeHub(latency=args.latency, lfs_redirect=not args.no_redirect) as hub:
        hub.add_hubbox(box, week=2)
        hub.reset_stats()
        rc, sec = _run([sys.executable, "-m", "hubscan.cli", "survey", "--source", "hf", "--endpoint", hub.endpoint,
                        "--out", str(hub_ds), "--actors", str(args.actors), "--no-progress", "--sort", "downloads"],
                       work / "survey-week2.log", args.timeout)
        log = hub.requests()
    read = {r.repo_id for r in log if r.repo_id and r.kind != "list"}
    must = {r["repo_id"] for r in m2["repos"] if r["expect"].get("read")}
    models = _read(hub_ds, "models")
    surveys = sorted(_read(hub_ds, "surveys"), key=lambda s: s["started_at"])
    s1, s2 = surveys[-2]["started_at"], surveys[-1]["started_at"]
    deleted = {c["repo_id"] for c in m2["changes"] if c["change"] == "deleted"}
    kept = [m for m in models if m["model_id"] in deleted]
    from hubscan.query import survey_changes
    ch = survey_changes(str(hub_ds))
    return {"rc": rc, "seconds": round(sec, 1), "changes": m2["changes_count"], "listed": surveys[-1]["num_models"],
            "already_done": surveys[-1]["num_already_done"], "requests": len(log),
            "list_requests": sum(r.kind == "list" for r in log), "repos_read": len(read), "must_read": len(must),
            "read_not_changed": sorted(read - must)[:20], "changed_not_read": sorted(must - read)[:20],
            "bytes_sent": sum(r.bytes_sent for r in log),
            "deleted_rows_kept": len(kept), "deleted_last_seen_week1": sum(m["last_seen"] == s1 for m in kept),
            "changes_report": {k: len(ch[k]) for k in ("new", "new_revision", "unlisted", "access", "status")},
            "week2_seconds": surveys[-1]["seconds"], "started": [str(s1), str(s2)]}


def budget(box: Path, work: Path, args) -> dict:
    """The budget run (see the module docstring)."""
    sys.path.insert(0, str(REPO / "tests"))
    from hub_server import FakeHub, isolated_hf_client
    b, w = args.budget.split("/")
    b, w = int(b), float(w)
    ds = work / "budget-dataset"
    with isolated_hf_client(work / "hf-cache-b"), \
            FakeHub(latency=args.latency, lfs_redirect=not args.no_redirect, rate_limits={"resolvers": (b, w)}) as hub:
        hub.add_hubbox(box)
        hub.reset_stats()
        rc, sec = _run([sys.executable, "-m", "hubscan.cli", "survey", "--source", "hf", "--endpoint", hub.endpoint,
                        "--out", str(ds), "--actors", "4", "--cpus-per-actor", "0.5", "--no-progress",
                        "--sort", "downloads", "--limit", str(args.budget_models), "--hub-budget", f"resolvers={b}/{w}"],
                       work / "survey-budget.log", args.timeout)
        log = [r for r in hub.requests() if r.rate_kind == "resolvers"]
    times = sorted(r.time for r in log)
    j, most = 0, 0
    for i, t in enumerate(times):  # the most requests in any half-open interval of w seconds
        while times[j] <= t - w:
            j += 1
        most = max(most, i - j + 1)
    s = (_read(ds, "surveys") or [{}])[-1]
    span = times[-1] - times[0] if times else 0.0
    rate = b / (w + 1.0)
    return {"rc": rc, "B": b, "W": w, "actors": 4, "models": s.get("num_models"), "resolver_requests": len(log),
            "max_in_any_window": most, "status_429": sum(r.status == 429 for r in log),
            "seconds_first_to_last_request": round(span, 1), "requests_over_rate": round(len(log) / rate, 1),
            "ratio": round(span / (len(log) / rate), 3) if log else None,
            "survey_seconds_after_startup": round((s.get("seconds") or 0) - (s.get("startup_seconds") or 0), 1)}


def _print(res: dict) -> None:
    s, q, b, o, rows = res["survey"], res["requests"], res["bytes"], res["outcomes"], res["rows"]
    print(f"survey: {s['models']} models ({s['analyzed']} analyzed) in {s['seconds_after_startup']} s after start-up: "
          f"{s['models_per_min']} models/min with {res['actors']} actors, {res['latency_s'] * 1000:.0f} ms per request")
    print(f"requests: {q['total']} ({q['list']} list pages); per model median {q['per_model_median']}, "
          f"p99 {q['per_model_p99']}, max {q['per_model_max']}; by kind {q['by_kind']}; statuses {q['statuses']}")
    print(f"bytes sent ÷ needed (analyzed models): {b['ratio']} ({b['sent_for_analyzed']:,} / {b['needed']:,})")
    print(f"outcomes: {o['status']}; against the manifest: {o['verdicts']}")
    for f in o["failures"]:
        print(f"  {f['count']:4d} × {f['status']}: {f['reason'] or '-'}\n"
              f"         [{f['verdict']}] {f['explanation']}  e.g. {', '.join(f['repos'][:3])}")
    print(f"rows: {rows['models_equal']} of {rows['models_compared']} models equal to the local analysis "
          f"(max |Δalpha| {rows['max_abs_dalpha']:.2e}); differ: {rows['differ'][:5]}; only hub {rows['only_hub'][:5]}; "
          f"only local {rows['only_local'][:5]}")
    d = res["dedupe"]
    print(f"dedupe: {d['deduped']} of {d['pairs']} re-upload pairs took the other's rows; the copy's requests ≤ "
          f"{d['max_requests']}, bytes ≤ {d['max_bytes']}; not deduped: {d['not_deduped'][:3]}")
    if "week2" in res:
        w = res["week2"]
        print(f"week 2: {w}")
    if "budget" in res:
        print(f"budget: {res['budget']}")


if __name__ == "__main__":
    main()
