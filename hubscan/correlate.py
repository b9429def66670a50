"""HTSR metrics against reported accuracy: join the survey's ``models`` with ``accuracy``, and the
per-family rank correlations and regressions of Martin, Peng & Mahoney (2021).

The statistics reproduce Table 1 of C. H. Martin, T. S. Peng, M. W. Mahoney, "Predicting trends in
the quality of state-of-the-art neural networks without access to training or testing data",
*Nature Communications* 12, 4122 (2021), https://doi.org/10.1038/s41467-021-24025-8: for each
family and metric, an ordinary least-squares line of accuracy on the metric with

* ``rmse`` = sqrt(mean(residual²)) — the root mean squared residual, dividing by n (not by the n − 2
  residual degrees of freedom: that gives e.g. 0.65 instead of the paper's 0.56 for VGG / log_norm);
* ``r2`` = 1 − SS_res / SS_tot of that fit (= Pearson r²);
* ``kendall_tau`` = Kendall's τ-b (``scipy.stats.kendalltau``) between metric and accuracy;

reproduced to two decimals from the paper's inputs by ``tests/test_correlate.py``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from typing import Iterable, Sequence

import numpy as np

from hubscan.esd.registry import correlate_metrics, summary_metrics
from hubscan.records import ModelStatus, RowStatus
from hubscan.sources.timm import TimmSource
from hubscan.store import Dataset

#: The model-level HTSR metrics correlated by default (means over the successfully fitted layers:
#: from the ``models`` table for the metrics the summary averages, else from the ``layers`` table,
#: e.g. ``rand_distance`` when the survey ran with ``--randomize``). Derived from the metric registry
#: (``correlate=True`` entries) at import; :func:`correlate` re-reads the registry on each call.
HTSR_METRICS = correlate_metrics()

#: Benchmark a source's models are compared on when ``joined`` is given none.
DEFAULT_BENCHMARK = {TimmSource.name: "imagenet"}

_ID_COLUMNS = ("model_key", "source", "model_id", "revision", "config_hash", "family", "model_type", "status",
               "num_parameters", "analyzed_at")


def _model_columns() -> tuple[str, ...]:
    """Identity columns, the summary-only metrics (entropy), then the correlated metrics."""
    corr = correlate_metrics()
    return _ID_COLUMNS + tuple(m for m in summary_metrics() if m not in corr) + corr

_STAT_COLUMNS = ("n", "spearman_rho", "spearman_p", "kendall_tau", "kendall_p", "pearson_r", "pearson_p", "slope",
                 "intercept", "rmse", "r2")


def _as_dataset(dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset(str(dataset))


def _read(data: Dataset, table: str, columns: Iterable[str]):
    """The columns of a table that exist, as pandas (empty frame with those columns if none)."""
    import pandas as pd
    d = data.arrow_dataset(table)
    if d is None:
        return pd.DataFrame(columns=list(columns))
    have = [c for c in columns if c in d.schema.names]
    return d.to_table(columns=have).to_pandas()


def accuracy_metrics(dataset) -> list[str]:
    """The accuracy metrics a dataset holds, as ``metric`` or ``metric (benchmark)``, most rows first:
    what ``--metric`` / ``--benchmark`` can name.

    Parameters
    ----------
    dataset : Dataset or str

    Returns
    -------
    list of str
        Empty when the accuracy table is absent or empty.
    """
    acc = _read(_as_dataset(dataset), "accuracy", ("metric", "benchmark"))
    if acc.empty or "metric" not in acc:
        return []
    from collections import Counter
    bench = acc["benchmark"] if "benchmark" in acc else [None] * len(acc)
    counts = Counter(f"{m} ({b})" if isinstance(b, str) and b else str(m) for m, b in zip(acc["metric"], bench))
    return sorted(counts, key=lambda k: (-counts[k], k))


def _layer_means(data: Dataset, metric: str):
    """model_key → mean of a layer metric over successful layers (None when the layers lack it)."""
    import pyarrow.compute as pc
    d = data.arrow_dataset("layers")
    if d is None or metric not in d.schema.names:
        return None
    t = d.to_table(columns=["model_key", "status", metric],
                   filter=(pc.field("status") == RowStatus.SUCCESS) & pc.field(metric).is_valid())
    if t.num_rows == 0:
        return None
    g = t.group_by("model_key").aggregate([(metric, "mean")]).to_pandas()
    return g.rename(columns={f"{metric}_mean": metric})


def joined(dataset, *, metric: str = "top1", benchmark: str | None = None, source: str | Sequence[str] | None = None,
           match_revision: bool = True, statuses: Sequence[str] = (ModelStatus.SUCCESS, ModelStatus.INCOMPLETE)):
    """One row per model: its summary HTSR metrics, family and reported accuracy.

    Models are the ``models`` rows with status ``success`` or ``incomplete``; accuracy rows are
    joined on ``source`` + ``model_id``, and on ``revision`` where the accuracy row names one (a
    result for another commit is not this model's). Among several analyses of one model (new
    revision, other settings) the most recently analyzed one is kept.

    Benchmark: ``benchmark`` when given; otherwise, per model, the source's default
    (:data:`DEFAULT_BENCHMARK`: ``imagenet`` for timm) when the model has a row there, else the
    benchmark with the most models for ``metric`` (ties by name) — the chosen one is in the
    ``benchmark`` column. Several rows of the chosen benchmark (leaderboard precisions, repeated
    card entries) are averaged, rows for the model's exact revision taking precedence; their number
    is ``accuracy_rows``.

    Parameters
    ----------
    dataset : str or hubscan.store.Dataset
    metric : str
        Accuracy metric (``top1``, ``top5``, ``average``, ``ifeval``, ``accuracy`` …).
    benchmark : str, optional
        Benchmark (``imagenet``, ``imagenet-r``, ``open_llm_leaderboard_v2`` …).
    source : str or sequence of str, optional
        Only these sources (``hf``, ``timm``, ``local``).
    match_revision : bool
        Require an accuracy row's revision, when it has one, to equal the model's. False joins on
        the id alone (exact-revision rows still preferred).
    statuses : sequence of str
        Model statuses kept.

    Returns
    -------
    pandas.DataFrame
        ``model_key, source, model_id, revision, config_hash, family, model_type, status,
        num_parameters, analyzed_at, entropy,`` the :data:`HTSR_METRICS` columns present, then
        ``benchmark, split, metric, accuracy, higher_is_better, accuracy_rows, img_size,
        param_count, provenance``.
    """
    import pandas as pd

    data = _as_dataset(dataset)
    model_columns = _model_columns()
    models = _read(data, "models", model_columns)
    acc = _read(data, "accuracy", ("source", "model_id", "revision", "benchmark", "split", "metric", "value",
                                   "higher_is_better", "img_size", "param_count", "provenance"))
    layer_only = [c for c in correlate_metrics() if c not in models.columns]
    out_cols = [c for c in model_columns if c in models.columns or c in layer_only] + [
        "benchmark", "split", "metric", "accuracy", "higher_is_better", "accuracy_rows", "img_size", "param_count",
        "provenance"]
    sources = [source] if isinstance(source, str) else (list(source) if source is not None else None)
    if len(models):
        models = models[models["status"].isin(list(statuses))]
        if sources is not None:
            models = models[models["source"].isin(sources)]
    for name in layer_only:  # correlated metrics the summary does not average: means from the layers table
        means = _layer_means(data, name) if len(models) else None
        models = (models.merge(means, on="model_key", how="left") if means is not None
                  else models.assign(**{name: np.nan}))
    if len(acc):
        acc = acc[acc["metric"] == metric]
        if benchmark is not None:
            acc = acc[acc["benchmark"] == benchmark]
        if sources is not None:
            acc = acc[acc["source"].isin(sources)]
    if not len(models) or not len(acc):
        return pd.DataFrame(columns=out_cols)

    acc = acc.rename(columns={"revision": "acc_revision", "value": "accuracy"})
    m = models.merge(acc, on=["source", "model_id"], how="inner")
    has_rev = m["acc_revision"].notna()
    m["exact"] = has_rev & (m["acc_revision"] == m["revision"])
    if match_revision:
        m = m[~has_rev | m["exact"]]
    if not len(m):
        return pd.DataFrame(columns=out_cols)

    # the benchmark of each model
    popularity = acc.groupby("benchmark")["model_id"].nunique()
    m = m.assign(_default=[0 if DEFAULT_BENCHMARK.get(s) == b else 1 for s, b in zip(m["source"], m["benchmark"])],
                 _pop=-m["benchmark"].map(popularity).fillna(0).astype(int))
    first = (m.sort_values(["model_key", "_default", "_pop", "benchmark"])
             .drop_duplicates("model_key")[["model_key", "benchmark"]])
    m = m.merge(first, on=["model_key", "benchmark"])
    # exact-revision rows take precedence over revision-less ones
    any_exact = m.groupby("model_key")["exact"].transform("any")
    m = m[m["exact"] | ~any_exact]

    key = [c for c in model_columns if c in m.columns]
    agg = m.groupby("model_key", sort=False).agg(
        accuracy=("accuracy", "mean"), accuracy_rows=("accuracy", "size"),
        higher_is_better=("higher_is_better", "first"), split=("split", "first"), img_size=("img_size", "first"),
        param_count=("param_count", "first"), provenance=("provenance", "first"), benchmark=("benchmark", "first"))
    base = m.drop_duplicates("model_key")[key].set_index("model_key")
    res = base.join(agg).reset_index()
    res["metric"] = metric
    if "analyzed_at" in res.columns:
        res = res.sort_values("analyzed_at", ascending=False, kind="stable")
    res = res.drop_duplicates(["source", "model_id"]).sort_values(["source", "model_id"]).reset_index(drop=True)
    return res[[c for c in out_cols if c in res.columns]]


# -- statistics -----------------------------------------------------------------------------------

def _nan_stats() -> dict:
    return {c: (0 if c == "n" else math.nan) for c in _STAT_COLUMNS}


#: Below this many pairs Spearman's p is a permutation test (exact up to :data:`SPEARMAN_EXACT_N`), not the
#: t-distribution approximation (``scipy.stats.spearmanr``'s, which scipy calls accurate for large samples
#: only: at n = 5 and ρ = 1 it gives 1e-24, where the exact p is 2/5! = 0.017).
SPEARMAN_PERMUTATION_N = 30
#: Up to this many pairs the permutation test enumerates every pairing (8! = 40,320); above it draws 9,999
#: pairings with a fixed seed (the p-value then has a resolution of 1e-4, and is the same on every run).
SPEARMAN_EXACT_N = 8


def spearman_p(x, y) -> float:
    """Two-sided p-value of Spearman's ρ between ``x`` and ``y`` (finite, equal length n ≥ 3, neither constant).

    n < :data:`SPEARMAN_PERMUTATION_N`: a permutation test of the pairings (``scipy.stats.permutation_test``,
    statistic: Pearson's r of the ranks, ties ranked by their mean as ``spearmanr`` ranks them), every pairing
    for n ≤ :data:`SPEARMAN_EXACT_N`, else 9,999 seeded ones; larger n: ``scipy.stats.spearmanr``'s
    t-distribution p-value."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n >= SPEARMAN_PERMUTATION_N:
        return float(stats.spearmanr(x, y).pvalue)
    ry = stats.rankdata(y)
    ry = ry - ry.mean()
    syy = float((ry * ry).sum())

    def r_of_ranks(rx, axis=-1):  # Pearson's r of each pairing's ranks (ranks of a permutation = permuted ranks)
        rx = rx - rx.mean(axis=axis, keepdims=True)
        return (rx * ry).sum(axis=axis) / np.sqrt((rx * rx).sum(axis=axis) * syy)

    res = stats.permutation_test((stats.rankdata(x),), r_of_ranks, permutation_type="pairings", vectorized=True,
                                 n_resamples=np.inf if n <= SPEARMAN_EXACT_N else 9999, batch=50_000,
                                 rng=np.random.default_rng(0))
    return float(res.pvalue)


def fit_stats(x, y) -> dict:
    """The statistics of one (metric, accuracy) sample; pairs with a non-finite member are dropped.

    Parameters
    ----------
    x, y : array-like of float
        HTSR metric and accuracy.

    Returns
    -------
    dict
        ``n``; ``spearman_rho`` (``scipy.stats.spearmanr``), ``spearman_p`` (:func:`spearman_p`: a
        permutation test below 30 pairs); ``kendall_tau,
        kendall_p`` (``scipy.stats.kendalltau``, τ-b); ``pearson_r, pearson_p``
        (``scipy.stats.pearsonr``); ``slope, intercept`` of the OLS line y = intercept + slope·x
        and ``slope_se`` = sqrt(SS_res / (n − 2) / Σ(x − x̄)²), its standard error (the slope's
        t-test p-value is ``pearson_p``: t = r·sqrt((n − 2)/(1 − r²)) is the same statistic);
        ``rmse`` = sqrt(mean(residual²)); ``r2`` = 1 − SS_res/SS_tot. NaN (``n`` still given) when
        n < 3 or a side is constant.
    """
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {**_nan_stats(), "slope_se": math.nan}
    out["n"] = n = int(len(x))
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho, rho_p = stats.spearmanr(x, y)
        tau, tau_p = stats.kendalltau(x, y)
        r, r_p = stats.pearsonr(x, y)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    ss_res = float((resid ** 2).sum())
    ss_tot = float(((y - ym) ** 2).sum())
    if n < SPEARMAN_PERMUTATION_N:
        rho_p = spearman_p(x, y)
    out.update(spearman_rho=float(rho), spearman_p=float(rho_p), kendall_tau=float(tau), kendall_p=float(tau_p),
               pearson_r=float(r), pearson_p=float(r_p), slope=slope, intercept=intercept,
               slope_se=math.sqrt(ss_res / (n - 2) / sxx), rmse=math.sqrt(ss_res / n), r2=1.0 - ss_res / ss_tot)
    return out


def bootstrap_ci(x, y, *, n_boot: int, seed=0, confidence: float = 0.95) -> dict:
    """Percentile bootstrap confidence intervals of Kendall's τ and Spearman's ρ.

    Pairs (non-finite dropped) are resampled with replacement ``n_boot`` times; resamples where a
    side is constant are skipped.

    Returns
    -------
    dict
        ``kendall_tau_lo, kendall_tau_hi, spearman_rho_lo, spearman_rho_hi`` (NaN when n < 3).
    """
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {"kendall_tau_lo": math.nan, "kendall_tau_hi": math.nan, "spearman_rho_lo": math.nan,
           "spearman_rho_hi": math.nan}
    n = len(x)
    if n < 3 or n_boot <= 0:
        return out
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(int(n_boot)):
            idx = rng.integers(0, n, n)
            xb, yb = x[idx], y[idx]
            if np.ptp(xb) == 0 or np.ptp(yb) == 0:
                continue
            taus.append(stats.kendalltau(xb, yb)[0])
            rhos.append(stats.spearmanr(xb, yb)[0])
    lo, hi = 50 * (1 - confidence), 50 * (1 + confidence)
    if taus:
        out["kendall_tau_lo"], out["kendall_tau_hi"] = (float(v) for v in np.nanpercentile(taus, [lo, hi]))
        out["spearman_rho_lo"], out["spearman_rho_hi"] = (float(v) for v in np.nanpercentile(rhos, [lo, hi]))
    return out


def _groups(df, group_by):
    """Group label of each row: a column's value, or a regex's first group on model_id."""
    import pandas as pd
    if group_by is None:
        return None
    if group_by in df.columns:
        g = df[group_by]
    else:
        try:
            rx = re.compile(group_by)
        except re.error as exc:
            raise ValueError(f"group_by {group_by!r} is neither a column nor a valid regex: {exc}") from None
        if rx.groups < 1:
            raise ValueError(f"group_by {group_by!r}: not a column ({list(df.columns)}), "
                             "and as a regex it has no group")
        if "model_id" not in df.columns:
            raise ValueError("a regex group_by needs a model_id column")

        def label(s):
            mt = rx.search(str(s)) if s is not None else None
            return mt.group(1) if mt and mt.group(1) is not None else None

        g = df["model_id"].map(label)
    return pd.Series(g, index=df.index).astype(object).where(pd.notna(g), "(none)").astype(str)


def correlate(df_or_dataset, *, metric: str = "top1", group_by: str | None = "family",
              metrics: Sequence[str] | None = None, bootstrap: int = 0, seed: int = 0, confidence: float = 0.95,
              benchmark: str | None = None, source=None):
    """Correlations and regressions of accuracy on each HTSR metric, per group and over all models.

    For every group (and ``"all"``) and every metric of ``metrics`` present in the data: ``n``,
    Spearman ρ and p, Kendall τ-b and p, Pearson r and p, and the statistics of Martin, Peng &
    Mahoney (Nature Comm. 2021, Table 1): the OLS line of accuracy on the metric (``slope``,
    ``intercept``), its ``rmse`` = sqrt(mean(residual²)) and ``r2``. Groups with fewer than 3
    models are reported with their ``n`` and NaN statistics.

    Parameters
    ----------
    df_or_dataset : pandas.DataFrame, str or hubscan.store.Dataset
        A frame with the metric columns and the accuracy — column ``metric`` when the frame has
        one (e.g. ``top1`` of a hand-made table), else ``accuracy`` (as :func:`joined` returns) —
        or a dataset, joined with :func:`joined` (``metric``, ``benchmark``, ``source``).
    metric : str
        Accuracy metric (column name, or the metric :func:`joined` selects).
    group_by : str or None
        A column (``family``, ``model_type``, …), or a regular expression searched in
        ``model_id`` whose first group is the group (``r"^([a-z]+)"``); models it does not match,
        or with a missing value, form the group ``"(none)"``. None: only ``"all"``.
    metrics : sequence of str, optional
        HTSR metric columns (those absent or all-null are left out); default: the registry's
        correlated metrics (:data:`HTSR_METRICS` plus any registered since).
    bootstrap : int
        Resamples for percentile confidence intervals of τ and ρ (0: none).
    seed : int
        Seed of the bootstrap (each group and metric draws from ``default_rng([seed, i, j])``).
    confidence : float
        Level of the bootstrap intervals.
    benchmark, source : optional
        Passed to :func:`joined` when a dataset is given.

    Returns
    -------
    pandas.DataFrame
        One row per (group, metric): ``group_by, group, metric, target`` (the accuracy metric),
        ``n, spearman_rho, spearman_p, kendall_tau, kendall_p, pearson_r, pearson_p, slope,
        intercept, rmse, r2`` [``, kendall_tau_lo, kendall_tau_hi, spearman_rho_lo,
        spearman_rho_hi``]. Groups in order of first appearance, then ``all``.
    """
    import pandas as pd

    if metrics is None:
        metrics = correlate_metrics()
    if isinstance(df_or_dataset, pd.DataFrame):
        df = df_or_dataset
    else:
        df = joined(df_or_dataset, metric=metric, benchmark=benchmark, source=source)
    ycol = metric if (metric in df.columns and metric not in metrics) else "accuracy"
    if ycol not in df.columns:
        raise ValueError(f"no accuracy column: neither {metric!r} nor 'accuracy' in {list(df.columns)}")
    y_all = pd.to_numeric(df[ycol], errors="coerce")
    present = [c for c in metrics if c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()]
    labels = _groups(df, group_by) if len(df) else None
    parts = []
    if labels is not None:
        for g in pd.unique(labels):
            parts.append((g, (labels == g).to_numpy()))
    parts.append(("all", np.ones(len(df), dtype=bool)))
    rows = []
    for gi, (g, mask) in enumerate(parts):
        for mi, c in enumerate(present):
            x = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)[mask]
            y = y_all.to_numpy(dtype=float)[mask]
            row = {"group_by": group_by if group_by is not None else "", "group": g, "metric": c, "target": metric}
            row.update(fit_stats(x, y))
            if bootstrap:
                row.update(bootstrap_ci(x, y, n_boot=bootstrap, seed=[seed, gi, mi], confidence=confidence))
            rows.append(row)
    cols = ["group_by", "group", "metric", "target", *_STAT_COLUMNS]
    if bootstrap:
        cols += ["kendall_tau_lo", "kendall_tau_hi", "spearman_rho_lo", "spearman_rho_hi"]
    return pd.DataFrame(rows, columns=cols)


def write_correlations(df, out) -> str:
    """Write a correlation table: Parquet (``.parquet``, ``.pq``) or CSV (``.csv``) by suffix.

    Parameters
    ----------
    df : pandas.DataFrame
    out : str or os.PathLike
        Local path or fsspec URL.

    Returns
    -------
    str
        ``out``.
    """
    out = os.fspath(out)
    low = out.lower()
    if "://" not in out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if low.endswith((".parquet", ".pq")):
        df.to_parquet(out, index=False)
    elif low.endswith(".csv"):
        df.to_csv(out, index=False)
    else:
        raise ValueError(f"{out}: unknown suffix (use .parquet or .csv)")
    return out


__all__ = ["HTSR_METRICS", "DEFAULT_BENCHMARK", "joined", "correlate", "fit_stats", "bootstrap_ci",
           "write_correlations"]
