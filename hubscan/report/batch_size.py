"""Figures of the batch-size experiment (:mod:`hubscan.experiments.batch_size`).

Drawn like every hubscan plot: on :class:`matplotlib.figure.Figure` objects with an Agg canvas
(:func:`hubscan.report.plots.new_figure`), no pyplot, constrained layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hubscan.report.plots import new_figure


def fmt_p(p) -> str:
    """A p-value for a table or legend: ``n/a``, ``1.2e-05`` below 0.001, else three decimals."""
    return "n/a" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def fmt(v, nd=3) -> str:
    """A number with ``nd`` decimals, ``n/a`` for None / non-finite."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _batch_axis(ax, ylabel: str | None = None, legend_size: float = 8) -> None:
    """A log2 batch-size x axis, grid and legend (``ylabel`` when given)."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)


def _png(fig, out: Path, name: str, paths: list[str]) -> None:
    fig.savefig(out / name, dpi=110)
    paths.append(name)


def batch_size_plots(out: Path, args, results: dict, con, init_evals: dict, *, big_layer: dict) -> list[str]:
    """The batch-size experiment's figures, saved as PNGs in ``out``.

    Parameters
    ----------
    out : pathlib.Path
        The experiment's folder (its ``hub/`` holds ``<model>_bs<B>_seed<S>.safetensors``).
    args : argparse.Namespace
        The experiment's settings (``epochs``, ``budget``, ``steps``, ``lr``, ``seeds``, ``batch_sizes``).
    results : dict
        :func:`hubscan.experiments.batch_size.run`'s results: per model ``per_batch_size`` means and
        standard deviations, ``trend`` (:func:`hubscan.correlate.fit_stats` of each metric against
        log2 B), ``per_layer``, ``init``.
    con : duckdb.DuckDBPyConnection
        :func:`hubscan.query.connect` on the experiment's dataset (eigenvalues from ``esd``).
    init_evals : dict
        model → eigenvalues of its largest hidden layer at initialization (seed 0), or None.
    big_layer : dict
        model → the name of its largest hidden layer.

    Returns
    -------
    list of str
        File names written: ``alpha_vs_batch_size.png`` (mean alpha and num_spikes ± sd vs B, with
        Spearman rho and p), ``alpha_per_layer.png``, ``accuracy_vs_batch_size.png``,
        ``esd_smallest_vs_largest_batch.png`` (density and complementary CDF of the largest hidden
        layer at the smallest and largest B and at init).
    """
    colors = {"mlp": "tab:blue", "cnn": "tab:orange"}
    paths = []
    # alpha vs batch size
    fig = new_figure((11, 4))
    axes = fig.subplots(1, 2)
    for model, r in results["models"].items():
        pb = r["per_batch_size"]
        B = [p["batch_size"] for p in pb]
        for ax, col, lab in ((axes[0], "alpha", "mean layer alpha"), (axes[1], "num_spikes", "mean num_spikes")):
            ax.errorbar(B, [p[f"{col}_mean"] for p in pb], yerr=[p[f"{col}_std"] or 0 for p in pb], marker="o",
                        capsize=3, color=colors.get(model), label=f"{model} (rho={fmt(r['trend'][col].get('spearman_rho'), 2)}, "
                                                                  f"p={fmt_p(r['trend'][col].get('spearman_p'))})")
            init = r["init"].get(f"{col}_mean")
            if init is not None:
                ax.axhline(init, ls="--", lw=1, color=colors.get(model), alpha=0.6, label=f"{model} at init")
            ax.set_ylabel(lab)
    for ax in axes:
        _batch_axis(ax)
    budget = f"{args.epochs} epochs" if args.budget == "epochs" else f"{args.steps} steps"
    fig.suptitle(f"HTSR metrics vs SGD batch size (digits, lr {args.lr}, {budget}, mean ± sd over {args.seeds} seeds)")
    _png(fig, out, "alpha_vs_batch_size.png", paths)

    # per-layer alpha
    fig = new_figure((6.5, 4))
    ax = fig.add_subplot()
    for model, r in results["models"].items():
        for (name, info), ls in zip(r["per_layer"].items(), ("-", "--", ":", "-.")):
            Bs = sorted(info["alpha_mean_per_bs"])
            ax.plot(Bs, [info["alpha_mean_per_bs"][b] for b in Bs], ls=ls, marker=".", color=colors.get(model),
                    label=f"{model} {name}")
    _batch_axis(ax, "alpha (mean over seeds)", legend_size=7)
    ax.set_title("alpha per layer vs batch size")
    _png(fig, out, "alpha_per_layer.png", paths)

    # accuracy vs batch size
    fig = new_figure((6.5, 4))
    ax = fig.add_subplot()
    for model, r in results["models"].items():
        pb = r["per_batch_size"]
        B = [q["batch_size"] for q in pb]
        ax.errorbar(B, [q["test_accuracy_mean"] for q in pb], yerr=[q["test_accuracy_std"] or 0 for q in pb],
                    marker="o", capsize=3, color=colors.get(model), label=f"{model} test")
        ax.plot(B, [q["train_accuracy_mean"] for q in pb], ls=":", marker=".", color=colors.get(model),
                label=f"{model} train")
    _batch_axis(ax, "accuracy")
    ax.set_title(f"accuracy vs batch size ({budget})")
    _png(fig, out, "accuracy_vs_batch_size.png", paths)

    # ESD of the biggest hidden layer: smallest vs largest batch size (seed 0), and init
    models = list(results["models"])
    fig = new_figure((5.5 * len(models), 7.5))
    axes = fig.subplots(2, len(models), squeeze=False)
    bmin, bmax = min(args.batch_sizes), max(args.batch_sizes)
    for ax, ax2, model in zip(axes[0], axes[1], models):
        layer = big_layer[model]
        curves = []
        for B, color in ((bmin, "tab:red"), (bmax, "tab:green")):
            name = f"{model}_bs{B}_seed0.safetensors"  # its id: relative to hub/ (or, older, absolute)
            ids = [name, str(out / "hub" / name)]
            row = con.execute("SELECT evals FROM esd WHERE model_id IN (?, ?) AND name = ?", [*ids, layer]).fetchone()
            lay = con.execute("SELECT alpha, xmin, lambda_plus FROM layers WHERE model_id IN (?, ?) AND name = ?",
                              [*ids, layer]).fetchone()
            if row is None:
                continue
            curves.append((f"B={B} (alpha={fmt(lay[0], 2)})", np.asarray(row[0], float), color, lay))
        if init_evals.get(model) is not None:
            curves.append(("init", np.asarray(init_evals[model], float), "gray", None))
        for label, ev, color, lay in curves:
            ev = ev[ev > 1e-8]
            bins = np.logspace(np.log10(ev.min()), np.log10(ev.max()), 40)
            h, edges = np.histogram(ev, bins=bins, density=True)
            centers = np.sqrt(edges[1:] * edges[:-1])
            ax.loglog(centers[h > 0], h[h > 0], marker=".", color=color, label=label,
                      ls="-" if label != "init" else "--")
            srt = np.sort(ev)
            ccdf = 1.0 - np.arange(len(srt)) / len(srt)
            ax2.loglog(srt, ccdf, color=color, label=label, ls="-" if label != "init" else "--")
            if lay is not None and lay[1] is not None:
                ax.axvline(lay[1], color=color, lw=0.8, ls=":")
                ax2.axvline(lay[1], color=color, lw=0.8, ls=":")
        ax.set_xlabel("eigenvalue of WᵀW")
        ax.set_ylabel("density (log-spaced bins)")
        ax.set_title(f"{model} {layer} ESD (seed 0; dotted: xmin of the PL fit)", fontsize=9)
        ax.legend(fontsize=8)
        ax2.set_xlabel("eigenvalue of WᵀW")
        ax2.set_ylabel("P(λ ≥ x)")
        ax2.set_title(f"{model} {layer}: complementary CDF (tail slope ≈ 1 − alpha)", fontsize=9)
        ax2.legend(fontsize=8)
    _png(fig, out, "esd_smallest_vs_largest_batch.png", paths)
    return paths
