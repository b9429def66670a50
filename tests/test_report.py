"""Plots and the HTML report (hubscan.report) on real analyses of real weights.

The ESD, depth and histogram plots use ``hubscan.analyze`` results of real checkpoints
(all-MiniLM-L6-v2, pocketnet folds, the corpus' ok_small file). Accuracy data is synthetic here —
DataFrames of the shape ``hubscan.correlate.joined`` / ``correlate`` return — so these tests do
not depend on the accuracy module. The rendered page is opened in headless Chromium (Debian
package ``chromium``); without it that test is skipped, or fails when
``HUBSCAN_REQUIRE_CHROMIUM=1`` (CI).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hubscan
from hubscan.report import (accuracy_vs_metric, alpha_histogram, alpha_vs_depth, build_report, esd_loglog,
                            plot_model, tau_heatmap)
from hubscan.report.plots import HTSR_METRICS

from conftest import data_dir, package_dir

# a model id that would break the page (and run code) if it were not escaped
NASTY_ID = 'lab/<img src=x onerror="alert(1)">&co'


# -- helpers ------------------------------------------------------------------------------------

def _png(source) -> np.ndarray:
    """Decode a PNG (path or bytes) into an (H, W, C) float array."""
    import matplotlib.image as mpimg
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    return mpimg.imread(source, format="png")


def _assert_real_png(arr: np.ndarray, min_side: int = 200) -> None:
    assert arr.ndim == 3 and arr.shape[2] in (3, 4)
    assert min(arr.shape[:2]) >= min_side, arr.shape
    rgb = arr[..., :3]
    assert float(rgb.std()) > 0.02, "blank image"
    nonwhite = np.mean(np.any(rgb < 0.95, axis=2))
    assert nonwhite > 0.01, f"only {nonwhite:.2%} non-white pixels"


def _savefig(fig, path: Path) -> np.ndarray:
    fig.savefig(path, format="png", dpi=100)
    assert path.stat().st_size > 5000
    return _png(path)


def _successful(rows) -> list[dict]:
    return [r for r in rows if r["status"] == "success" and r["alpha"] is not None and np.isfinite(r["alpha"])]


# -- real analyses -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return hubscan.analyze(str(minilm_dir), keep_evals=True)


@pytest.fixture(scope="module")
def pocket_paths():
    folder = package_dir("pocketnet") / "weights"
    return [folder / "v3_fold0.pt", folder / "v3_fold1.pt"]


@pytest.fixture(scope="module")
def pocket(pocket_paths):
    return [hubscan.analyze(str(p), keep_evals=True) for p in pocket_paths]


@pytest.fixture(scope="module")
def ok_small():
    return hubscan.analyze(str(data_dir() / "cases" / "ok_small.safetensors"), keep_evals=True)


# -- synthetic accuracy tables of the correlate module's shape -------------------------------------

def _synthetic_joined(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    sizes = {"resnet": 7, "vit": 5, "convnext": 4, "bert": 1}
    for fam, n in sizes.items():
        for i in range(n):
            alpha = rng.uniform(2.0, 6.0)
            rows.append({"model_id": f"{fam}/{fam}-{i}", "family": fam,
                         "top1": 85 - 3 * alpha + rng.normal(0, 1.0),
                         "alpha": alpha, "alpha_weighted": alpha * rng.uniform(0.5, 1.5),
                         "log_norm": rng.uniform(1, 3), "log_spectral_norm": rng.uniform(0, 2),
                         "log_alpha_norm": rng.uniform(1, 4), "stable_rank": rng.uniform(5, 50),
                         "mp_softrank": rng.uniform(0.1, 0.9)})
    rows[0]["model_id"] = NASTY_ID
    rows.append({**rows[1], "model_id": "resnet/no-accuracy", "top1": np.nan})   # dropped: no accuracy
    rows.append({**rows[2], "model_id": "vit/no-alpha", "family": "vit", "alpha": np.nan})
    return pd.DataFrame(rows)


def _synthetic_corr(joined: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    from scipy import stats
    out = []
    groups = [("all", joined)] + list(joined.groupby("family", sort=False))
    for g, sub in groups:
        for m in [m for m in HTSR_METRICS if m in joined.columns]:
            d = sub[[metric, m]].dropna()
            row = {"group": g, "metric_name": m, "n": len(d)}
            if len(d) >= 3:
                tau, tp = stats.kendalltau(d[m], d[metric])
                rho, rp = stats.spearmanr(d[m], d[metric])
                r, pp = stats.pearsonr(d[m], d[metric])
                slope, intercept = np.polyfit(d[m], d[metric], 1)
                resid = d[metric] - (slope * d[m] + intercept)
                row.update(spearman=rho, spearman_p=rp, kendall_tau=tau, kendall_p=tp, pearson=r, pearson_p=pp,
                           slope=slope, intercept=intercept, rmse=float(np.sqrt(np.mean(resid ** 2))), r2=r * r)
            else:
                row.update(dict.fromkeys(["spearman", "spearman_p", "kendall_tau", "kendall_p", "pearson",
                                          "pearson_p", "slope", "intercept", "rmse", "r2"], np.nan))
            out.append(row)
    return pd.DataFrame(out)


# -- plots ---------------------------------------------------------------------------------------

def test_accuracy_vs_metric_points_and_lines(tmp_path):
    joined = _synthetic_joined()
    fig = accuracy_vs_metric(joined, "alpha", accuracy="top1", group="family", path=tmp_path / "scatter.png")
    ax = fig.axes[0]
    valid = joined[np.isfinite(joined["alpha"]) & np.isfinite(joined["top1"])]
    offsets = sum(len(c.get_offsets()) for c in ax.collections)
    assert offsets == len(valid) == len(joined) - 2
    assert len(ax.collections) == valid["family"].nunique()          # one color per family
    sizes = valid["family"].value_counts()
    lines = [ln for ln in ax.get_lines() if ln.get_gid() == "regression"]
    assert len(lines) == int((sizes >= 2).sum()) == 3                 # bert has one model: no line
    # each line is the family's OLS fit over its x range
    resnet = valid[valid["family"] == "resnet"]
    slope, intercept = np.polyfit(resnet["alpha"], resnet["top1"], 1)
    ln = next(ln for ln in lines if np.isclose(ln.get_xdata()[0], resnet["alpha"].min()))
    assert np.allclose(ln.get_ydata(), slope * ln.get_xdata() + intercept)
    assert "power-law exponent" in ax.get_xlabel() and "top-1" in ax.get_ylabel()
    # the overall least-squares line: correlate's fit over every model
    from hubscan.correlate import fit_stats
    fit = fit_stats(valid["alpha"], valid["top1"])
    overall = [ln for ln in ax.get_lines() if ln.get_gid() == "overall-fit"]
    assert len(overall) == 1 and np.isclose(overall[0].get_xdata()[0], valid["alpha"].min())
    assert np.allclose(overall[0].get_ydata(), fit["slope"] * overall[0].get_xdata() + fit["intercept"])
    legend = fig.legends[0]
    assert len(legend.get_texts()) == valid["family"].nunique() + 1
    # the legend is outside the axes (under them, below the axis label): not over the data
    fig.canvas.draw()
    leg, axbox = legend.get_window_extent(), ax.get_tightbbox()
    assert leg.y1 <= axbox.y0
    _assert_real_png(_png(tmp_path / "scatter.png"))


def test_accuracy_vs_metric_without_group_and_missing_column(tmp_path):
    joined = _synthetic_joined()
    fig = accuracy_vs_metric(joined, "log_norm", group=None)
    ax = fig.axes[0]
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == joined["top1"].notna().sum()
    assert len([ln for ln in ax.get_lines() if ln.get_gid() == "regression"]) == 1
    with pytest.raises(KeyError, match="top5"):
        accuracy_vs_metric(joined, "alpha", accuracy="top5")


def test_alpha_vs_depth_real_models(minilm, pocket, tmp_path):
    frames = [minilm.to_pandas().assign(model_id="minilm"), pocket[0].to_pandas().assign(model_id="pocket0")]
    layers = pd.concat(frames, ignore_index=True)
    fig = alpha_vs_depth(layers, ["minilm", "pocket0"], path=tmp_path / "depth.png")
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_gid() == "alpha-depth"]
    assert len(lines) == 2
    for ln, res in zip(lines, [minilm, pocket[0]]):
        ok = sorted(_successful(res.rows), key=lambda r: (r["layer_id"], r["part"]))
        assert len(ln.get_xdata()) == len(ok) > 10
        assert np.allclose(ln.get_ydata(), [r["alpha"] for r in ok])
        assert list(ln.get_xdata()) == list(range(len(ok)))
    guides = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_gid() == "guide")
    assert guides == [2.0, 6.0]
    # the x ticks name the first model's layers: "layer_id: name" (the name shortened from the left)
    ok = sorted(_successful(minilm.rows), key=lambda r: (r["layer_id"], r["part"]))
    labels = {int(t): lab.get_text() for t, lab in zip(ax.get_xticks(), ax.get_xticklabels())}
    assert len(labels) >= 10
    for i, text in labels.items():
        lid, name = text.split(": ", 1)
        assert int(lid) == ok[i]["layer_id"] and ok[i]["name"].endswith(name.lstrip("…"))
    _assert_real_png(_png(tmp_path / "depth.png"))


def test_esd_loglog_real_layer(minilm, tmp_path):
    row = max(_successful(minilm.rows), key=lambda r: r["num_evals"] or 0)
    key = row["name"] + (f":{row['part']}" if row["part"] else "")
    evals = minilm.evals[key]
    fig = esd_loglog(evals, row, title=key, bins=60, path=tmp_path / "esd.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    bars = ax.patches
    assert len(bars) == 60
    widths = np.array([b.get_width() for b in bars])
    heights = np.array([b.get_height() for b in bars])
    assert np.isclose((widths * heights).sum(), 1.0)                  # a density
    x = evals[evals > 1e-5]
    pl = next(ln for ln in ax.get_lines() if ln.get_gid() == "powerlaw")
    lam, dens = np.asarray(pl.get_xdata()), np.asarray(pl.get_ydata())
    assert np.isclose(lam[0], row["xmin"]) and np.isclose(lam[-1], row["xmax"])
    slope = np.polyfit(np.log(lam), np.log(dens), 1)[0]
    assert np.isclose(slope, -row["alpha"])
    frac = np.mean(x >= row["xmin"])
    assert np.isclose(dens[0], frac * (row["alpha"] - 1) / row["xmin"])   # scaled to the tail's share
    # ∫ over [xmin, ∞) of the drawn density = the tail's share of the histogram
    assert np.isclose(dens[0] * row["xmin"] / (row["alpha"] - 1), frac)
    xmin_line = next(ln for ln in ax.get_lines() if ln.get_gid() == "xmin")
    assert np.isclose(xmin_line.get_xdata()[0], row["xmin"])
    lp = next(ln for ln in ax.get_lines() if ln.get_gid() == "lambda_plus")
    assert np.isclose(lp.get_xdata()[0], row["lambda_plus"])
    assert f"α = {row['alpha']:.2f}" in ax.get_title()
    _assert_real_png(_png(tmp_path / "esd.png"))


def test_esd_loglog_without_fit_or_lambda_plus(ok_small):
    evals = next(iter(ok_small.evals.values()))
    fig = esd_loglog(evals, {"alpha": None, "xmin": None, "xmax": None, "D": None}, title="unfitted")
    gids = {ln.get_gid() for ln in fig.axes[0].get_lines()}
    assert "powerlaw" not in gids and "xmin" not in gids and "lambda_plus" not in gids
    assert "no power-law fit" in fig.axes[0].get_title()
    from hubscan.esd.powerlaw import fit_powerlaw
    fit = fit_powerlaw(evals)                                           # a PowerLawFit object works too
    gids = {ln.get_gid() for ln in esd_loglog(evals, fit).axes[0].get_lines()}
    assert {"powerlaw", "xmin"} <= gids and "lambda_plus" not in gids


def test_tau_heatmap(tmp_path):
    joined = _synthetic_joined()
    corr = _synthetic_corr(joined)
    fig = tau_heatmap(corr, path=tmp_path / "tau.png")
    ax = fig.axes[0]
    groups, metrics = corr["group"].unique(), corr["metric_name"].unique()
    img = ax.get_images()[0].get_array()
    assert img.shape == (len(groups), len(metrics))
    assert len(ax.texts) == len(groups) * len(metrics)                 # every cell annotated
    expect = corr.set_index(["group", "metric_name"])["kendall_tau"]
    assert np.isclose(img[0, 0], expect[("all", "alpha")])
    # bert (one model) has no tau: masked cells annotated with a dash
    bert_row = list(groups).index("bert")
    assert np.ma.getmaskarray(img)[bert_row].all()
    assert [t.get_text() for t in ax.texts[bert_row * len(metrics):(bert_row + 1) * len(metrics)]] == ["–"] * len(metrics)
    assert [t.get_text() for t in ax.get_xticklabels()] == [m for m in HTSR_METRICS if m in joined.columns]
    assert len(fig.axes) == 2                                           # the colorbar
    _assert_real_png(_png(tmp_path / "tau.png"))
    # hubscan.correlate.correlate's own column names give the same map
    real = corr.rename(columns={"metric_name": "metric", "spearman": "spearman_rho", "pearson": "pearson_r"})
    again = tau_heatmap(real).axes[0]
    assert np.ma.allequal(again.get_images()[0].get_array(), img)
    assert [t.get_text() for t in again.texts] == [t.get_text() for t in ax.texts]


def test_alpha_histogram_counts(minilm, pocket, ok_small, tmp_path):
    results = [minilm, *pocket, ok_small]
    layers = pd.concat([r.to_pandas().assign(model_key=str(i)) for i, r in enumerate(results)], ignore_index=True)
    n_ok = sum(len(_successful(r.rows)) for r in results)
    assert len(layers) > n_ok                                           # skipped rows are left out
    fig = alpha_histogram(layers, path=tmp_path / "hist.png")
    ax = fig.axes[0]
    assert sum(b.get_height() for b in ax.patches) == n_ok
    assert f"{n_ok} successful fits in {len(results)} models" in ax.get_title()
    guides = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_gid() == "guide")
    assert guides == [2.0, 6.0]
    _assert_real_png(_png(tmp_path / "hist.png"))
    # outliers beyond the clip are counted in the last bin, and said so
    extra = pd.DataFrame({"alpha": [40.0, 55.0], "status": ["success", "success"], "model_key": ["x", "x"]})
    fig = alpha_histogram(pd.concat([layers, extra], ignore_index=True), clip=15)
    ax = fig.axes[0]
    assert sum(b.get_height() for b in ax.patches) == n_ok + 2
    assert "with α > 15 counted in the last bin" in ax.get_title()


def test_plot_model_files(minilm, tmp_path):
    files = plot_model(minilm, tmp_path / "plots")
    esd_files = [f for f in files if f.name.startswith("esd_")]
    assert len(esd_files) == len(minilm.evals) and files[-1].name == "alpha_depth.png"
    assert len(set(files)) == len(files) and all(f.exists() for f in files)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f.name for f in files)
    for f in files:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+\.png", f.name), f.name
    # named by layer_id (as in the layers table), not by position
    by_name = {r["name"]: r["layer_id"] for r in minilm.rows if r["name"] in minilm.evals}
    for f in esd_files:
        lid = int(f.name.split("_")[1])
        assert any(f.name == f"esd_{lid:03d}_{name}.png" and by_name[name] == lid for name in by_name), f.name
    _assert_real_png(_png(files[0]))
    _assert_real_png(_png(files[-1]))


def test_plot_model_needs_evals():
    result = hubscan.analyze(str(data_dir() / "cases" / "ok_small.safetensors"))
    with pytest.raises(ValueError, match="keep_evals=True"):
        plot_model(result, "/nonexistent-never-created")
    assert not os.path.exists("/nonexistent-never-created")


def test_plot_model_split_parts(tmp_path):
    """Parts of a split tensor (name:part keys) get distinct, sanitised file names."""
    folder = data_dir() / "cases" / "gpt2_like"
    result = hubscan.analyze(str(folder), keep_evals=True, split_fused=True)
    files = plot_model(result, tmp_path)
    assert any(":" in k for k in result.evals), "expected split q/k/v parts"
    assert len(files) == len(result.evals) + 1 and len({f.name for f in files}) == len(files)


# -- the dataset and the report -------------------------------------------------------------------

def _write(dataset, result, survey_id: str, *, downloads=None, model_id=None, family=None) -> str:
    from hubscan.store import config_hash, model_key
    from hubscan.survey import model_row

    ref = result.ref if model_id is None else dataclasses.replace(result.ref, id=model_id)
    cfg = config_hash(hubscan.AnalyzeOptions())
    key = model_key(ref.source, ref.id, ref.revision, cfg)
    meta = dict(result.metadata)
    if downloads is not None:
        meta["downloads"] = downloads
    if family is not None:
        meta["family"] = family
    row = model_row(ref, meta, key, cfg, survey_id, result.summary["status"], result.summary["reason"],
                    result.summary, format=result.format, device="cpu")
    ident = {"model_key": key, "source": ref.source, "model_id": ref.id, "revision": ref.revision}
    layers = [{**ident, "survey_id": survey_id, **r} for r in result.rows]
    esd = []
    for r in result.rows:
        k = r["name"] + (f":{r['part']}" if r["part"] else "")
        if k in result.evals:
            esd.append({**ident, "layer_id": r["layer_id"], "name": r["name"], "part": r["part"],
                        "evals": result.evals[k].astype("float32")})
    dataset.write_model(key, ref.source, row, layers, esd)
    return key


@pytest.fixture(scope="module")
def report_dataset(tmp_path_factory, minilm, pocket, ok_small):
    import datetime as dt
    from hubscan.errors import HubscanError
    from hubscan.refs import parse_ref
    from hubscan.schema import SURVEY_SCHEMA
    from hubscan.store import Dataset, config_hash, model_key, rows_to_table
    from hubscan.survey import model_row

    root = tmp_path_factory.mktemp("report") / "ds"
    ds = Dataset(str(root))
    sid = uuid.uuid4().hex[:12]
    _write(ds, minilm, sid, downloads=1000)
    _write(ds, pocket[0], sid, downloads=500, model_id=NASTY_ID, family="pocketnet")
    _write(ds, pocket[1], sid, downloads=10, family="pocketnet")
    _write(ds, ok_small, sid)
    bad = data_dir() / "cases" / "malicious_pickle.pt"
    with pytest.raises(HubscanError) as err:
        hubscan.analyze(str(bad))
    ref = parse_ref(str(bad))
    cfg = config_hash(hubscan.AnalyzeOptions())
    key = model_key(ref.source, ref.id, ref.revision, cfg)
    ds.write_model(key, ref.source, model_row(ref, {}, key, cfg, sid, "failed", str(err.value)), [], None)
    now = dt.datetime.now(dt.timezone.utc)
    ds.write("surveys", rows_to_table([{
        "survey_id": sid, "started_at": now, "finished_at": now, "source": "local:tests", "num_models": 5,
        "num_already_done": 0, "num_success": 4, "num_incomplete": 0, "num_failed": 1, "num_skipped": 0,
        "bytes_read": 0, "seconds": 12.5, "actors": 1, "interrupted": False, "hubscan_version": hubscan.__version__,
    }], SURVEY_SCHEMA))
    return root


class _Tags(HTMLParser):
    """Every start tag with its attributes, as the browser's tokenizer sees them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


_URL_ATTRS = ("src", "href", "srcset", "action", "poster", "data", "formaction", "background", "xlink:href")


def _check_self_contained(page: str) -> list[bytes]:
    """Assert no external reference, no script but the report's own inline table sorter, no event
    handler attribute; return the embedded PNGs."""
    from hubscan.report.html import _SORT_JS
    parser = _Tags()
    parser.feed(page)
    parser.close()
    tags = {t for t, _ in parser.tags}
    assert not tags & {"link", "iframe", "object", "embed", "base"}, tags
    scripts = [a for t, a in parser.tags if t == "script"]
    assert scripts == [{}] and page.count("<script>") == 1
    assert page.split("<script>", 1)[1].split("</script>", 1)[0] == _SORT_JS  # inline, the sorter only
    pngs = []
    for tag, attrs in parser.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for a in _URL_ATTRS:
            if tag == "a" and a == "href" and attrs[a].startswith("#"):
                continue  # the table of contents: links within the page
            if a in attrs:
                assert tag == "img" and a == "src" and attrs[a].startswith("data:image/png;base64,"), (tag, a)
        if tag == "img":
            pngs.append(base64.b64decode(attrs["src"].split(",", 1)[1], validate=True))
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page
    assert len(pngs) == page.count("<img")
    return pngs


@pytest.fixture(scope="module")
def report_with_accuracy(report_dataset, tmp_path_factory):
    joined = _synthetic_joined()
    corr = _synthetic_corr(joined)
    out = tmp_path_factory.mktemp("html") / "report.html"  # its folder must exist: nothing is created
    path = build_report(str(report_dataset), out, joined=joined, corr=corr, models_for_depth=3)
    return path, joined, corr


def test_report_self_contained_with_accuracy(report_with_accuracy, minilm, pocket, ok_small):
    path, joined, corr = report_with_accuracy
    page = path.read_text(encoding="utf-8")
    pngs = _check_self_contained(page)
    # 7 scatters + tau heat map + alpha histogram + alpha vs depth + 4 ESDs
    assert len(pngs) == 7 + 1 + 1 + 1 + 4
    for data in pngs:
        _assert_real_png(_png(data))
    # model ids escaped everywhere (dataset tables and accuracy data)
    assert NASTY_ID not in page and "<img src=x" not in page
    assert html.escape(NASTY_ID, quote=True) in page
    # survey summary: counts per status, the survey run, the failed model's reason
    assert re.search(r"<td>success</td><td class='num'>4</td>", page)
    assert re.search(r"<td>failed</td><td class='num'>1</td>", page)
    assert "malicious_pickle.pt" in page and "local:tests" in page
    # correlation table: one row per (group, metric)
    section = page.split("id='correlations'>", 1)[1].split("</table>", 1)[0]
    assert section.count("<tr>") == len(corr) + 1
    assert "No accuracy data" not in page
    # depth plot of the 3 most downloaded models; ESDs from the most downloaded one with evals (MiniLM)
    assert "α vs depth (3 models: most downloaded)" in page
    assert f"ESDs of 4 layers of {html.escape(minilm.ref.id)}" in page
    # worst-layers table: the highest alpha of all layers first
    all_ok = _successful(minilm.rows) + [r for p in pocket for r in _successful(p.rows)]
    top = max(all_ok, key=lambda r: r["alpha"])
    worst = page.split("id='highest'>", 1)[1]
    assert f"{top['alpha']:.3f}" in worst.split("</tr>", 2)[1]
    low = min(all_ok, key=lambda r: r["alpha"])
    lowest = page.split("id='lowest'>", 1)[1]
    assert f"{low['alpha']:.3f}" in lowest.split("</tr>", 2)[1]
    # table of contents linking every section
    toc = page.split("<nav class='toc'", 1)[1].split("</nav>", 1)[0]
    for anchor in ("survey", "models", "failures", "phases", "accuracy", "scatters", "layers", "lowest", "highest"):
        assert f"href='#{anchor}'" in toc and f"id='{anchor}'" in page, anchor
    # per-model table: every model analysis once, sortable, numeric cells carry their value
    models = page.split("id='model-table'", 1)[1].split("</table>", 1)[0]
    assert models.count("<tr>") == 5 + 1 and "malicious_pickle.pt" in models
    assert f"data-v='{minilm.summary['alpha']!r}'" in models
    # failures with their reason; phases of every successful layer
    fails = page.split("id='failures'", 1)[1].split("id='phases'", 1)[0]
    assert "malicious_pickle.pt" in fails and "failed" in fails
    phases = page.split("id='phases'", 1)[1].split("</table>", 1)[0]
    counts = {}
    for r in _successful(minilm.rows) + _successful(pocket[0].rows) + _successful(pocket[1].rows) \
            + _successful(ok_small.rows):
        counts[r["phase"] or "(none)"] = counts.get(r["phase"] or "(none)", 0) + 1
    for phase, n in counts.items():
        assert f"<td>{html.escape(phase)}</td><td class='num'>{n}</td>" in phases, (phase, n)
    assert phases.count("<tr>") == len(counts) + 1


def test_report_without_accuracy(report_dataset, tmp_path):
    empty = pd.DataFrame(columns=["model_id", "family", "top1", *HTSR_METRICS])
    path = build_report(str(report_dataset), tmp_path / "r.html", joined=empty)
    page = path.read_text(encoding="utf-8")
    pngs = _check_self_contained(page)
    assert "No accuracy data for metric" in page
    assert len(pngs) == 1 + 1 + 4                                       # histogram, depth, ESDs
    assert "Correlations per group" not in page
    # the extreme-layer tables say how many layers lie beyond the 2 / 6 guides (counted here with pyarrow)
    import pyarrow.compute as pc
    from hubscan.store import Dataset
    layers = Dataset(str(report_dataset), create=False).read("layers", columns=["status", "alpha"])
    ok = layers.filter(pc.equal(layers["status"], "success"))
    low = pc.sum(pc.less(ok["alpha"], 2.0)).as_py() or 0
    high = pc.sum(pc.greater(ok["alpha"], 6.0)).as_py() or 0
    assert f"{low} layer(s) of the dataset have α below 2 (over-trained)." in page
    assert f"{high} layer(s) of the dataset have α above 6 (under-trained)." in page
    assert low + high > 0
    # accuracy read from the dataset, when there is none (or no correlate module yet): still a page
    path = build_report(str(report_dataset), tmp_path / "r2.html", benchmark="imagenet")
    page = path.read_text(encoding="utf-8")
    assert "No accuracy data for metric" in page
    assert len(_check_self_contained(page)) == 6


def test_report_computes_correlations_lazily(report_dataset, tmp_path, monkeypatch):
    """Given only ``joined``, the report asks hubscan.correlate for the correlation table."""
    import sys
    import types
    joined = _synthetic_joined()
    calls = []

    def correlate(df, metric="top1", group_by="family"):
        calls.append((len(df), metric, group_by))
        return _synthetic_corr(df, metric)

    fake = types.ModuleType("hubscan.correlate")
    fake.correlate = correlate
    from hubscan.correlate import fit_stats  # the scatters' overall line uses the real one
    fake.fit_stats = fit_stats
    monkeypatch.setitem(sys.modules, "hubscan.correlate", fake)
    monkeypatch.setattr(hubscan, "correlate", fake, raising=False)
    page = build_report(str(report_dataset), tmp_path / "r.html", joined=joined).read_text(encoding="utf-8")
    assert calls == [(len(joined) - 1, "top1", "family")]               # rows without accuracy dropped
    assert "Correlations per group" in page and "Kendall τ heat map" in page


def test_report_with_dataset_accuracy(report_dataset, tmp_path):
    """No frames given: accuracy rows in the dataset, joined and correlated by hubscan.correlate."""
    correlate = pytest.importorskip("hubscan.correlate")
    accuracy = pytest.importorskip("hubscan.accuracy")
    from hubscan.store import Dataset

    root = tmp_path / "ds"
    shutil.copytree(report_dataset, root)
    models = Dataset(str(root)).read("models").to_pandas()
    ok = models[models["status"] == "success"].sort_values("model_id").reset_index(drop=True)
    rows = [{"source": r.source, "model_id": r.model_id, "benchmark": "custom", "metric": "top1",
             "value": 70.0 + 3 * i, "provenance": "test"} for i, r in ok.iterrows()]
    accuracy.write_provenance(str(root), accuracy.provenance_key("csv", "test.csv"), rows)
    joined = correlate.joined(str(root), metric="top1")
    assert len(joined) == len(ok) == 4
    path = build_report(str(root), tmp_path / "r.html")
    page = path.read_text(encoding="utf-8")
    pngs = _check_self_contained(page)
    scatters = [m for m in HTSR_METRICS if m in joined.columns and pd.to_numeric(joined[m]).notna().any()]
    assert len(pngs) == len(scatters) + 1 + 1 + 1 + 4                   # + heat map, histogram, depth, ESDs
    assert "No accuracy data" not in page and "custom (4 models)" in page
    corr = correlate.correlate(joined, metric="top1", group_by="family")
    section = page.split("id='correlations'>", 1)[1].split("</table>", 1)[0]
    assert section.count("<tr>") == len(corr) + 1 and "HTSR metric" in section
    assert html.escape(NASTY_ID, quote=True) in page and NASTY_ID not in page
    # asked for a metric the dataset lacks: the page names the ones it holds (not "ingest accuracy first")
    page = build_report(str(root), tmp_path / "r5.html", metric="top5").read_text(encoding="utf-8")
    assert "No accuracy data for metric &#x27;top5&#x27;" in page or "No accuracy data for metric 'top5'" in page
    assert "the accuracy table holds: top1 (custom)" in page and "Ingest reported accuracy first" not in page


def test_report_empty_dataset(tmp_path):
    path = build_report(str(tmp_path / "nothing"), tmp_path / "r.html", joined=None)
    page = path.read_text(encoding="utf-8")
    _check_self_contained(page)
    assert "nothing has been surveyed yet" in page and "No accuracy data" in page


# -- headless Chromium ------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]
WINDOW = (1280, 2000)


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if exe is None:
        msg = "chromium not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("HUBSCAN_REQUIRE_CHROMIUM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _screenshot(chromium: str, page: Path, tmp: Path) -> tuple[Path, str]:
    shot = tmp / f"shot-{page.stem}.png"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / ('profile-' + page.stem)}",
           f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return shot, log


def _console_problems(log: str, page: Path) -> list[str]:
    """Console messages and uncaught errors of the page (not Chromium's own dbus/GPU startup noise)."""
    uri = page.resolve().as_uri()
    return [ln for ln in log.splitlines()
            if "Uncaught" in ln or "ERROR:CONSOLE" in ln or (":CONSOLE" in ln and uri in ln)]


def _check_screenshot(shot: Path) -> None:
    arr = _png(shot)
    assert arr.shape[1] == WINDOW[0] and arr.shape[0] == WINDOW[1], arr.shape
    rgb = arr[..., :3]
    assert float(rgb.std()) > 0.05
    assert np.mean(np.any(rgb < 0.9, axis=2)) > 0.02                   # text, tables, plots
    # rendered plots: saturated (colored) pixels; the page's own text and tables are grey
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    assert np.mean(sat > 0.25) > 0.003


def test_chromium_detects_console_errors(chromium, tmp_path):
    """Control: the log check does see a page's errors with these flags."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); notDefined();</script>"
                   "</body></html>")
    shot, log = _screenshot(chromium, bad, tmp_path)
    problems = _console_problems(log, bad)
    assert any("Uncaught ReferenceError" in p for p in problems), log[-3000:]
    assert any("boom" in p for p in problems)


def test_report_renders_in_chromium(chromium, report_with_accuracy, report_dataset, tmp_path):
    path, _, _ = report_with_accuracy
    shot, log = _screenshot(chromium, path, tmp_path)
    assert not _console_problems(log, path), _console_problems(log, path)
    _check_screenshot(shot)
    # the survey-only page too
    page = build_report(str(report_dataset), tmp_path / "survey-only.html", joined=pd.DataFrame())
    shot, log = _screenshot(chromium, page, tmp_path)
    assert not _console_problems(log, page), _console_problems(log, page)
    _check_screenshot(shot)
