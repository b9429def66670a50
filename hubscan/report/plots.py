"""Plots of HTSR spectra and of accuracy against HTSR metrics.

Every function draws on a fresh :class:`matplotlib.figure.Figure` attached to an Agg canvas (no
pyplot: nothing is registered globally, no display is needed and the figure is freed with its last
reference), returns it, and saves it as a PNG when given ``path``.

Conventions (:mod:`hubscan.schema`): eigenvalues λ are those of WᵀW; α is the exponent of the
power-law fit p(λ) ∝ λ^−α for xmin ≤ λ ≤ xmax (:mod:`hubscan.esd.powerlaw`); layers with
α < 2 are flagged over-trained and α > 6 under-trained (WeightWatcher's thresholds).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from hubscan.esd.registry import correlate_metrics, get_metric, metric_labels
from hubscan.records import RowStatus, part_key

#: HTSR model metrics (the ``models`` table's means of the layer metrics) a report correlates, and
#: the axis label of each metric: both derived from the metric registry (:mod:`hubscan.esd.registry`;
#: rand_distance only exists for ``--randomize`` surveys).
HTSR_METRICS = correlate_metrics()
METRIC_LABELS = metric_labels()

#: Labels of common accuracy columns.
ACCURACY_LABELS = {
    "top1": "top-1 accuracy (reported)",
    "top5": "top-5 accuracy (reported)",
    "accuracy": "accuracy (reported)",
}

#: The alpha guides (over-trained below, under-trained above): the registry's warning thresholds.
OVER_TRAINED = get_metric("alpha").warn_below
UNDER_TRAINED = get_metric("alpha").warn_above
#: Line style of the reference lines (alpha's 2 / 6 guides, zero lines).
GUIDE_STYLE = dict(color="0.35", linestyle="--", linewidth=1.0)


def new_figure(figsize=(7.0, 4.8), layout: str | None = "constrained"):
    """A matplotlib Figure drawn off-screen (Agg canvas, no pyplot state): ``figsize`` in inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike | None, dpi: int) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _get(fit: Any, key: str) -> float:
    """A float field of a fit given as a mapping (dict, pandas Series) or an object; NaN if absent."""
    if fit is None:
        return math.nan
    if isinstance(fit, Mapping) or hasattr(fit, "get"):
        v = fit.get(key)
    else:
        v = getattr(fit, key, None)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def short_label(text: str, width: int = 40) -> str:
    """``text`` cut to ``width`` characters from the left (``…`` and its end: a model id's name part)."""
    text = str(text)
    return text if len(text) <= width else "…" + text[-(width - 1):]


def accuracy_column(df, accuracy: str) -> str:
    """The column holding the accuracy values: ``accuracy`` itself when the frame has it (a
    hand-made table with a ``top1`` column), else ``"accuracy"`` (:func:`hubscan.correlate.joined`
    names the metric in its ``metric`` column and puts the values in ``accuracy``).

    Raises
    ------
    KeyError
        Neither column exists.
    """
    if accuracy in df.columns and accuracy not in HTSR_METRICS:
        return accuracy
    if "accuracy" in df.columns:
        return "accuracy"
    raise KeyError(f"no accuracy column: neither {accuracy!r} nor 'accuracy' in the DataFrame "
                   f"(have: {', '.join(map(str, df.columns))})")


def corr_columns(corr_df):
    """A correlation table with :func:`hubscan.correlate.correlate`'s column names normalised:
    ``metric`` → ``metric_name``, ``spearman_rho`` → ``spearman``, ``pearson_r`` → ``pearson``
    (tables already using the short names pass unchanged)."""
    ren = {a: b for a, b in (("metric", "metric_name"), ("spearman_rho", "spearman"), ("pearson_r", "pearson"))
           if a in corr_df.columns and b not in corr_df.columns}
    return corr_df.rename(columns=ren) if ren else corr_df


def legend_outside(ax, *, small: bool = False, below: bool = False) -> None:
    """The legend beside the axes, or (``below``) a figure legend under everything (constrained
    layout makes room for it): never over the data."""
    size = "x-small" if small else "small"
    if below:
        handles, labels = ax.get_legend_handles_labels()
        fixed = ax.figure.get_layout_engine() is None  # fixed margins: the caller left room at the bottom
        ax.figure.legend(handles, labels, fontsize=size, loc="lower center" if fixed else "outside lower center",
                         ncol=3 if len(labels) > 4 else 2, frameon=False)
    else:
        ax.legend(fontsize=size, loc="upper left", bbox_to_anchor=(1.06, 1.0), frameon=False)


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")


def accuracy_vs_metric(df, metric: str, accuracy: str = "top1", group: str | None = "family", *,
                       title: str | None = None, path: str | os.PathLike | None = None, dpi: int = 100):
    """Scatter of reported accuracy against one HTSR metric, one color and OLS line per group.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per model (:func:`hubscan.correlate.joined`'s output): columns ``metric``,
        the accuracy (see ``accuracy``) and, optionally, ``group``. Rows where either value is
        missing or not finite are left out.
    metric : str
        The HTSR column on the x axis (e.g. ``alpha``, ``log_norm``).
    accuracy : str
        The accuracy metric on the y axis: its column, or, when the frame has no such column,
        the ``accuracy`` column (as :func:`hubscan.correlate.joined` returns it).
    group : str or None
        Column whose values get one color and one regression line each (missing values are
        grouped as ``?``); None or an absent column: one group.
    title : str, optional
        Defaults to ``"<accuracy> vs <metric>: N models, K groups"``.
    path : path, optional
        Where to save the PNG.
    dpi : int
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
        One scatter collection per group (the sum of their offsets is the number of models
        plotted), one least-squares line (``gid="regression"``) per group with at least two
        points of distinct x, and, over every model, the least-squares line of
        :func:`hubscan.correlate.fit_stats` (``gid="overall-fit"``, dashed black, its Pearson r and
        n in the legend) when it is defined (n ≥ 3). The legend is outside the axes.

    Raises
    ------
    KeyError
        ``metric`` is not a column of ``df``, or it has no accuracy column.
    """
    import pandas as pd

    if metric not in df.columns:
        raise KeyError(f"column {metric!r} not in the DataFrame (have: {', '.join(map(str, df.columns))})")
    ycol = accuracy_column(df, accuracy)
    x = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(df[ycol], errors="coerce").to_numpy(dtype=float)
    if group and group in df.columns:
        g = df[group].astype(object).where(df[group].notna(), "?").astype(str).to_numpy()
    else:
        g = np.full(len(df), "all", dtype=object)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[ok], y[ok], g[ok]
    names, counts = np.unique(g, return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))

    fig = new_figure()
    ax = fig.add_subplot()
    for color, i in zip(_colors(len(order)), order):
        name = names[i]
        sel = g == name
        gx, gy = x[sel], y[sel]
        ax.scatter(gx, gy, color=color, s=30, alpha=0.85, edgecolors="white", linewidths=0.5,
                   label=f"{short_label(name, 28)} (n={len(gx)})", zorder=3)
        if len(gx) >= 2 and np.ptp(gx) > 0:
            slope, intercept = np.polyfit(gx, gy, 1)
            xs = np.array([gx.min(), gx.max()])
            ax.plot(xs, slope * xs + intercept, color=color, linewidth=1.6, gid="regression", zorder=2)
    from hubscan.correlate import fit_stats
    overall = fit_stats(x, y)
    if math.isfinite(overall["slope"]):
        xs = np.array([x.min(), x.max()])
        ax.plot(xs, overall["slope"] * xs + overall["intercept"], color="black", linestyle="--", linewidth=1.4,
                gid="overall-fit", zorder=4, label=f"all models: least squares (r = {overall['pearson_r']:.2f}, "
                                                    f"n = {overall['n']})")
    ax.set_xlabel(metric_labels().get(metric, metric))
    ax.set_ylabel(ACCURACY_LABELS.get(accuracy, accuracy))
    ax.set_title(title or f"{accuracy} vs {metric}: {len(x)} models, {len(names)} "
                 f"{'groups' if len(names) != 1 else 'group'}", fontsize="medium")
    ax.grid(True, alpha=0.3)
    if len(x) == 0:
        _no_data(ax, "no model has both values")
    else:
        legend_outside(ax, small=len(names) > 8, below=True)
    _save(fig, path, dpi)
    return fig


def _successful(layers_df):
    import pandas as pd

    df = layers_df
    if "status" in df.columns:
        df = df[df["status"] == RowStatus.SUCCESS]
    alpha = pd.to_numeric(df["alpha"], errors="coerce")
    return df[np.isfinite(alpha.to_numpy(dtype=float))]


def _alpha_band(ax) -> None:
    """The well-trained band OVER_TRAINED ≤ α ≤ UNDER_TRAINED, its edges as guide lines (``gid="guide"``)."""
    ax.axhspan(OVER_TRAINED, UNDER_TRAINED, color="tab:green", alpha=0.06, zorder=0)
    ax.axhline(OVER_TRAINED, gid="guide", **GUIDE_STYLE)
    ax.axhline(UNDER_TRAINED, gid="guide", **GUIDE_STYLE)


def alpha_vs_depth(layers_df, model_ids: Iterable[str] | None = None, *, title: str | None = None,
                   path: str | os.PathLike | None = None, dpi: int = 100, max_ticks: int = 30):
    """Per-layer α against the layer's position in the model, one line per model.

    Parameters
    ----------
    layers_df : pandas.DataFrame
        ``layers`` rows: ``alpha``, ``layer_id``, optionally ``part``, ``status`` and
        ``model_id`` (without ``model_id`` the whole frame is one model). Only rows with
        ``status == "success"`` and a finite α are drawn.
    model_ids : iterable of str, optional
        The models to draw, in legend order (default: every model of the frame).
    title : str, optional
    path : path, optional
        Where to save the PNG.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        One line (``gid="alpha-depth"``) per model, its x the index 0…n−1 of the model's
        successful layers sorted by (``layer_id``, ``part``) — file order — and its y their α;
        the α = 2 and α = 6 guide lines have ``gid="guide"``. The y axis is logarithmic when some
        α exceeds 15. With a ``name`` column the x ticks are the layer names (``layer_id: name``,
        shortened from the left; at most ``max_ticks`` of them, evenly spaced) of the first model.
        The legend is outside the axes.
    """
    df = _successful(layers_df)
    if "model_id" not in df.columns:
        df = df.assign(model_id="model")
    if model_ids is None:
        model_ids = list(dict.fromkeys(df["model_id"].tolist()))
    model_ids = list(model_ids)
    fig = new_figure((10.0, 6.4))
    ax = fig.add_subplot()
    _alpha_band(ax)
    top = 0.0
    names = None
    for color, mid in zip(_colors(len(model_ids)), model_ids):
        sub = df[df["model_id"] == mid]
        keys = [c for c in ("layer_id", "part") if c in sub.columns]
        if keys:
            sub = sub.assign(**({"part": sub["part"].fillna("")} if "part" in sub.columns else {}))
            sub = sub.sort_values(keys, kind="stable")
        if names is None and "name" in sub.columns and len(sub):
            names = [(f"{int(i)}: " if i == i else "") + short_label(_key(r), 26) for i, r in
                     zip(sub["layer_id"] if "layer_id" in sub.columns else [math.nan] * len(sub),
                         sub.to_dict("records"))]
        a = sub["alpha"].to_numpy(dtype=float)
        top = max(top, float(a.max()) if len(a) else 0.0)
        ax.plot(np.arange(len(a)), a, marker="o", markersize=3, linewidth=1.0, color=color, gid="alpha-depth",
                label=f"{short_label(mid)} ({len(a)} layers)")
    if top > 15:
        ax.set_yscale("log")
    ax.text(1.0, OVER_TRAINED, f" α={OVER_TRAINED:g}", transform=ax.get_yaxis_transform(), va="center",
            fontsize="x-small", color="0.35", clip_on=False)
    ax.text(1.0, UNDER_TRAINED, f" α={UNDER_TRAINED:g}", transform=ax.get_yaxis_transform(), va="center",
            fontsize="x-small", color="0.35", clip_on=False)
    if names:
        step = max(1, math.ceil(len(names) / max_ticks))
        ticks = list(range(0, len(names), step))
        ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize="x-small")
        ax.set_xlabel("layer_id: name" + (" (of the first model)" if len(model_ids) > 1 else "")
                      + ", fitted matrices in file order")
    else:
        ax.set_xlabel("layer index (successfully fitted matrices, file order)")
    ax.set_ylabel("α (power-law exponent of the layer's ESD tail)")
    ax.set_title(title or f"α per layer vs depth (α < {OVER_TRAINED:g} over-trained, α > {UNDER_TRAINED:g} "
                 "under-trained)", fontsize="medium")
    ax.grid(True, alpha=0.3)
    if model_ids:
        legend_outside(ax)
    if not len(df) or top == 0.0:
        _no_data(ax, "no successfully fitted layer")
    _save(fig, path, dpi)
    return fig


def alpha_over_training(training_df, *, x: str = "step", max_layers: int = 20, title: str | None = None,
                        path: str | os.PathLike | None = None, dpi: int = 100):
    """Per-layer α over training, one line per layer (the ``training`` table of :mod:`hubscan.monitor`).

    Parameters
    ----------
    training_df : pandas.DataFrame
        ``training`` rows of one run: ``step``, ``epoch``, ``name``, optionally ``part``, ``layer_id``,
        ``status``, and ``alpha``. Only rows with ``status == "success"`` and a finite α are drawn.
    x : {"step", "epoch"}
        The horizontal axis.
    max_layers : int
        At most this many layers are drawn: all when there are no more, else that many spread evenly over the
        model's depth (file order), the first and the last included.
    title : str, optional
    path : path, optional
        Where to save the PNG.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        One line (``gid="alpha-training"``) per layer, its points the analyses in order of ``x``, colored by
        depth (viridis: first layer dark, last yellow); the α = 2 and α = 6 guides have ``gid="guide"``; the
        y axis is logarithmic when some α exceeds 15. The legend names the layers (``layer_id: name``).
    """
    import matplotlib

    df = _successful(training_df)
    df = df.assign(key=[_key(r) for r in df.to_dict("records")])
    order = (df.sort_values([c for c in ("layer_id", "part") if c in df.columns], kind="stable")["key"]
             .drop_duplicates().tolist())
    if len(order) > max_layers:
        order = [order[i] for i in sorted(set(np.linspace(0, len(order) - 1, max_layers).round().astype(int)))]
    fig = new_figure((10.0, 6.0))
    ax = fig.add_subplot()
    _alpha_band(ax)
    cmap = matplotlib.colormaps["viridis"]
    top = 0.0
    for i, key in enumerate(order):
        sub = df[df["key"] == key].sort_values(x, kind="stable")
        a = sub["alpha"].to_numpy(dtype=float)
        top = max(top, float(a.max()))
        lid = sub["layer_id"].iloc[0] if "layer_id" in sub.columns else None
        ax.plot(sub[x].to_numpy(dtype=float), a, marker="o", markersize=3, linewidth=1.2, gid="alpha-training",
                color=cmap(i / max(1, len(order) - 1)),
                label=(f"{int(lid)}: " if lid is not None and lid == lid else "") + short_label(key, 34))
    if top > 15:
        ax.set_yscale("log")
    ax.set_xlabel({"step": "optimizer steps", "epoch": "epochs"}.get(x, x))
    ax.set_ylabel("α (power-law exponent of the layer's ESD tail)")
    ax.set_title(title or "α per layer over training", fontsize="medium")
    ax.grid(True, alpha=0.3)
    if order:
        legend_outside(ax, small=len(order) > 10)
    else:
        _no_data(ax, "no successfully fitted layer")
    _save(fig, path, dpi)
    return fig


def esd_loglog(evals, fit: Mapping | Any | None = None, *, title: str | None = None, bins: int = 80,
               evals_thresh: float | None = None, path: str | os.PathLike | None = None, dpi: int = 100):
    """The empirical spectral density of one layer on log-log axes, with its power-law fit.

    Parameters
    ----------
    evals : array_like
        Eigenvalues of WᵀW (any order). Only those above ``evals_thresh`` are drawn — the ones
        the power-law fit used (and zeros cannot be shown on a log axis).
    fit : mapping or object, optional
        ``alpha``, ``xmin``, ``xmax``, ``D`` and optionally ``lambda_plus`` (the MP bulk edge) and
        ``title``: a ``layers`` row (dict or pandas Series) or a
        :class:`~hubscan.esd.powerlaw.PowerLawFit`. Missing or NaN α: the histogram only.
    title : str, optional
        Heading (e.g. the layer name); ``fit["title"]`` when not given.
    bins : int
        Number of log-spaced histogram bins between the smallest and largest eigenvalue drawn.
    evals_thresh : float, optional
        Default :data:`hubscan.esd.powerlaw.EVALS_THRESH` (1e-5).
    path : path, optional
        Where to save the PNG.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        The density histogram (bar areas sum to 1); the fitted density
        ``f·(α−1)/xmin·(λ/xmin)^−α`` on [xmin, xmax] (``gid="powerlaw"``), where f is the fraction
        of drawn eigenvalues ≥ xmin — the normalised power law scaled to the tail's share of the
        histogram; a vertical line at xmin (``gid="xmin"``) and at λ+ when given
        (``gid="lambda_plus"``).
    """
    from hubscan.esd.powerlaw import EVALS_THRESH

    thresh = EVALS_THRESH if evals_thresh is None else evals_thresh
    ev = np.asarray(evals, dtype=np.float64).ravel()
    x = np.sort(ev[np.isfinite(ev) & (ev > thresh)])
    if title is None and fit is not None:
        t = fit.get("title") if hasattr(fit, "get") else getattr(fit, "title", None)
        title = None if t is None else str(t)
    alpha, xmin, xmax, D = (_get(fit, k) for k in ("alpha", "xmin", "xmax", "D"))
    lam_plus = _get(fit, "lambda_plus")

    fig = new_figure((7.0, 5.6), layout=None)  # fixed margins: constrained layout would double the time per layer
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.23, top=0.89)  # the legend goes under the axes
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ of WᵀW")
    ax.set_ylabel("density p(λ)")
    if len(x) == 0:
        _no_data(ax, "no eigenvalue above the threshold")
        ax.set_title(title or "ESD", fontsize="medium")
        _save(fig, path, dpi)
        return fig
    lo, hi = x[0], x[-1]
    if hi <= lo:
        lo, hi = lo * 0.9, hi * 1.1
    edges = np.geomspace(lo, hi, bins + 1)
    dens, _, _ = ax.hist(x, bins=edges, density=True, color="tab:blue", alpha=0.55, edgecolor="none",
                         label=f"ESD ({len(x)} eigenvalues)")
    positive = dens[dens > 0]
    bottom = positive.min() / 5 if len(positive) else None

    fitted = math.isfinite(alpha) and alpha > 1 and math.isfinite(xmin) and xmin > 0
    if fitted:
        top = xmax if math.isfinite(xmax) and xmax > xmin else hi
        frac = np.count_nonzero(x >= xmin) / len(x)
        lam = np.geomspace(xmin, top, 200)
        pl = frac * (alpha - 1) / xmin * (lam / xmin) ** (-alpha)
        label = f"power law λ^−{alpha:.2f}" + (f" (D = {D:.3f})" if math.isfinite(D) else "")
        ax.plot(lam, pl, color="tab:red", linewidth=2.0, gid="powerlaw", label=label, zorder=3)
        ax.axvline(xmin, color="tab:red", linestyle="--", linewidth=1.0, gid="xmin", label=f"xmin = {xmin:.3g}")
        if bottom is not None:
            bottom = min(bottom, max(pl.min(), positive.min() / 100))
    if math.isfinite(lam_plus) and lam_plus > 0:
        ax.axvline(lam_plus, color="tab:green", linestyle=":", linewidth=1.5, gid="lambda_plus",
                   label=f"λ+ (MP bulk edge) = {lam_plus:.3g}")
    if bottom is not None:
        ax.set_ylim(bottom=bottom)
    head = title or "ESD"
    sub = (f"α = {alpha:.2f}, xmin = {xmin:.3g}" + (f", D = {D:.3f}" if math.isfinite(D) else "")
           if fitted else "no power-law fit")
    ax.set_title(f"{short_label(head, 70)}\n{sub}", fontsize="medium")
    legend_outside(ax, below=True)
    ax.grid(True, which="major", alpha=0.3)
    _save(fig, path, dpi)
    return fig


def tau_heatmap(corr_df, *, value: str = "kendall_tau", p_value: str | None = "kendall_p",
                title: str | None = None, path: str | os.PathLike | None = None, dpi: int = 100):
    """Heat map of a rank correlation per group (rows) and HTSR metric (columns), annotated.

    Parameters
    ----------
    corr_df : pandas.DataFrame
        :func:`hubscan.correlate.correlate`'s output: ``group``, ``metric`` (or ``metric_name``),
        ``value`` and optionally ``p_value`` and ``n``.
    value : str
        The column shown (default Kendall τ; ``spearman`` / ``spearman_rho`` work too).
    p_value : str or None
        Its p-value column: cells with p < 0.05 get a ``*``.
    title : str, optional
    path : path, optional
        Where to save the PNG.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        One image cell per (group, metric) on a diverging scale fixed to [−1, 1] (missing cells
        grey), one annotation per cell (the value, ``*`` and ``n``; ``–`` when missing) and a
        colorbar.
    """
    import matplotlib
    import pandas as pd

    df = corr_columns(corr_df).copy()
    value = {"spearman_rho": "spearman", "pearson_r": "pearson"}.get(value, value) if value not in df.columns \
        else value
    for col in ("group", "metric_name", value):
        if col not in df.columns:
            raise KeyError(f"column {col!r} not in the correlation table")
    df["group"] = df["group"].astype(object).where(df["group"].notna(), "?").astype(str)
    groups = list(dict.fromkeys(df["group"]))
    present = list(dict.fromkeys(df["metric_name"].astype(str)))
    metrics = [m for m in HTSR_METRICS if m in present] + [m for m in present if m not in HTSR_METRICS]
    df["metric_name"] = df["metric_name"].astype(str)
    first = df.drop_duplicates(["group", "metric_name"]).set_index(["group", "metric_name"])

    def cell(col):
        out = np.full((len(groups), len(metrics)), np.nan)
        if col and col in first.columns:
            for i, g in enumerate(groups):
                for j, m in enumerate(metrics):
                    if (g, m) in first.index:
                        out[i, j] = pd.to_numeric(first.at[(g, m), col], errors="coerce")
        return out

    vals, pvals, ns = cell(value), cell(p_value), cell("n")
    fig = new_figure((max(5.0, 1.5 + 1.15 * len(metrics)), max(2.6, 1.5 + 0.45 * len(groups))))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
    fontsize = "small" if len(groups) * len(metrics) <= 60 else "x-small"
    for i in range(len(groups)):
        for j in range(len(metrics)):
            v = vals[i, j]
            if math.isfinite(v):
                text = f"{v:+.2f}" + ("*" if math.isfinite(pvals[i, j]) and pvals[i, j] < 0.05 else "")
                if math.isfinite(ns[i, j]):
                    text += f"\nn={int(ns[i, j])}"
                color = "white" if abs(v) > 0.6 else "black"
            else:
                text, color = "–", "0.3"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    ax.set_yticks(range(len(groups)), [short_label(g, 30) for g in groups])
    label = {"kendall_tau": "Kendall τ", "spearman": "Spearman ρ", "pearson": "Pearson r"}.get(value, value)
    fig.colorbar(im, ax=ax, label=label, shrink=0.9)
    ax.set_title(title or f"{label} of accuracy vs HTSR metric per group (* p < 0.05)", fontsize="medium")
    _save(fig, path, dpi)
    return fig


def alpha_histogram(layers_df, *, bins: int = 60, clip: float = 15.0, title: str | None = None,
                    path: str | os.PathLike | None = None, dpi: int = 100):
    """Histogram of layer α over a whole survey (successful fits only), with the 2 / 6 lines.

    Parameters
    ----------
    layers_df : pandas.DataFrame
        ``layers`` rows with ``alpha`` and optionally ``status`` (only ``success`` rows with a
        finite α count) and ``model_key`` / ``model_id`` (to count models).
    bins : int
        Number of equal-width bins.
    clip : float
        α above this is counted in the last bin (the title says how many).
    title : str, optional
        Defaults to the counts of layers and models.
    path : path, optional
        Where to save the PNG.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        The bars' heights sum to the number of successful layers.
    """
    df = _successful(layers_df)
    a = df["alpha"].to_numpy(dtype=float)
    model_col = next((c for c in ("model_key", "model_id") if c in df.columns), None)
    n_models = int(df[model_col].nunique()) if model_col else None

    fig = new_figure()
    ax = fig.add_subplot()
    n_clipped = 0
    if len(a):
        lo = min(float(a.min()), OVER_TRAINED)
        lo = math.floor(lo * 2) / 2
        hi = max(min(float(a.max()), clip), UNDER_TRAINED + 0.5)
        n_clipped = int(np.count_nonzero(a > hi))
        edges = np.linspace(lo, hi, bins + 1)
        ax.hist(np.clip(a, lo, hi), bins=edges, color="tab:blue", alpha=0.75, edgecolor="white", linewidth=0.3)
        shares = (np.mean(a < OVER_TRAINED), np.mean((a >= OVER_TRAINED) & (a <= UNDER_TRAINED)),
                  np.mean(a > UNDER_TRAINED))
    else:
        _no_data(ax, "no successfully fitted layer")
    ax.axvline(OVER_TRAINED, gid="guide", label=f"α = {OVER_TRAINED:g} (over-trained below)", **GUIDE_STYLE)
    ax.axvline(UNDER_TRAINED, gid="guide", label=f"α = {UNDER_TRAINED:g} (under-trained above)",
               **{**GUIDE_STYLE, "linestyle": ":"})
    from matplotlib.ticker import MaxNLocator
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer α (power-law exponent of the ESD tail)")
    ax.set_ylabel("layers")
    head = f"layer α: {len(a)} successful fits" + (f" in {n_models} models" if n_models is not None else "")
    if len(a):
        g2, g6 = f"{OVER_TRAINED:g}", f"{UNDER_TRAINED:g}"
        head += f"\nα < {g2}: {shares[0]:.0%}, {g2} ≤ α ≤ {g6}: {shares[1]:.0%}, α > {g6}: {shares[2]:.0%}"
    if n_clipped:
        head += f"\n({n_clipped} with α > {hi:.3g} counted in the last bin)"
    ax.set_title(title or head, fontsize="medium")
    legend_outside(ax, below=True)
    ax.grid(True, alpha=0.3)
    _save(fig, path, dpi)
    return fig


def _key(row) -> str:
    """The ``name:part`` key of a layer row (the key of ``AnalysisResult.evals``)."""
    return part_key(row["name"], row.get("part"))


def _sanitize(name: str, width: int = 100) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return clean[:width] or "layer"


def plot_model(result, out_dir: str | os.PathLike, *, dpi: int = 100, progress=None) -> list[Path]:
    """The plots of one analyzed model (``hubscan analyze --plot DIR``).

    Parameters
    ----------
    result : hubscan.analysis.AnalysisResult
        From ``hubscan.analyze(..., keep_evals=True)``.
    out_dir : path
        Created if missing.
    dpi : int
    progress : callable, optional
        Called as ``progress(done, total)`` after each layer plot (the CLI prints from it).

    Returns
    -------
    list of pathlib.Path
        One ``esd_<layer_id>_<layer>.png`` per layer with eigenvalues (``layer_id`` as in the
        layers table, 3+ digits; a split part gets ``-<part>``; the layer name with every character
        outside ``[A-Za-z0-9_.-]`` replaced by ``_``), then ``alpha_depth.png``.

    Raises
    ------
    ValueError
        The result holds no eigenvalues (analyzed without ``keep_evals=True``).
    """
    if not result.evals:
        raise ValueError("plot_model needs the eigenvalues: analyze with keep_evals=True")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    todo = [r for r in result.rows if _key(r) in result.evals]
    for index, row in enumerate(todo):
        key = _key(row)
        lid = row.get("layer_id", index)
        file = out / f"esd_{lid:03d}_{_sanitize(key)}.png"
        esd_loglog(result.evals[key], row, title=f"{lid}: {key}", path=file, dpi=dpi)
        files.append(file)
        if progress is not None:
            progress(index + 1, len(todo))
    label = os.path.basename(str(result.source).rstrip("/")) or str(result.source)
    df = result.to_pandas().assign(model_id=label)
    file = out / "alpha_depth.png"
    alpha_vs_depth(df, [label], title=f"{short_label(label, 60)}: α per layer vs depth", path=file, dpi=dpi)
    files.append(file)
    return files
