"""Plots and the self-contained HTML report of a survey.

Everything renders with matplotlib's Agg canvas on :class:`matplotlib.figure.Figure` objects
(no pyplot, no display, no global backend switch), so the functions are safe in servers, Ray
workers and notebooks alike.

Plots (:mod:`hubscan.report.plots`)::

    accuracy_vs_metric(df, metric, accuracy="top1", group="family")
    alpha_vs_depth(layers_df, model_ids)
    alpha_over_training(training_df)       # a run of hubscan.monitor
    esd_loglog(evals, fit)
    tau_heatmap(corr_df)
    alpha_histogram(layers_df)
    plot_model(result, out_dir)            # files for ``hubscan analyze --plot DIR``

Report (:mod:`hubscan.report.html`)::

    build_report(dataset, out_path, metric="top1")
"""

from hubscan.report.html import build_report
from hubscan.report.plots import (
    METRIC_LABELS,
    accuracy_vs_metric,
    alpha_over_training,
    alpha_histogram,
    alpha_vs_depth,
    esd_loglog,
    plot_model,
    tau_heatmap,
)

__all__ = ["accuracy_vs_metric", "alpha_vs_depth", "alpha_over_training", "esd_loglog", "tau_heatmap", "alpha_histogram",
           "plot_model", "build_report", "METRIC_LABELS"]
