"""Toy batch-size experiment (the library behind ``jobs/batch_size_experiment.py``): does a smaller SGD
batch give heavier-tailed layer ESDs (smaller alpha)?

Martin & Mahoney ("Traditional and Heavy-Tailed Self Regularization in Neural Network Models", ICML 2019;
JMLR 2021 §7) train the same network at batch sizes 2 … 1024 with everything else held fixed and find that
smaller batches give heavier-tailed ESDs of the weight matrices (smaller power-law alpha, more eigenvalues
beyond the Marchenko-Pastur bulk): stronger implicit self-regularization, and better test accuracy.

This job reproduces that at toy scale on data that ships offline (scikit-learn's 8×8 ``load_digits``):

1. trains a small MLP (64→W→W→10) and a small CNN (conv 1→64, conv 64→64, max-pool, dense 1024→W, dense
   W→10) at batch sizes 2, 4, …, 512 with several seeds each: plain SGD (no momentum, no weight decay, no
   schedule), one fixed learning rate for every batch size, the same number of *epochs* for every run (so a
   batch of 2 takes 256× more steps than a batch of 512, the regime of the MM experiment);
2. saves every ``state_dict`` as ``OUT/hub/<model>_bs<B>_seed<S>.safetensors`` and the test accuracy in
   ``OUT/accuracy.csv`` (``model_id`` = the checkpoint's name in ``OUT/hub``, the id the survey records);
3. surveys ``OUT/hub`` with the normal Ray pipeline (:func:`hubscan.survey.survey`) into ``OUT/dataset``;
4. reads the dataset with DuckDB (:func:`hubscan.query.connect`) and correlates the mean layer alpha (and
   num_spikes, mp_softrank, test accuracy) with log2(batch size) through :func:`hubscan.correlate.fit_stats`
   (Spearman, Kendall, OLS slope with its t-test);
5. writes plots (:mod:`hubscan.report.batch_size`), ``OUT/results.json`` and ``OUT/results.md``.

Training (:func:`train_run`, :func:`train_all`), the analysis (:func:`run`) and the report text
(:func:`markdown`) live here; the job file only parses the command line (:func:`parse_args`) and calls
:func:`run`.

    python jobs/batch_size_experiment.py                 # default run: 54 models, 1.5-5.5 min on 2 busy CPU cores
    python jobs/batch_size_experiment.py --small         # ≈ 20-40 s smoke run (MLP, 3 batch sizes, 1 seed, 2 epochs)
    python jobs/batch_size_experiment.py --models mlp --budget steps --steps 3000 --out out/bs_steps
                                                         # variant: the same number of SGD steps for every B
    python jobs/batch_size_experiment.py --variants out/bs_steps   # summarize earlier runs in results.md

``--budget steps`` is the control for the confound built into the fixed-epoch design: with a fixed
learning rate and a fixed number of epochs, a smaller batch also means more (and noisier) updates. Giving
every batch size the same number of steps leaves only the gradient-noise difference.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from hubscan.demo.digits import digits_split
from hubscan.records import RowStatus
from hubscan.sources.local import LocalSource
from hubscan.report.batch_size import fmt, fmt_p

DEFAULT_BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)
SMALL_BATCH_SIZES = (4, 64, 512)
N_CLASSES = 10
#: Layers enter the per-model means only with at least this many eigenvalues (the 10-class output
#: layer, M = 10, is always left out: hubscan fits it — it has ≥ 8 eigenvalues — but a power law on 10
#: eigenvalues says nothing).
MIN_EVALS_FOR_MEAN = 64


# --------------------------------------------------------------------------------------------- models
def build_model(kind: str, width: int, channels: int):
    if kind == "mlp":
        return _MLP(width)
    if kind == "cnn":
        return _CNN(width, channels)
    raise ValueError(f"unknown model {kind!r} (mlp, cnn)")


def _MLP(width: int):
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, width)      # 64×W: M = 64
            self.fc2 = nn.Linear(width, width)   # W×W: the big hidden layer
            self.fc3 = nn.Linear(width, N_CLASSES)

        def forward(self, x):
            x = self.fc1(x).relu()
            x = self.fc2(x).relu()
            return self.fc3(x)

    return MLP()


def _CNN(width: int, channels: int):
    from torch import nn
    import torch.nn.functional as F

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, channels, 3, padding=1)         # slices C×1: vectors, skipped by hubscan
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)  # 9 slices C×C pooled: M = C
            self.fc1 = nn.Linear(channels * 16, width)                # (16C)×W: the big hidden layer
            self.fc2 = nn.Linear(width, N_CLASSES)

        def forward(self, x):
            x = x.view(-1, 1, 8, 8)
            x = F.relu(self.conv1(x))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # → C×4×4
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc2(x)

    return CNN()


#: The largest hidden layer of each model (for the ESD plot).
BIG_LAYER = {"mlp": "fc2.weight", "cnn": "fc1.weight"}


# --------------------------------------------------------------------------------------------- training
def train_run(spec: dict) -> dict:
    """Train one (model, batch size, seed) and save its checkpoint. Runs in a worker process."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    torch.set_num_threads(spec["threads"])
    torch.use_deterministic_algorithms(True)
    Xtr, ytr, Xte, yte = (torch.from_numpy(a) for a in digits_split(spec["split_seed"]))
    n = len(Xtr)
    # the same initial weights for every batch size of one seed (paired design: only B differs)
    torch.manual_seed(1000 * spec["seed"] + (0 if spec["model"] == "mlp" else 1))
    model = build_model(spec["model"], spec["width"], spec["channels"])
    if spec.get("init_path") and not os.path.exists(spec["init_path"]):
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, spec["init_path"])
    opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.0, weight_decay=0.0)
    gen = torch.Generator().manual_seed(spec["seed"])
    B = spec["batch_size"]
    steps, total_steps = 0, spec["steps"]
    model.train()
    while steps < total_steps:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, B):  # the last, partial batch is kept
            idx = perm[i:i + B]
            loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps >= total_steps:
                break
    model.eval()
    with torch.no_grad():
        out_tr = model(Xtr)
        out_te = model(Xte)
        train_loss = float(F.cross_entropy(out_tr, ytr))
        train_acc = float((out_tr.argmax(1) == ytr).float().mean())
        test_acc = float((out_te.argmax(1) == yte).float().mean())
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, spec["path"])
    # the id the survey of the checkpoint folder records: the path relative to the surveyed root
    return {"model": spec["model"], "batch_size": B, "seed": spec["seed"], "model_id": Path(spec["path"]).name,
            "test_accuracy": round(test_acc, 6), "train_accuracy": round(train_acc, 6), "train_loss": train_loss, "steps": steps,
            "epochs": steps * B / n, "finite": finite, "seconds": time.perf_counter() - t0}


def steps_for(batch_size: int, n_train: int, budget: str, epochs: int, steps: int) -> int:
    if budget == "epochs":
        return epochs * math.ceil(n_train / batch_size)
    return steps


# --------------------------------------------------------------------------------------------- stats
def trend(x, y) -> dict:
    """Spearman rho, Kendall tau (with p-values) and the OLS slope of y on x with its t-test p-value,
    from :func:`hubscan.correlate.fit_stats` (None where undefined: n < 3 or a constant side)."""
    from hubscan.correlate import fit_stats
    f = fit_stats(x, y)
    out = {"n": int(f["n"])}
    if not math.isfinite(f["slope"]):
        out.update(spearman_rho=None, spearman_p=None, kendall_tau=None, kendall_p=None, ols_slope=None,
                   ols_slope_se=None, ols_p=None, ols_r2=None)
        return out
    out.update(spearman_rho=f["spearman_rho"], spearman_p=f["spearman_p"], kendall_tau=f["kendall_tau"],
               kendall_p=f["kendall_p"], ols_slope=f["slope"], ols_slope_se=f["slope_se"],
               ols_intercept=f["intercept"], ols_p=f["pearson_p"], ols_r2=f["r2"])
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_all(args, specs) -> list[dict]:
    results = []
    if args.jobs <= 1:
        for i, spec in enumerate(specs, 1):
            r = train_run(spec)
            results.append(r)
            _log_run(i, len(specs), r)
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    # spawn: no fork of a process that may hold OpenMP threads; longest runs (small batches) first
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(train_run, s) for s in specs]
        for i, fut in enumerate(as_completed(futs), 1):
            r = fut.result()
            results.append(r)
            _log_run(i, len(specs), r)
    return results


def _log_run(i, n, r):
    log(f"train [{i}/{n}] {r['model']} bs={r['batch_size']:<3} seed={r['seed']}: steps={r['steps']:<6} "
        f"train_acc={r['train_accuracy']:.3f} test_acc={r['test_accuracy']:.3f} ({r['seconds']:.1f}s)")


def run(args) -> dict:
    """Train, survey, analyze and write the results of one experiment.

    Parameters
    ----------
    args : argparse.Namespace
        As ``jobs/batch_size_experiment.py`` parses it: ``out`` (Path), ``models``, ``batch_sizes``,
        ``seeds``, ``epochs``, ``budget``, ``steps``, ``lr``, ``width``, ``channels``, ``jobs``,
        ``actors``, ``split_seed``, ``variants``.

    Returns
    -------
    dict
        What ``OUT/results.json`` holds.
    """
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    out = args.out
    hub, dataset, init_dir = out / "hub", out / "dataset", out / "init"
    for d in (hub, dataset, init_dir):  # this job's own outputs: a rerun starts clean
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    Xtr, ytr, Xte, yte = digits_split(args.split_seed)
    n_train = len(Xtr)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    log(f"hubscan batch-size experiment → {out}")
    log(f"data: load_digits, {n_train} train / {len(Xte)} test (stratified, seed {args.split_seed}); "
        f"models {args.models}, batch sizes {args.batch_sizes}, seeds {args.seeds}, "
        f"{'epochs ' + str(args.epochs) if args.budget == 'epochs' else 'steps ' + str(args.steps)}, lr {args.lr}, "
        f"width {args.width}; {args.jobs} training processes × {threads} torch threads; "
        f"load average {load_start[0]:.2f} on {os.cpu_count()} CPUs")

    specs = []
    for model in args.models:
        for seed in range(args.seeds):
            for B in args.batch_sizes:
                specs.append({"model": model, "batch_size": B, "seed": seed, "lr": args.lr, "width": args.width,
                              "channels": args.channels, "split_seed": args.split_seed, "threads": threads,
                              "steps": steps_for(B, n_train, args.budget, args.epochs, args.steps),
                              "path": str(hub / f"{model}_bs{B}_seed{seed}.safetensors"),
                              "init_path": str(init_dir / f"{model}_seed{seed}.safetensors")})
    # the init checkpoint is written by the first run of each (model, seed) only: make that deterministic
    seen = set()
    for s in specs:
        key = (s["model"], s["seed"])
        if key in seen:
            s["init_path"] = None
        seen.add(key)
    # longest first (a step costs roughly a fixed overhead plus ~1/24 of it per sample; the CNN ~8× the MLP)
    specs.sort(key=lambda s: -s["steps"] * (1 + s["batch_size"] / 24) * (8 if s["model"] == "cnn" else 1))
    t0 = time.perf_counter()
    runs = train_all(args, specs)
    t_train = time.perf_counter() - t0
    runs.sort(key=lambda r: (r["model"], r["batch_size"], r["seed"]))
    log(f"trained {len(runs)} models in {t_train:.0f}s")

    import pandas as pd
    # hubscan.accuracy.ingest_csv reads model_id, metric, value (+ source, benchmark, split) and ignores the rest
    acc = pd.DataFrame([{"model_id": r["model_id"], "metric": "test_accuracy", "value": r["test_accuracy"],
                         "batch_size": r["batch_size"], "seed": r["seed"], "model": r["model"],
                         "source": LocalSource.name,
                         "benchmark": "sklearn-digits", "split": "test"} for r in runs])
    acc.to_csv(out / "accuracy.csv", index=False)
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)

    # ---- survey with the normal pipeline
    from hubscan.survey import SurveyConfig, survey
    t0 = time.perf_counter()
    log(f"survey local:{hub} → {dataset} ({args.actors} actors)")
    srow = survey(SurveyConfig(source=f"local:{hub}", out=str(dataset), actors=args.actors, progress=False))
    t_survey = time.perf_counter() - t0
    log(f"survey done in {t_survey:.0f}s: {srow['num_success']} success, {srow['num_failed']} failed, "
        f"{srow['num_skipped']} skipped")

    from hubscan.query import connect
    con = connect(str(dataset))
    models_df = con.execute("SELECT model_id, status, reason, alpha AS alpha_all_layers FROM models").df()
    layers = con.execute("""SELECT model_id, layer_id, name, layer_type, shape, N, M, rf, num_evals, status, reason, alpha,
                            num_spikes, mp_softrank, lambda_plus, lambda_max, phase, xmin
                            FROM layers ORDER BY model_id, layer_id""").df()
    # runs and dataset rows meet on the checkpoint's file name: the survey's local id is the path
    # relative to the surveyed folder (hub/), or the absolute path in older datasets
    def ckpt(model_id) -> str:
        return Path(str(model_id)).name

    meta = pd.DataFrame(runs).assign(ckpt=lambda f: f.model_id.map(ckpt)).set_index("ckpt")
    models_df["ckpt"] = models_df.model_id.map(ckpt)
    layers["ckpt"] = layers.model_id.map(ckpt)
    layers = layers[layers.ckpt.isin(meta.index)].copy()
    layers["model"] = layers.ckpt.map(meta["model"])
    layers["batch_size"] = layers.ckpt.map(meta["batch_size"])
    layers["seed"] = layers.ckpt.map(meta["seed"])
    enter = (layers.status == RowStatus.SUCCESS) & (layers.M != N_CLASSES) & (layers.num_evals >= MIN_EVALS_FOR_MEAN) \
        & layers.alpha.notna()
    layers["enters_mean"] = enter
    entered = layers[enter]
    per_run = entered.groupby("ckpt").agg(alpha=("alpha", "mean"), num_spikes=("num_spikes", "mean"),
                                          mp_softrank=("mp_softrank", "mean"), n_layers=("alpha", "size"))
    df = meta.join(per_run, how="left").reset_index()
    df = df.merge(models_df[["ckpt", "status", "alpha_all_layers"]], on="ckpt", how="left")
    df["log2_bs"] = np.log2(df.batch_size)

    # ---- init reference (untrained weights, same seeds): hubscan.analyze directly
    from hubscan import analyze
    init_rows, init_evals = [], {}
    for p in sorted(init_dir.glob("*.safetensors")):
        model = p.name.split("_")[0]
        res = analyze(str(p), keep_evals=True)
        for r in res.rows:
            if r["status"] == RowStatus.SUCCESS and r["M"] != N_CLASSES and r["num_evals"] >= MIN_EVALS_FOR_MEAN:
                init_rows.append({"model": model, "name": r["name"], "alpha": r["alpha"], "num_spikes": r["num_spikes"],
                                  "mp_softrank": r["mp_softrank"]})
        if p.name.endswith("seed0.safetensors"):
            init_evals[model] = res.evals.get(BIG_LAYER[model])
    init_df = pd.DataFrame(init_rows)

    # ---- per model: tables and trend tests
    results = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "data": {"dataset": "sklearn load_digits", "n_train": int(n_train), "n_test": int(len(Xte)),
                        "split": "stratified, test_size 0.25", "split_seed": args.split_seed},
               "optimizer": {"name": "SGD", "lr": args.lr, "momentum": 0.0, "weight_decay": 0.0,
                             "lr_schedule": "constant", "lr_scaling_with_batch_size": "none"},
               "min_evals_for_mean": MIN_EVALS_FOR_MEAN, "models": {}}
    for model in args.models:
        d = df[df.model == model]
        lay = layers[layers.model == model]
        layer_info = (lay.drop_duplicates("name")[["name", "layer_type", "shape", "N", "M", "rf", "num_evals", "status",
                                                    "reason", "enters_mean"]].to_dict("records"))
        per_bs = []
        for B, g in d.groupby("batch_size"):
            per_bs.append({"batch_size": int(B), "steps": int(g.steps.iloc[0]), "epochs": float(g.epochs.iloc[0]),
                           "n": int(len(g)),
                           **{f"{c}_{s}": float(getattr(g[c], s)()) if len(g) > (1 if s == "std" else 0) else None
                              for c in ("alpha", "num_spikes", "mp_softrank", "test_accuracy", "train_accuracy",
                                        "train_loss", "alpha_all_layers") for s in ("mean", "std")}})
        per_layer = {}
        for name, g in entered[entered.model == model].groupby("name"):
            per_layer[name] = {"alpha_mean_per_bs": {int(B): float(h.alpha.mean()) for B, h in g.groupby("batch_size")},
                               "trend_alpha": trend(np.log2(g.batch_size), g.alpha)}
        init = init_df[init_df.model == model] if len(init_df) else init_df
        results["models"][model] = {
            "layers": layer_info,
            "layers_in_mean": sorted({r["name"] for r in layer_info if r["enters_mean"]}),
            "per_batch_size": per_bs,
            "alpha_per_batch_size": {str(r["batch_size"]): r["alpha_mean"] for r in per_bs},
            "trend": {c: trend(d.log2_bs, d[c]) for c in ("alpha", "num_spikes", "mp_softrank", "test_accuracy",
                                                         "train_accuracy")},
            "alpha_vs_test_accuracy": trend(d.alpha, d.test_accuracy),
            "per_layer": per_layer,
            "init": {"alpha_mean": float(init.groupby("name").alpha.mean().mean()) if len(init) else None,
                     "per_layer_alpha": {k: float(v) for k, v in init.groupby("name").alpha.mean().items()}
                     if len(init) else {},
                     "num_spikes_mean": float(init.num_spikes.mean()) if len(init) else None,
                     "mp_softrank_mean": float(init.mp_softrank.mean()) if len(init) else None},
            "runs": d[["model_id", "batch_size", "seed", "steps", "alpha", "num_spikes", "mp_softrank",
                       "test_accuracy", "train_accuracy", "train_loss", "status"]].to_dict("records"),
        }

    # ---- plots
    from hubscan.report.batch_size import batch_size_plots
    plots = batch_size_plots(out, args, results, con, init_evals, big_layer=BIG_LAYER)
    t_total = time.perf_counter() - t_start
    results["timing"] = {"train_s": t_train, "survey_s": t_survey, "total_s": t_total,
                         "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
                         "cpus": os.cpu_count(), "train_processes": args.jobs, "torch_threads": threads}
    results["survey"] = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in srow.items()}
    results["plots"] = plots
    results["observation"] = {m: observe(m, results["models"][m]) for m in args.models}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    (out / "results.md").write_text(markdown(args, results))
    log(f"done in {t_total:.0f}s (train {t_train:.0f}s, survey {t_survey:.0f}s); load average "
        f"{load_start[0]:.2f} → {os.getloadavg()[0]:.2f}; results in {out / 'results.md'}")
    for m in args.models:
        log(results["observation"][m])
    return results


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def observe(model: str, r: dict) -> str:
    t, ta = r["trend"]["alpha"], r["trend"]["test_accuracy"]
    if t.get("spearman_rho") is None:
        return f"{model}: too few runs for a trend test"
    # Kendall's p is exact for small n (Spearman's t approximation gives p = 0 for a perfect rank order)
    sig = t["spearman_p"] < 0.05 and t["kendall_p"] < 0.05
    first, last = r["per_batch_size"][0], r["per_batch_size"][-1]
    s = (f"{model}: mean layer alpha goes from {fmt(first['alpha_mean'], 2)} at B={first['batch_size']} to "
         f"{fmt(last['alpha_mean'], 2)} at B={last['batch_size']} (Spearman rho(log2 B, alpha) = "
         f"{t['spearman_rho']:+.2f}, p = {fmt_p(t['spearman_p'])}; Kendall tau = {t['kendall_tau']:+.2f}, p = {fmt_p(t['kendall_p'])}; OLS slope {t['ols_slope']:+.3f} per doubling, "
         f"p = {fmt_p(t['ols_p'])}). ")
    if sig and t["spearman_rho"] > 0:
        s += "Smaller batches give significantly smaller alpha (heavier-tailed ESDs), as Martin & Mahoney report. "
    elif sig:
        s += "Smaller batches give significantly LARGER alpha: the opposite of the Martin & Mahoney trend. "
    else:
        s += "No significant monotone trend of alpha with batch size at this setting. "
    if ta.get("spearman_rho") is not None:
        s += (f"Test accuracy: rho(log2 B, acc) = {ta['spearman_rho']:+.2f}, p = {fmt_p(ta['spearman_p'])} "
              f"({fmt(first['test_accuracy_mean'])} at B={first['batch_size']}, "
              f"{fmt(last['test_accuracy_mean'])} at B={last['batch_size']}).")
    return s


def variants_markdown(args) -> list[str]:
    """A summary of earlier runs (their results.json) next to this one: alpha and test accuracy per batch size."""
    dirs = [Path(d.strip()) for d in args.variants.split(",") if d.strip()]
    if not dirs:
        return []
    lines = ["## Variants", "",
             "Other runs of this job (their own `results.md` has the full tables), mean over seeds per batch size:", ""]
    for d in dirs:
        f = d / "results.json"
        if not f.is_file():
            lines += [f"- `{d}`: no results.json", ""]
            continue
        v = json.loads(f.read_text())
        c = v["config"]
        budget = f"{c['epochs']} epochs" if c["budget"] == "epochs" else f"{c['steps']} steps for every B"
        for model, r in v["models"].items():
            t, ta = r["trend"]["alpha"], r["trend"]["test_accuracy"]
            pb = r["per_batch_size"]
            lines += [f"**{model}, lr {c['lr']}, {budget}, width {c['width']}, {c['seeds']} seeds** (`{d}`): "
                      f"alpha vs log2 B Spearman rho {fmt(t.get('spearman_rho'), 2)} (p {fmt_p(t.get('spearman_p'))}), "
                      f"Kendall tau {fmt(t.get('kendall_tau'), 2)} (p {fmt_p(t.get('kendall_p'))}), OLS slope "
                      f"{fmt(t.get('ols_slope'), 3)} per doubling (p {fmt_p(t.get('ols_p'))}); test accuracy rho "
                      f"{fmt(ta.get('spearman_rho'), 2)} (p {fmt_p(ta.get('spearman_p'))})."
                      + (f" {len(r['runs']) - t['n']} of {len(r['runs'])} runs have no alpha (diverged to non-finite "
                         f"weights) and are left out." if t["n"] < len(r["runs"]) else ""), "",
                      "| B | " + " | ".join(str(p["batch_size"]) for p in pb) + " |",
                      "|---|" + "---:|" * len(pb),
                      "| steps | " + " | ".join(str(p["steps"]) for p in pb) + " |",
                      "| alpha | " + " | ".join(f"{fmt(p['alpha_mean'], 2)} ± {fmt(p['alpha_std'], 2)}" for p in pb) + " |",
                      "| test acc | " + " | ".join(fmt(p["test_accuracy_mean"]) for p in pb) + " |", ""]
    return lines


def markdown(args, res: dict) -> str:
    t = res["timing"]
    budget = (f"{args.epochs} epochs per run (a batch of B takes {args.epochs}·⌈n/B⌉ steps)" if args.budget == "epochs"
              else f"{args.steps} SGD steps per run for every batch size")
    lines = [
        "# Batch size vs heavy-tailed self-regularization (hubscan toy experiment)", "",
        f"Data: scikit-learn `load_digits` (8×8), {res['data']['n_train']} train / {res['data']['n_test']} test, "
        f"stratified split (seed {args.split_seed}), pixels standardized with training statistics.",
        f"Training: plain SGD, lr {args.lr} constant and identical for every batch size (no momentum, no weight "
        f"decay, no schedule), cross-entropy, {budget}; {args.seeds} seed(s) per batch size, the same initial "
        f"weights for every batch size of a seed. Models: "
        + ", ".join({"mlp": f"MLP 64→{args.width}→{args.width}→10 (ReLU)",
                     "cnn": f"CNN conv3×3 1→{args.channels}, conv3×3 {args.channels}→{args.channels}, "
                            f"max-pool 2, dense {16 * args.channels}→{args.width}, dense {args.width}→10"}[m]
                    for m in args.models) + ".",
        f"Analysis: `hubscan.survey` (Ray, {args.actors} actors) of `hub/`, read back with DuckDB. A model's alpha "
        f"is the mean over its layers with status success, at least {MIN_EVALS_FOR_MEAN} eigenvalues and not the "
        f"10-class output layer (M = 10 — hubscan does fit it, but 10 eigenvalues carry no tail).",
        f"Wall time: {t['total_s']:.0f} s (training {t['train_s']:.0f} s with {t['train_processes']} processes × "
        f"{t['torch_threads']} torch thread(s), survey {t['survey_s']:.0f} s) on {t['cpus']} CPUs; load average "
        f"(1 min) {t['load_average_start'][0]:.2f} at start, {t['load_average_end'][0]:.2f} at end.", ""]
    for model, r in res["models"].items():
        lines += [f"## {model}", ""]
        lines.append("Layers: " + "; ".join(
            (f"`{l['name']}` {l['layer_type']} N={l['N']} M={l['M']}"
             + (f" ×{l['rf']} slices" if (l['rf'] or 1) > 1 else "") if l["N"] is not None and l["N"] == l["N"]
             else f"`{l['name']}` {l['layer_type']} shape {[int(x) for x in l['shape']]}")
            + (" **(in mean)**" if l["enters_mean"] else f" (not in mean: {l['reason'] or 'output layer / too few eigenvalues'})")
            for l in r["layers"]) + ".")
        init = r["init"]
        if init["alpha_mean"] is not None:
            lines.append(f"At initialization (same seeds, untrained): mean alpha {init['alpha_mean']:.2f} ("
                         + ", ".join(f"{k} {v:.2f}" for k, v in init["per_layer_alpha"].items())
                         + f"), num_spikes {init['num_spikes_mean']:.1f}, mp_softrank {init['mp_softrank_mean']:.2f}.")
        lines += ["", "| batch size | steps | epochs | alpha (mean ± sd) | "
                  + " | ".join(f"alpha {n}" for n in r["per_layer"]) + " | num_spikes | mp_softrank | test acc (mean ± sd) | train acc | train loss |",
                  "|---:|---:|---:|---|" + "---|" * len(r["per_layer"]) + "---|---|---|---|---|"]
        for p in r["per_batch_size"]:
            B = p["batch_size"]
            per_layer = " | ".join(fmt(info["alpha_mean_per_bs"].get(B), 2) for info in r["per_layer"].values())
            lines.append(f"| {B} | {p['steps']} | {p['epochs']:.3g} | {fmt(p['alpha_mean'], 2)} ± {fmt(p['alpha_std'], 2)} | {per_layer} | "
                         f"{fmt(p['num_spikes_mean'], 1)} | {fmt(p['mp_softrank_mean'], 3)} | "
                         f"{fmt(p['test_accuracy_mean'])} ± {fmt(p['test_accuracy_std'])} | "
                         f"{fmt(p['train_accuracy_mean'])} | {fmt(p['train_loss_mean'], 3)} |")
        lines += ["", "Trend tests over all runs (x = log2 batch size; n = runs):", "",
                  "| y | n | Spearman rho | p | Kendall tau | p | OLS slope per doubling ± se | t-test p | R² |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        rows = [(c, r["trend"][c]) for c in ("alpha", "num_spikes", "mp_softrank", "test_accuracy", "train_accuracy")]
        rows += [(f"alpha `{n}`", info["trend_alpha"]) for n, info in r["per_layer"].items()]
        for c, tr in rows:
            lines.append(f"| {c} | {tr['n']} | {fmt(tr.get('spearman_rho'), 2)} | {fmt_p(tr.get('spearman_p'))} | "
                         f"{fmt(tr.get('kendall_tau'), 2)} | {fmt_p(tr.get('kendall_p'))} | "
                         f"{fmt(tr.get('ols_slope'), 4)} ± {fmt(tr.get('ols_slope_se'), 4)} | "
                         f"{fmt_p(tr.get('ols_p'))} | {fmt(tr.get('ols_r2'), 2)} |")
        bad = [x for x in r["runs"] if x["status"] != RowStatus.SUCCESS
               or not np.isfinite(x["alpha"] if x["alpha"] is not None else np.nan)]
        if bad:
            lines += ["", "Runs without a mean alpha (diverged to non-finite weights → every layer failed in the survey): "
                      + ", ".join(f"B={x['batch_size']} seed {x['seed']} (survey status {x['status']}, test acc "
                                  f"{x['test_accuracy']:.3f})" for x in bad) + "; they are left out of the alpha trend."]
        ac = r["alpha_vs_test_accuracy"]
        lines += ["", f"alpha vs test accuracy across runs: Spearman rho = {fmt(ac.get('spearman_rho'), 2)} "
                      f"(p = {fmt_p(ac.get('spearman_p'))}).", "", "**Observation.** " + res["observation"][model], ""]
    lines += variants_markdown(args)
    lines += ["## Caveat: what the fixed-epoch design confounds", "",
              "With one learning rate and one number of epochs for every run, a smaller batch means both noisier "
              "gradients and proportionally more SGD steps (see the steps column): the weights of a B=2 run have "
              "moved much further from their random initialization than those of a B=512 run. This is the regime "
              "of the Martin & Mahoney experiment, but it does not by itself separate gradient noise from training "
              "length. `--budget steps` gives every batch size the same number of steps (large batches then see "
              "more epochs), which leaves only the noise difference.", "",
              "Plots: " + ", ".join(f"`{p}`" for p in res["plots"]) + ".", ""]
    return "\n".join(lines)

