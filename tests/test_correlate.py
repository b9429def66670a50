"""Accuracy ingestion (timm results, model cards, Open LLM Leaderboard, CSV) and the HTSR ↔ accuracy
correlations, with Table 1 of Martin, Peng & Mahoney (Nature Comm. 2021) reproduced through them."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from conftest import data_dir
from hubscan.accuracy import (higher_is_better, ingest_card_results, ingest_csv, ingest_leaderboard,
                              ingest_timm_results, read_accuracy, timm_benchmark)
from hubscan.correlate import HTSR_METRICS, correlate, fit_stats, joined, write_correlations
from hubscan.query import connect
from hubscan.store import Dataset, model_key

TABLE1_METRICS = ["log_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm"]

#: Table 1 of the paper, as given in tests/data/reference/SOURCE.md: family → metric → (RMSE, R², tau).
#: ResNet / log_alpha_norm R²: the paper prints 0.9, its inputs give 0.95 (SOURCE.md's note).
TABLE1 = {
    "VGG": {"log_norm": (0.56, 0.88, -0.79), "log_spectral_norm": (0.23, 0.98, -0.93),
            "alpha_weighted": (0.48, 0.92, -0.93), "log_alpha_norm": (0.34, 0.96, -0.93)},
    "ResNet": {"log_norm": (0.90, 0.92, -1.00), "log_spectral_norm": (0.97, 0.90, -1.00),
               "alpha_weighted": (0.61, 0.96, -1.00), "log_alpha_norm": (0.66, 0.95, -1.00)},
    "DenseNet": {"log_norm": (0.30, 0.93, -1.00), "log_spectral_norm": (0.11, 0.99, -1.00),
                 "alpha_weighted": (0.16, 0.98, -1.00), "log_alpha_norm": (0.21, 0.97, -1.00)},
}
TABLE1_N = {"VGG": 8, "ResNet": 5, "DenseNet": 4}


def _reference() -> Path:
    path = data_dir() / "reference" / "nature2021_table1_inputs.csv"
    if not path.exists():
        pytest.fail(f"{path} not found")
    return path


def _timm_dir() -> Path:
    path = data_dir() / "timm-results"
    if not (path / "results-imagenet.csv").exists():
        pytest.fail(f"timm results not found at {path}")
    return path


def _write_model(ds: Dataset, source, model_id, revision="r1", *, family=None, status="success", layers=(),
                 eval_results=None, analyzed_at=None, **metrics):
    key = model_key(source, model_id, revision, "cfg")
    row = {"model_key": key, "source": source, "model_id": model_id, "revision": revision, "config_hash": "cfg",
           "status": status, "reason": "", "family": family, "model_type": family,
           "analyzed_at": analyzed_at or dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), **metrics}
    if eval_results is not None:
        row["eval_results"] = eval_results
    layer_rows = [{"model_key": key, "source": source, "model_id": model_id, "revision": revision, "layer_id": i,
                   "name": f"w{i}", "part": "", **lr} for i, lr in enumerate(layers)]
    ds.write_model(key, source, row, layer_rows, None)
    return key


# -- Table 1 of Martin, Peng & Mahoney (2021) ------------------------------------------------------

def _check_table1(res: pd.DataFrame):
    for fam, per_metric in TABLE1.items():
        for metric, (rmse, r2, tau) in per_metric.items():
            row = res[(res["group"] == fam) & (res["metric"] == metric)]
            assert len(row) == 1, (fam, metric)
            row = row.iloc[0]
            assert row["n"] == TABLE1_N[fam]
            got = (round(row["rmse"], 2), round(row["r2"], 2), round(row["kendall_tau"], 2))
            assert got == (rmse, r2, tau), f"{fam} {metric}: got RMSE/R²/tau {got}, paper {(rmse, r2, tau)}"


def test_nature2021_table1_reproduced():
    df = pd.read_csv(_reference())
    res = correlate(df, metric="top1", group_by="family", metrics=TABLE1_METRICS)
    assert list(pd.unique(res["group"])) == ["VGG", "ResNet", "DenseNet", "all"]
    _check_table1(res)
    # all 17 models together are reported too
    assert (res[res["group"] == "all"]["n"] == 17).all()


def test_nature2021_rmse_definition():
    """The paper's RMSE is sqrt(mean(residual²)) (divide by n): dividing by n-2 misses Table 1."""
    df = pd.read_csv(_reference())
    g = df[df["family"] == "VGG"]
    x, y = g["log_norm"].to_numpy(), g["top1"].to_numpy()
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    assert round(math.sqrt((resid ** 2).mean()), 2) == 0.56
    assert round(math.sqrt((resid ** 2).sum() / (len(x) - 2)), 2) != 0.56
    got = fit_stats(x, y)
    assert got["rmse"] == pytest.approx(math.sqrt((resid ** 2).mean()), rel=1e-12)
    assert got["slope"] == pytest.approx(slope, rel=1e-10)
    assert got["intercept"] == pytest.approx(intercept, rel=1e-10)


def test_nature2021_table1_through_a_dataset(tmp_path):
    """The same figures from models rows + an accuracy CSV through joined() and correlate()."""
    df = pd.read_csv(_reference())
    ds = Dataset(str(tmp_path / "ds"))
    for r in df.to_dict("records"):
        _write_model(ds, "local", r["model"], family=r["family"], alpha=r["alpha"],
                     **{m: r[m] for m in TABLE1_METRICS})
    acc = tmp_path / "top1.csv"
    df.assign(metric="top1", model_id=df["model"], value=df["top1"])[["model_id", "metric", "value"]].to_csv(
        acc, index=False)
    written = ingest_csv(ds, acc, benchmark="imagenet")
    assert written.num_rows == 17
    assert set(written.column("source").to_pylist()) == {"local"}  # inferred from the models rows
    j = joined(ds, metric="top1")
    assert len(j) == 17 and set(j["benchmark"]) == {"imagenet"}
    res = correlate(ds, metric="top1", group_by="family")
    assert set(res["metric"]) == set(TABLE1_METRICS) | {"alpha"}  # present metrics only
    _check_table1(res)


# -- timm results ---------------------------------------------------------------------------------

def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def timm_ds(tmp_path_factory):
    ds = Dataset(str(tmp_path_factory.mktemp("timm") / "ds"))
    written = ingest_timm_results(ds, str(_timm_dir()))
    return ds, written.to_pandas()


def test_timm_counts(timm_ds):
    ds, w = timm_ds
    raw = _csv_rows(_timm_dir() / "results-imagenet.csv")
    names = {r["model"] for r in raw}
    assert len(raw) == 1556 and len(names) == 1266
    benches = {"imagenet", "imagenet-real", "imagenetv2-matched-frequency", "sketch", "imagenet-r", "imagenet-a"}
    assert set(w["benchmark"]) == benches
    assert len(w) == 6 * 1266 * 2
    for b in benches:
        for metric in ("top1", "top5"):
            sub = w[(w["benchmark"] == b) & (w["metric"] == metric)]
            assert len(sub) == 1266 and sub["model_id"].is_unique
    # every results-imagenet name becomes an accuracy row
    img = w[(w["benchmark"] == "imagenet") & (w["metric"] == "top1")]
    assert set(img["model_id"]) == names
    assert (w["source"] == "timm").all() and w["revision"].isna().all() and w["higher_is_better"].all()
    assert set(w.loc[w["benchmark"] == "imagenet", "split"]) == {"validation"}
    # the dataset holds exactly what was written; DuckDB sees it too
    assert len(read_accuracy(ds)) == len(w)
    con = connect(ds.root)
    assert con.execute("SELECT count(*) FROM accuracy WHERE benchmark = 'imagenet' AND metric = 'top5'"
                       ).fetchone()[0] == 1266
    assert timm_benchmark("https://x/results/results-imagenetv2-matched-frequency.csv") == \
        "imagenetv2-matched-frequency"


def test_timm_duplicate_image_size_rule(timm_ds):
    """A model listed at two sizes keeps its pretrained_cfg input_size row (the smaller one; the
    larger is its test_input_size), and the values are that line's."""
    from timm.models import get_pretrained_cfg
    _, w = timm_ds
    raw = _csv_rows(_timm_dir() / "results-imagenet.csv")
    by_name: dict[str, list[dict]] = {}
    for r in raw:
        by_name.setdefault(r["model"], []).append(r)
    dups = {n: rs for n, rs in by_name.items() if len(rs) == 2}
    assert len(dups) == 290
    img = w[w["benchmark"] == "imagenet"].set_index(["model_id", "metric"])
    for name, rs in dups.items():
        cfg = get_pretrained_cfg(name)
        sizes = sorted(int(r["img_size"]) for r in rs)
        assert sizes == [cfg.input_size[-1], cfg.test_input_size[-1]], name
        kept = next(r for r in rs if int(r["img_size"]) == cfg.input_size[-1])
        assert img.loc[(name, "top1"), "img_size"] == cfg.input_size[-1]
        assert img.loc[(name, "top1"), "value"] == float(kept["top1"])
        assert img.loc[(name, "top5"), "value"] == float(kept["top5"])
    # e.g. convnext_atto.d2_in1k: 224 (input_size) kept, 288 (test_input_size) left out
    assert img.loc[("convnext_atto.d2_in1k", "top1"), "value"] == 75.672
    assert img.loc[("convnext_atto.d2_in1k", "top5"), "value"] == 92.914
    # where the larger size is *worse* the rule still keeps input_size (no cherry-picking)
    assert img.loc[("convnext_tiny.fb_in22k_ft_in1k", "top1"), "value"] == 82.900
    prov = img.loc[("convnext_atto.d2_in1k", "top1"), "provenance"]
    assert "input_size" in prov and "290 rows at the other size left out" in prov


def test_timm_test_size_option(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    w = ingest_timm_results(ds, str(_timm_dir() / "results-imagenet.csv"), image_size="test").to_pandas()
    w = w.set_index(["model_id", "metric"])
    assert w.loc[("convnext_atto.d2_in1k", "top1"), "value"] == 77.016
    assert w.loc[("convnext_atto.d2_in1k", "top1"), "img_size"] == 288
    assert w.loc[("bat_resnext26ts.ch_in1k", "top1"), "img_size"] == 256  # singly listed: unchanged


def test_timm_values_and_thousands_separator(timm_ds):
    _, w = timm_ds
    idx = w.set_index(["benchmark", "model_id", "metric"])
    # "eva_giant_patch14_560.m30m_ft_in22k_in1k,560,89.790,10.210,98.990,1.010,"1,014.45",1.000,bicubic"
    row = idx.loc[("imagenet", "eva_giant_patch14_560.m30m_ft_in22k_in1k", "top1")]
    assert row["value"] == 89.790 and row["param_count"] == 1014.45 and row["img_size"] == 560
    assert idx.loc[("imagenet", "eva_giant_patch14_560.m30m_ft_in22k_in1k", "top5"), "value"] == 98.990
    assert idx.loc[("imagenet", "eva_giant_patch14_336.m30m_ft_in22k_in1k", "top1"), "param_count"] == 1013.01
    assert (w["param_count"] > 0).all()
    # spot checks against the CSV text of every evaluation set
    for fname in ("results-imagenet.csv", "results-sketch.csv", "results-imagenet-a.csv",
                  "results-imagenetv2-matched-frequency.csv"):
        bench = timm_benchmark(fname)
        rows = [r for r in _csv_rows(_timm_dir() / fname) if r["model"].count(".") == 1]
        counts = pd.Series([r["model"] for r in rows]).value_counts()
        single = [r for r in rows if counts[r["model"]] == 1]
        for r in single[:: max(1, len(single) // 25)]:
            assert idx.loc[(bench, r["model"], "top1"), "value"] == float(r["top1"])
            assert idx.loc[(bench, r["model"], "top5"), "value"] == float(r["top5"])
            assert idx.loc[(bench, r["model"], "top1"), "param_count"] == float(r["param_count"].replace(",", ""))
    # pretrain extra: carried over where the architecture is unambiguous
    assert idx.loc[("imagenet", "beit_base_patch16_224.in22k_ft_in22k_in1k", "top1"), "pretrain"] == "in21k-selfsl"
    assert pd.isna(idx.loc[("imagenet", "resnet50.a1_in1k", "top1"), "pretrain"])  # 20 resnet50 tags


def test_timm_reingest_replaces(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    one = _timm_dir() / "results-imagenet-r.csv"
    n = ingest_timm_results(ds, str(one)).num_rows
    files = ds.files("accuracy")
    copy = tmp_path / "elsewhere" / "results-imagenet-r.csv"
    copy.parent.mkdir()
    copy.write_bytes(one.read_bytes())
    ingest_timm_results(ds, str(copy))  # the same provenance read from another place
    assert len(ds.files("accuracy")) == len(files)  # replaced, not added (new file names: a Delta commit)
    assert len(read_accuracy(ds)) == n == 1266 * 2


# -- synthetic dataset: joined() and correlate() ------------------------------------------------

@pytest.fixture()
def synth(tmp_path):
    """timm resnet ×5, vit ×4, hf bert ×2 (a group under 3), one failed model, one model analyzed at
    two revisions; accuracy from a CSV (imagenet + sketch for timm, a revision-pinned hf row)."""
    rng = np.random.default_rng(7)
    ds = Dataset(str(tmp_path / "ds"))
    truth = []
    for fam, k in (("resnet", 5), ("vit", 4)):
        for i in range(k):
            mid = f"{fam}{i}.tag_in1k"
            m = {name: float(rng.normal(3, 1)) for name in ("alpha", "alpha_weighted", "log_norm",
                                                            "log_spectral_norm", "log_alpha_norm", "stable_rank")}
            top1 = float(80 - 2 * m["alpha"] + rng.normal(0, 0.5))
            _write_model(ds, "timm", mid, family=fam, **m)
            truth.append({"source": "timm", "model_id": mid, "family": fam, "top1": top1, **m})
    for i in range(2):
        mid = f"org/bert-{i}"
        m = {"alpha": 3.0 + i, "alpha_weighted": 1.0 + i, "log_norm": 2.0 - i}
        _write_model(ds, "hf", mid, revision=f"sha{i}", family="bert", **m)
        truth.append({"source": "hf", "model_id": mid, "family": "bert", "top1": 50.0 + i, **m})
    _write_model(ds, "timm", "broken.x", family="broken", status="failed", alpha=9.0)
    # one model, two revisions: the later analysis is kept when the accuracy is revision-free
    _write_model(ds, "hf", "org/two", revision="old", family="gpt2", alpha=5.0,
                 analyzed_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    _write_model(ds, "hf", "org/two", revision="new", family="gpt2", alpha=6.0,
                 analyzed_at=dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc))
    lines = ["model_id,metric,value,source,benchmark,revision,higher_is_better"]
    for t in truth:
        rev = "sha1" if t["model_id"] == "org/bert-1" else ""
        bench = "imagenet" if t["source"] == "timm" else "glue"
        lines.append(f"{t['model_id']},top1,{t['top1']!r},{t['source']},{bench},{rev},")
        if t["source"] == "timm":
            lines.append(f"{t['model_id']},top1,1.0,timm,sketch,,true")  # another benchmark
    lines.append("org/bert-0,top1,99.0,hf,glue,not-the-surveyed-sha,")  # another revision: not joined
    lines.append("broken.x,top1,70,timm,imagenet,,")
    lines.append("org/two,top1,42,hf,glue,,")
    path = tmp_path / "acc.csv"
    path.write_text("\n".join(lines) + "\n")
    ingest_csv(ds, path)
    return ds, pd.DataFrame(truth)


def test_joined(synth):
    ds, truth = synth
    j = joined(ds, metric="top1")
    assert "broken.x" not in set(j["model_id"])  # failed models are out
    assert j[["source", "model_id"]].duplicated().sum() == 0
    assert len(j) == len(truth) + 1  # + org/two
    t = truth.set_index("model_id")
    for r in j.to_dict("records"):
        if r["model_id"] == "org/two":
            assert r["revision"] == "new" and r["alpha"] == 6.0 and r["accuracy"] == 42
            continue
        assert r["accuracy"] == pytest.approx(t.loc[r["model_id"], "top1"], rel=1e-12)
        assert r["family"] == t.loc[r["model_id"], "family"]
        assert r["alpha"] == t.loc[r["model_id"], "alpha"]
        assert r["accuracy_rows"] == 1
    # timm models are compared on imagenet (not sketch) by default; sketch when asked
    assert set(j.loc[j["source"] == "timm", "benchmark"]) == {"imagenet"}
    sk = joined(ds, metric="top1", benchmark="sketch")
    assert len(sk) == 9 and (sk["accuracy"] == 1.0).all()
    # the revision-pinned row for another commit is not bert-0's accuracy
    assert j.set_index("model_id").loc["org/bert-0", "accuracy"] == 50.0
    loose = joined(ds, metric="top1", match_revision=False).set_index("model_id")
    assert loose.loc["org/bert-0", "accuracy"] == pytest.approx((50.0 + 99.0) / 2)
    assert loose.loc["org/bert-0", "accuracy_rows"] == 2
    assert set(joined(ds, metric="top1", source="hf")["source"]) == {"hf"}
    assert joined(ds, metric="nope").empty


def test_spearman_p_small_samples_is_the_permutation_tests():
    """At n = 5 and ρ = 1 the t approximation says 1e-24; the exact two-sided p is 2/5! (two of the 120
    pairings are as extreme); with a tie the pairings of the mean ranks decide it."""
    from hubscan.correlate import fit_stats
    assert stats.spearmanr([1, 2, 3, 4, 5], [10, 20, 30, 40, 50.1]).pvalue < 1e-20
    assert fit_stats([1, 2, 3, 4, 5], [10, 20, 30, 40, 50.1])["spearman_p"] == pytest.approx(2 / 120)
    assert fit_stats([1, 2, 3, 4], [1, 2, 3, 4.5])["spearman_p"] == pytest.approx(2 / 24)
    # a tie in y: the share of the 4! = 24 pairings whose |ρ| (spearmanr's, mean ranks) reaches the observed one
    x, y = [1, 2, 3, 4], [1, 2, 2, 3]
    rho = stats.spearmanr(x, y).statistic
    count = sum(abs(stats.spearmanr(p, y).statistic) >= abs(rho) - 1e-12 for p in itertools.permutations(x))
    assert fit_stats(x, y)["spearman_p"] == pytest.approx(count / 24) and 0 < count < 24
    # 30 pairs and more: scipy's t approximation
    rng = np.random.default_rng(5)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    assert fit_stats(x, y)["spearman_p"] == stats.spearmanr(x, y).pvalue


def test_correlate_matches_scipy(synth):
    ds, truth = synth
    res = correlate(ds, metric="top1", group_by="family")
    j = joined(ds, metric="top1")
    for fam in ("resnet", "vit", "all"):
        sub = j if fam == "all" else j[j["family"] == fam]
        for metric in ("alpha", "log_norm", "stable_rank"):
            ok = sub[metric].notna()
            x, y = sub.loc[ok, metric].to_numpy(float), sub.loc[ok, "accuracy"].to_numpy(float)
            row = res[(res["group"] == fam) & (res["metric"] == metric)].iloc[0]
            assert row["n"] == len(x)
            rho, rho_p = stats.spearmanr(x, y)
            if len(x) < 30:  # small samples: the permutation test of the pairings, spearmanr as its statistic
                rho_p = stats.permutation_test((x,), lambda a, y=y: stats.spearmanr(a, y).statistic,
                                               permutation_type="pairings", n_resamples=np.inf if len(x) <= 8 else 9999,
                                               batch=50_000, rng=np.random.default_rng(0)).pvalue
            tau, tau_p = stats.kendalltau(x, y)
            r, r_p = stats.pearsonr(x, y)
            lr = stats.linregress(x, y)
            resid = y - (lr.intercept + lr.slope * x)
            assert row["spearman_rho"] == pytest.approx(rho) and row["spearman_p"] == pytest.approx(rho_p)
            assert row["kendall_tau"] == pytest.approx(tau) and row["kendall_p"] == pytest.approx(tau_p)
            assert row["pearson_r"] == pytest.approx(r) and row["pearson_p"] == pytest.approx(r_p)
            assert row["slope"] == pytest.approx(lr.slope) and row["intercept"] == pytest.approx(lr.intercept)
            assert row["rmse"] == pytest.approx(np.sqrt(np.mean(resid ** 2)))
            assert row["r2"] == pytest.approx(lr.rvalue ** 2)
    # a group under 3 models is reported, with NaN statistics
    bert = res[(res["group"] == "bert") & (res["metric"] == "alpha")].iloc[0]
    assert bert["n"] == 2 and math.isnan(bert["kendall_tau"]) and math.isnan(bert["rmse"])
    gpt2 = res[(res["group"] == "gpt2") & (res["metric"] == "alpha")].iloc[0]
    assert gpt2["n"] == 1 and math.isnan(gpt2["spearman_rho"])
    # metrics absent from every model are left out; rand_distance is not there without layers
    assert "mp_softrank" not in set(res["metric"]) and "rand_distance" not in set(res["metric"])
    assert list(res["group"].unique())[-1] == "all"


def test_correlate_group_by_variants(synth):
    ds, _ = synth
    j = joined(ds, metric="top1")
    by_type = correlate(j, group_by="model_type", metrics=["alpha"])
    assert set(by_type["group"]) == {"resnet", "vit", "bert", "gpt2", "all"}
    rx = correlate(j, group_by=r"^([a-z]+)\d", metrics=["alpha"])
    assert set(rx["group"]) == {"resnet", "vit", "(none)", "all"}  # org/… ids do not match
    assert rx.set_index("group").loc["resnet", "n"] == 5
    assert rx.set_index("group").loc["(none)", "n"] == 3
    only_all = correlate(j, group_by=None, metrics=["alpha"])
    assert list(only_all["group"]) == ["all"]
    with pytest.raises(ValueError):
        correlate(j, group_by="no_such_column", metrics=["alpha"])


def test_correlate_bootstrap(synth):
    ds, _ = synth
    j = joined(ds, metric="top1")
    a = correlate(j, metrics=["alpha"], bootstrap=200, seed=3)
    b = correlate(j, metrics=["alpha"], bootstrap=200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    row = a[a["group"] == "all"].iloc[0]
    assert row["kendall_tau_lo"] <= row["kendall_tau"] <= row["kendall_tau_hi"]
    assert row["spearman_rho_lo"] <= row["spearman_rho"] <= row["spearman_rho_hi"]
    assert math.isnan(a[a["group"] == "bert"].iloc[0]["kendall_tau_lo"])


def test_correlate_cli_terminal_table(synth):
    """The real entry point: groups under 3 models are one note line, not empty rows; the bootstrap
    interval and Spearman's p are in the terminal table."""
    import os
    import subprocess
    import sys
    ds, _ = synth
    j = joined(ds, metric="top1")
    corr = correlate(j, bootstrap=100, seed=0)
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "hubscan.cli", "correlate", "--dataset", ds.url, "--bootstrap", "100"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    header = [line for line in lines if "p(rho)" in line][0].split()
    assert header == ["group", "metric", "n", "rho", "rho", "95%", "CI", "p(rho)", "tau", "tau", "95%", "CI",
                      "p(tau)", "r", "rmse", "r2"]
    assert not [line for line in lines if line.split()[:1] in (["bert"], ["gpt2"])]  # small groups: no rows
    note = [line for line in lines if line.startswith("not enough models")]
    assert len(note) == 1 and "bert (n=2)" in note[0] and "gpt2 (n=1)" in note[0]
    row = corr[(corr["group"] == "all") & (corr["metric"] == "alpha")].iloc[0]
    shown = [line.split() for line in lines if line.split()[:2] == ["all", "alpha"]]
    assert len(shown) == 1
    ci = lambda c: "[" + f"{row[c + '_lo']:.2f},{row[c + '_hi']:.2f}".replace("0.", ".") + "]"  # noqa: E731
    assert shown[0][3:6] == [f"{row['spearman_rho']:.3f}", ci("spearman_rho"),
                             f"{row['spearman_p']:.0e}" if row["spearman_p"] < 1e-3 else f"{row['spearman_p']:.3f}"]
    assert shown[0][6:8] == [f"{row['kendall_tau']:.3f}", ci("kendall_tau")]
    assert all(len(line) <= 200 for line in lines)
    # 80 columns: no cell cut or wrapped; r / rmse / r2 (in --out) give way first
    p = subprocess.run([sys.executable, "-m", "hubscan.cli", "correlate", "--dataset", ds.url, "--bootstrap", "100"],
                       capture_output=True, text=True, env={**env, "COLUMNS": "80"}, timeout=300)
    lines = p.stdout.splitlines()
    header = [line for line in lines if "p(tau)" in line][0]
    assert header.rstrip().endswith("p(tau)") and len(header) <= 80
    shown = [line.split() for line in lines if line.split()[:2] == ["all", "alpha"]][0]
    assert shown[3:5] == [f"{row['spearman_rho']:.3f}", ci("spearman_rho")]
    p_tau = f"{row['kendall_p']:.0e}" if row["kendall_p"] < 1e-3 else f"{row['kendall_p']:.3f}"
    assert shown[-1] == p_tau and all(len(line) <= 80 for line in lines)  # whole, not cut to fit
    gone = [h for h in ("p(rho)", "r", "rmse", "r2") if h not in header.split()]
    assert gone and f"{', '.join(gone)}: do not fit 80 columns (every column is in --out)" in p.stdout  # said
    # without CIs the metric names fit whole at 80 columns: the optional columns go, no name is cut
    p = subprocess.run([sys.executable, "-m", "hubscan.cli", "correlate", "--dataset", ds.url],
                       capture_output=True, text=True, env={**env, "COLUMNS": "80"}, timeout=300)
    metrics = [line.split()[1] for line in p.stdout.splitlines() if line.split()[:1] == ["all"]]
    assert metrics and "log_spectral_norm" in metrics and not any("…" in m for m in metrics), p.stdout
    assert all(len(line) <= 80 for line in p.stdout.splitlines())


def test_rand_distance_from_layers(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    for i in range(4):
        layers = [{"status": "success", "rand_distance": 0.1 * i},
                  {"status": "success", "rand_distance": 0.1 * i + 0.2},
                  {"status": "failed", "rand_distance": 5.0}]
        _write_model(ds, "local", f"m{i}", family="f", alpha=2.0 + i, layers=layers)
    p = tmp_path / "a.csv"
    p.write_text("model_id,metric,value\n" + "".join(f"m{i},loss,{1.0 - 0.1 * i}\n" for i in range(4)))
    w = ingest_csv(ds, p)
    assert w.column("higher_is_better").to_pylist() == [False] * 4  # "loss" is lower-is-better
    j = joined(ds, metric="loss")
    assert j.set_index("model_id")["rand_distance"].to_dict() == pytest.approx(
        {f"m{i}": 0.1 * i + 0.1 for i in range(4)})
    res = correlate(j, metric="loss", group_by=None)
    assert res.set_index("metric").loc["rand_distance", "kendall_tau"] == pytest.approx(-1.0)


def test_write_correlations(tmp_path, synth):
    ds, _ = synth
    res = correlate(ds, metric="top1")
    for name in ("c.parquet", "sub/c.csv"):
        out = write_correlations(res, tmp_path / name)
        back = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out)
        assert len(back) == len(res) and list(back.columns) == list(res.columns)
        assert np.allclose(back["n"], res["n"])
    with pytest.raises(ValueError):
        write_correlations(res, tmp_path / "c.xlsx")


# -- CSV, leaderboards, model cards ---------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [("nan", "value 'nan' of m1 is not a finite number"),
                                          ("-inf", "value '-inf' of m1 is not a finite number"),
                                          ("7x", "value '7x' of m1 is not a number"),
                                          ("1_000", "value '1_000' of m1 is not a number"),
                                          ('"0,8"', "value '0,8' of m1 is not a number (a decimal comma? write 0.8; "
                                                    "commas only as thousands separators, 1,000)")])
def test_ingest_csv_refuses_values_that_are_not_finite_numbers(tmp_path, bad, message):
    """nan and inf parse as floats: stored, the model left a group's correlation (n 5 → 4) with nothing said;
    refused like any non-number, the file named, nothing written."""
    ds = Dataset(str(tmp_path / "ds"))
    p = tmp_path / "a.csv"
    p.write_text(f"model_id,metric,value\nm0,top1,70.5\nm1,top1,{bad}\n")
    with pytest.raises(ValueError) as e:
        ingest_csv(ds, p)
    assert str(e.value) == f"{p}: {message}"
    assert len(read_accuracy(ds)) == 0


def test_ingest_csv_reads_thousands_separators(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    p = tmp_path / "a.csv"
    p.write_text('model_id,metric,value\nm0,params,"1,234,567.5"\nm1,params,-12\n')
    assert ingest_csv(ds, p).column("value").to_pylist() == [1234567.5, -12.0]


def test_ingest_csv_names_the_rows_it_leaves_out(tmp_path):
    """A row without a value (a model not evaluated) or repeating an earlier line is not written — and said,
    with its line; a metric given two different values for one model is refused, both lines named."""
    ds = Dataset(str(tmp_path / "ds"))
    p = tmp_path / "a.csv"
    p.write_text('model_id,metric,value\nm0,top1,70.5\nm1,top1,\n\n,top1,3\nm0,top1,70.5\n"m2",top1,"71"\n')
    left: list = []
    assert ingest_csv(ds, p, left_out=left).column("model_id").to_pylist() == ["m0", "m2"]
    assert left == [(3, "no value"), (5, "no model_id"), (6, "the same as line 2")]
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "accuracy", "--dataset", str(tmp_path / "ds2"),
                           "--create", "--csv", str(p)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"})
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert ("3 row(s) left out: line 3 (no value), line 5 (no model_id), line 6 (the same as line 2)"
            in " ".join(out.split())), out
    p.write_text("model_id,metric,value,split\nm0,top1,70.5,val\nm0,top1,70.5,test\nm0,top1,71,val\n")
    with pytest.raises(ValueError) as e:
        ingest_csv(ds, p)
    assert str(e.value) == (f"{p}: top1 of m0 is given twice: 70.5 on line 2, 71 on line 4 (one value per model, "
                            "metric, benchmark and split)")
    assert read_accuracy(ds)["model_id"].tolist() == ["m0", "m2"]  # nothing written by the refused file


def test_ingest_csv_that_is_not_text_names_the_file(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    p = tmp_path / "weights.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00v\x00")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(p))}: not a UTF-8 text \(CSV\) file: byte 0 is b'\\x93'$"):
        ingest_csv(ds, p)


def test_ingest_csv_replaces_across_partitions(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    p = tmp_path / "mine.csv"
    p.write_text("Model_ID,Metric,Value,Source,Higher_is_better\na/b,accuracy,0.5,hf,\nx.y,top1,70,timm,yes\n"
                 "c/d,wer,12.5,hf,\n")
    w = ingest_csv(ds, p).to_pandas().set_index("model_id")
    assert w.loc["c/d", "higher_is_better"] == False  # noqa: E712 - from the metric name
    assert w.loc["x.y", "higher_is_better"] == True  # noqa: E712
    assert w.loc["a/b", "benchmark"] == "custom"
    assert len(ds.files("accuracy")) == 2  # source=hf and source=timm
    p.write_text("model_id,metric,value,source\na/b,accuracy,0.6,hf\n")
    ingest_csv(ds, p)
    acc = read_accuracy(ds)
    assert len(ds.files("accuracy")) == 1 and len(acc) == 1 and acc["value"].iloc[0] == 0.6
    assert higher_is_better("eval_loss") is False and higher_is_better("f1") is True
    assert higher_is_better("top1_err") is False and higher_is_better("exact_match") is True


V2_RESULTS = {"org/alpha-7b": (30.0, 60.0, 35.0, 10.0, 8.0, 12.0, 32.0),
              "org/beta-1b": (20.0, 45.0, 25.0, 5.0, 3.0, 9.0, 20.0),
              "org/flagged": (90.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0)}


def _v2_table(with_fullname=True) -> pa.Table:
    names = list(V2_RESULTS)
    cols = {
        "eval_name": [n.replace("/", "_") + "_bfloat16" for n in names],
        "Precision": ["bfloat16", "float16", "bfloat16"],
        "Type": ["🟢 pretrained"] * 3,
        "Weight type": ["Original", "Adapter", "Original"],
        "Architecture": ["LlamaForCausalLM"] * 3,
        "Model": [f'<a target="_blank" href="https://huggingface.co/{n}" style="color: var(--link-text-color);">{n}</a>'
                  f'  <a href="https://huggingface.co/datasets/open-llm-leaderboard/'
                  f'{n.replace("/", "__")}-details">📑</a>'
                  for n in names],
        "Model sha": ["sha-alpha", "main", "sha-f"],
        "Average ⬆️": [V2_RESULTS[n][0] for n in names],
        "#Params (B)": [7.24, 1.1, 3.0],
        "Flagged": [False, False, True],
        "IFEval Raw": [0.6, 0.45, 0.9],
    }
    for i, c in enumerate(("IFEval", "BBH", "MATH Lvl 5", "GPQA", "MUSR", "MMLU-PRO"), start=1):
        cols[c] = [V2_RESULTS[n][i] for n in names]
    if with_fullname:
        cols["fullname"] = names
    return pa.table(cols)


def test_leaderboard_v2(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    path = tmp_path / "contents.parquet"
    pq.write_table(_v2_table(), path)
    w = ingest_leaderboard(ds, str(path)).to_pandas()
    assert set(w["model_id"]) == {"org/alpha-7b", "org/beta-1b"}  # flagged row left out
    assert set(w["metric"]) == {"average", "ifeval", "bbh", "math_lvl_5", "gpqa", "musr", "mmlu_pro"}
    assert (w["benchmark"] == "open_llm_leaderboard_v2").all() and (w["source"] == "hf").all()
    idx = w.set_index(["model_id", "metric"])
    for i, m in enumerate(("average", "ifeval", "bbh", "math_lvl_5", "gpqa", "musr", "mmlu_pro")):
        assert idx.loc[("org/alpha-7b", m), "value"] == V2_RESULTS["org/alpha-7b"][i]
    assert idx.loc[("org/alpha-7b", "ifeval"), "revision"] == "sha-alpha"
    assert pd.isna(idx.loc[("org/beta-1b", "ifeval"), "revision"])  # "main" → any revision
    assert idx.loc[("org/alpha-7b", "average"), "param_count"] == pytest.approx(7240.0)
    assert idx.loc[("org/beta-1b", "average"), "variant"] == "float16/Adapter"
    # the Model column's HTML link is enough when there is no fullname; a new snapshot replaces
    pq.write_table(_v2_table(with_fullname=False), path)
    w2 = ingest_leaderboard(ds, str(path), drop_flagged=False).to_pandas()
    assert set(w2["model_id"]) == set(V2_RESULTS)
    assert len(read_accuracy(ds)) == len(w2) == 3 * 7
    # joined on model id + revision
    _write_model(ds, "hf", "org/alpha-7b", revision="sha-alpha", family="llama", alpha=3.0)
    _write_model(ds, "hf", "org/beta-1b", revision="sha-b", family="llama", alpha=4.0)
    _write_model(ds, "hf", "org/flagged", revision="other-sha", family="llama", alpha=5.0)
    j = joined(ds, metric="ifeval").set_index("model_id")
    assert j["accuracy"].to_dict() == {"org/alpha-7b": 60.0, "org/beta-1b": 45.0}  # sha-f ≠ other-sha
    assert set(j["benchmark"]) == {"open_llm_leaderboard_v2"}


def test_leaderboard_v1(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    df = pd.DataFrame({
        "eval_name": ["org_old-7b_float16", "org_older_float16", "org_old-7b_bfloat16"],
        "model_name_for_query": ["org/old-7b", "org/older", "org/old-7b"],
        "Revision": ["main", "abc", "main"],
        "Precision": ["float16", "float16", "bfloat16"],
        "Average ⬆️": [50.0, 40.0, 52.0],
        "ARC": [55.0, 45.0, 56.0], "HellaSwag": [80.0, 70.0, 81.0], "MMLU": [50.0, 40.0, 52.0],
        "TruthfulQA": [40.0, 35.0, 41.0], "Winogrande": [75.0, 65.0, 76.0], "GSM8K": [10.0, 5.0, 12.0],
        "#Params (B)": [7.0, 13.0, 7.0],
    })
    path = tmp_path / "v1.parquet"
    df.to_parquet(path)
    w = ingest_leaderboard(ds, str(path)).to_pandas()
    assert set(w["metric"]) == {"average", "arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k"}
    assert (w["benchmark"] == "open_llm_leaderboard_v1").all() and len(w) == 3 * 7
    idx = w[w["variant"] == "float16"].set_index(["model_id", "metric"])
    assert idx.loc[("org/older", "gsm8k"), "value"] == 5.0 and idx.loc[("org/older", "gsm8k"), "revision"] == "abc"
    assert idx.loc[("org/old-7b", "truthfulqa"), "value"] == 40.0
    # v1 and v2 are separate provenances
    pq.write_table(_v2_table(), tmp_path / "v2.parquet")
    ingest_leaderboard(ds, str(tmp_path / "v2.parquet"))
    assert set(read_accuracy(ds)["benchmark"]) == {"open_llm_leaderboard_v1", "open_llm_leaderboard_v2"}
    # two precisions of one model are averaged by joined()
    _write_model(ds, "hf", "org/old-7b", revision="s1", family="llama", alpha=3.0)
    j = joined(ds, metric="arc").set_index("model_id")
    assert j.loc["org/old-7b", "accuracy"] == 55.5 and j.loc["org/old-7b", "accuracy_rows"] == 2
    with pytest.raises(ValueError):
        bad = tmp_path / "bad.parquet"
        pd.DataFrame({"fullname": ["a/b"], "score": [1.0]}).to_parquet(bad)
        ingest_leaderboard(ds, str(bad))


def test_card_results(tmp_path):
    ds = Dataset(str(tmp_path / "ds"))
    ev = lambda ds_, metric, value, split="test": {"task": "text-classification", "dataset": ds_,  # noqa: E731
                                                  "dataset_name": ds_.upper(), "split": split, "metric": metric,
                                                  "value": value}
    _write_model(ds, "hf", "a/one", revision="s1", family="bert", alpha=3.0,
                 eval_results=[ev("glue", "accuracy", 0.9), ev("glue", "f1", 0.8), ev("squad", "exact_match", 70.0),
                               ev("glue", "accuracy", None)])
    _write_model(ds, "hf", "a/two", revision="s2", family="bert", alpha=4.0,
                 eval_results=[ev("glue", "accuracy", 0.85), ev("librispeech", "wer", 4.2)])
    _write_model(ds, "hf", "a/none", revision="s3", family="bert", alpha=5.0, eval_results=[])
    w = ingest_card_results(ds).to_pandas()
    assert len(w) == 5  # the null value is skipped
    idx = w.set_index(["model_id", "benchmark", "metric"])
    assert idx.loc[("a/one", "glue", "accuracy"), "value"] == 0.9
    assert idx.loc[("a/one", "glue", "accuracy"), "revision"] == "s1"
    assert idx.loc[("a/one", "glue", "accuracy"), "dataset_name"] == "GLUE"
    assert idx.loc[("a/two", "librispeech", "wer"), "higher_is_better"] == False  # noqa: E712
    assert ingest_card_results(ds).num_rows == 5 and len(read_accuracy(ds)) == 5  # re-ingest replaces
    j = joined(ds, metric="accuracy").set_index("model_id")
    assert j["accuracy"].to_dict() == {"a/one": 0.9, "a/two": 0.85}
    assert set(j["benchmark"]) == {"glue"}


def test_htsr_metrics_constant():
    assert HTSR_METRICS == ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm",
                            "stable_rank", "mp_softrank", "rand_distance")


def test_fit_stats_slope_se_and_p_match_linregress():
    """The batch-size experiment's OLS trend test goes through fit_stats: slope, its standard error
    and t-test p equal scipy.stats.linregress (the independent reference)."""
    rng = np.random.default_rng(0)
    x = np.log2(np.repeat([2, 4, 8, 16, 32, 64, 128, 256, 512], 3)).astype(float)
    y = 0.1 * x + rng.normal(0, 0.3, len(x))
    f = fit_stats(x, y)
    lr = stats.linregress(x, y)
    assert f["slope"] == pytest.approx(lr.slope, rel=1e-12) and f["intercept"] == pytest.approx(lr.intercept, rel=1e-12)
    assert f["slope_se"] == pytest.approx(lr.stderr, rel=1e-12)
    assert f["pearson_p"] == pytest.approx(lr.pvalue, rel=1e-9) and f["r2"] == pytest.approx(lr.rvalue ** 2, rel=1e-12)
    assert math.isnan(fit_stats([1, 2], [3, 4])["slope_se"])


def test_a_csv_path_names_the_most_specific_local_model():
    """A path in an accuracy CSV is the local model whose id it ends with; where several ids match (a model
    surveyed from two folders: out/hub/x.pt and work/out/hub/x.pt), the longest, the most specific — not the
    path as given, which matched nothing."""
    from hubscan.accuracy import _match_model
    known = {"out/hub/net/x.pt": {"local"}, "work/out/hub/net/x.pt": {"local"}, "a/y.pt": {"local"},
             "b/y.pt": {"local"}, "org/model": {"hf"}}
    assert _match_model("/abs/work/out/hub/net/x.pt", None, known) == ("work/out/hub/net/x.pt", "local")
    assert _match_model("./out/hub//net/x.pt", None, known) == ("out/hub/net/x.pt", "local")
    assert _match_model("/abs/c/y.pt", None, known) == ("/abs/c/y.pt", "local")  # no id it ends with: as given
    assert _match_model("org/model", None, known) == ("org/model", "hf")
