"""A self-contained HTML report of a survey dataset.

One file, no external resource: the CSS and the one small script (click a column header of a
``sortable`` table to sort it; no library) are inline, every plot is a PNG embedded as a base64
``data:`` URI, and every piece of text coming from the data (model ids, layer names, reasons,
families) is escaped with :func:`html.escape`. The page can be mailed, archived or opened from a
CI artifact offline.

Sections (with a table of contents): survey summary (models per status and family, surveys run),
the per-model table (model, status, α, layers, accuracy; sortable), failed / skipped / incomplete
models with their reasons and the reasons layers were skipped, the distribution of phases, accuracy
against HTSR metrics (correlation table, one scatter per metric with per-group and overall fit
lines, Kendall τ heat map — or a note saying there is no accuracy data), the layer-α histogram,
α vs depth of a few models (layer names on the axis), the ESDs of a few layers with their fits,
and the layers with the lowest and the highest α; with a ``training`` table (:mod:`hubscan.monitor`), the
monitored runs and α per layer over training; with a ``lineage`` table, the model tree
(:mod:`hubscan.report.tree`).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import math
import os
from pathlib import Path

import numpy as np

from hubscan.esd.registry import correlate_metrics, metric_labels
from hubscan.records import part_key
from hubscan.report import plots

log = logging.getLogger(__name__)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1900px;
       color: #222; padding: 0 24px; line-height: 1.4; }
nav.toc { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 6px 14px; display: inline-block; }
nav.toc ol { margin: 4px 0; padding-left: 20px; columns: 2; column-gap: 40px; }
nav.toc ol ol { columns: 1; padding-left: 18px; font-size: 0.92em; }
nav.toc li { break-inside: avoid; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th.asc::after { content: " ▲"; } table.sortable th.desc::after { content: " ▼"; }
.scroll { max-height: 560px; overflow: auto; }
.bar { display: inline-block; height: 10px; background: #4c78a8; vertical-align: middle; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.meta { color: #666; font-size: 0.9em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td { max-width: 36em; overflow-wrap: break-word; }
#model-table td:first-child { max-width: 24em; }
th { background: #f3f5f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0 0 12px; }
.grid figure { flex: 1 1 600px; max-width: 900px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.wrap { overflow-x: auto; }
"""


def escape_html(value) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _fmt(value, fmt: str | None = None) -> tuple[str, bool]:
    """(text, numeric) of one cell."""
    if value is None:
        return "–", False
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "–", True
        return (format(float(value), fmt) if fmt else f"{float(value):.4g}"), True
    if isinstance(value, dt.datetime):
        try:
            return value.strftime("%Y-%m-%d %H:%M:%S"), False
        except ValueError:  # pandas NaT
            return "–", False
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, (int, np.integer)):
        return str(int(value)), True
    try:
        import pandas as pd
        if value is pd.NaT or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
            return "–", False
    except (TypeError, ValueError):
        pass
    return str(value), False


#: Sorts a ``table.sortable`` by the clicked column: numbers (a cell's ``data-v``) numerically,
#: text alphabetically; a second click reverses. Plain DOM, no library.
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(asc ? 'asc' : 'desc');
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute('data-v');
        return v === null ? cell.textContent : (v === '' ? NaN : parseFloat(v));
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === 'number' || typeof y === 'number') {
          if (isNaN(x)) return 1; if (isNaN(y)) return -1;
          return asc ? x - y : y - x;
        }
        return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def html_table(df, columns: list[str] | None = None, formats: dict | None = None, headers: dict | None = None, *,
               sortable: bool = False, table_id: str | None = None) -> str:
    """An escaped HTML table of a DataFrame's columns (``sortable``: click a header to sort;
    numeric cells carry their value in ``data-v``)."""
    if df is None or len(df) == 0:
        return "<p class='meta'>(none)</p>"
    columns = [c for c in (columns or list(df.columns)) if c in df.columns]
    formats, headers = formats or {}, headers or {}
    attrs = (" class='sortable'" if sortable else "") + (f" id='{escape_html(table_id)}'" if table_id else "")
    out = [f"<div class='wrap{' scroll' if sortable and len(df) > 25 else ''}'><table{attrs}><thead><tr>"]
    out += [f"<th>{escape_html(headers.get(c, c))}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for row in df[columns].itertuples(index=False, name=None):
        out.append("<tr>")
        for c, v in zip(columns, row):
            text, numeric = _fmt(v, formats.get(c))
            if numeric and sortable:
                raw = "" if text == "–" else repr(float(v))
                out.append(f"<td class='num' data-v='{raw}'>{escape_html(text)}</td>")
            else:
                out.append(f"<td class='num'>{escape_html(text)}</td>" if numeric else f"<td>{escape_html(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def embed_figure(fig, alt: str, caption: str | None = None, dpi: int = 100) -> str:
    """A figure as an embedded PNG (``data:`` URI) inside ``<figure>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{escape_html(caption)}</figcaption>" if caption else ""
    return f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{escape_html(alt)}\">{cap}</figure>"


def note_html(text: str) -> str:
    """A highlighted note paragraph (escaped)."""
    return f"<p class='note'>{escape_html(text)}</p>"


def _views(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _latest(have: set[str], table: str) -> str:
    """``latest_models`` / ``latest_layers`` (:mod:`hubscan.query`: each model once, its newest analysis) where
    the connection has them, else the table: what the report counts over the dataset."""
    return f"latest_{table}" if f"latest_{table}" in have else table


def _columns(con, view: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


def _accuracy_frames(dataset, metric, benchmark, group_by, joined, corr):
    """(joined, corr, note, held): the accuracy data, computed with hubscan.correlate when not given; ``held``:
    the accuracy metrics the dataset holds when none matches ``metric`` (else empty)."""
    note = None
    if joined is None:
        try:
            from hubscan import correlate as _correlate
            joined = _correlate.joined(dataset, metric=metric, benchmark=benchmark)
        except Exception as exc:  # noqa: BLE001 - the report degrades to its survey-only parts
            log.warning("no accuracy data joined: %s", exc)
            return None, None, ' '.join(str(exc).split())[:300] or "unexpected error", []
    if joined is None or not hasattr(joined, "columns"):
        return None, None, "no joined table", []
    try:
        ycol = plots.accuracy_column(joined, metric)
    except KeyError:
        return None, None, f"no {metric!r} or 'accuracy' column in the joined data", []
    import pandas as pd
    acc = pd.to_numeric(joined[ycol], errors="coerce")
    joined = joined[np.isfinite(acc.to_numpy(dtype=float))]
    if len(joined) == 0:
        from hubscan.correlate import accuracy_metrics
        try:
            held = accuracy_metrics(dataset)
        except Exception:  # noqa: BLE001 - the hint is optional
            held = []
        hint = (f"; the accuracy table holds: {', '.join(held[:6])}{' …' if len(held) > 6 else ''} (choose with "
                "--metric/--benchmark)" if held else "")
        return None, None, f"no model of the dataset has a reported {metric!r}{hint}", held
    if corr is None:
        try:
            from hubscan import correlate as _correlate
            corr = _correlate.correlate(joined, metric=metric, group_by=group_by)
        except Exception as exc:  # noqa: BLE001
            log.warning("correlation failed: %s", exc)
            note = f"correlations could not be computed ({' '.join(str(exc).split())})"
            corr = None
    return joined, corr, note, []


def _survey_section(con, have) -> list[str]:
    out = ["<h2 id='survey'>Survey</h2>"]
    if "models" not in have:
        out.append(note_html("The dataset holds no models table: nothing has been surveyed yet."))
        return out
    cols = _columns(con, "models")
    # per model, not per analysis: the models table keeps one row per revision (and analysis config)
    latest = _latest(have, "models")
    status = con.execute(f"SELECT status, count(*) AS models FROM {latest} GROUP BY 1 ORDER BY 2 DESC, 1").df()
    total = int(status["models"].sum()) if len(status) else 0
    analyses = con.execute("SELECT count(*) FROM models").fetchone()[0]
    out.append(f"<p>{total} models in the dataset" + (f" ({analyses} analyses: earlier revisions and other analysis "
                                                       "configs too); the tables below count the latest analysis "
                                                       "of each model" if analyses != total else "") + ".</p>")
    out.append("<h3 id='status'>Models per status</h3>" + html_table(status))
    if "family" in cols:
        fam = con.execute(f"""
            SELECT coalesce(family, '?') AS family, count(*) AS models,
                   count(*) FILTER (WHERE status IN ('success', 'incomplete')) AS analyzed,
                   avg(alpha) AS mean_alpha, avg(alpha_weighted) AS mean_alpha_weighted,
                   sum(num_success) AS layers, sum(num_over_trained) AS over_trained,
                   sum(num_under_trained) AS under_trained
            FROM {latest} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 30""").df()
        out.append("<h3>Models per family (first 30)</h3>" + html_table(fam))
    if "surveys" in have:
        sv = con.execute("""SELECT survey_id, started_at, finished_at, source, num_models, num_already_done,
                            num_success, num_incomplete, num_failed, num_skipped, seconds, actors, interrupted
                            FROM surveys ORDER BY started_at DESC LIMIT 20""").df()
        out.append("<h3>Surveys run (latest 20)</h3>" + html_table(sv, formats={"seconds": ".1f"}))
    else:
        out.append("<p class='meta'>No surveys table (models written by single analyses).</p>")
    return out


def _models_section(con, have, joined, metric: str, limit: int) -> list[str]:
    """The per-model table: one row per model (its latest analysis), sortable, with its accuracy when joined."""
    out = ["<h2 id='models'>Models</h2>"]
    if "models" not in have:
        return out + [note_html("No models table.")]
    cols = _columns(con, "models")
    want = ["model_id", "source", "family", "status", "alpha", "alpha_weighted", "log_norm", "num_success",
            "num_over_trained", "num_under_trained", "num_failed", "num_skipped", "reason"]
    sel = ", ".join(c for c in want if c in cols)
    models = _latest(have, "models")
    total = con.execute(f"SELECT count(*) FROM {models}").fetchone()[0]
    df = con.execute(f"SELECT model_key, {sel} FROM {models} ORDER BY alpha NULLS LAST, model_id LIMIT ?",
                     [limit]).df()
    if joined is not None and len(joined) and {"model_id", "source"} <= set(joined.columns):
        ycol = plots.accuracy_column(joined, metric)
        key = "model_key" if "model_key" in joined.columns else None
        acc = joined[[key or "model_id", *([] if key else ["source"]), ycol]].rename(columns={ycol: metric})
        df = df.merge(acc.drop_duplicates(key or ["model_id", "source"]), how="left",
                      on=key or ["model_id", "source"])
    heads = {"num_success": "layers", "num_over_trained": f"α<{plots.OVER_TRAINED:g} layers",
             "num_under_trained": f"α>{plots.UNDER_TRAINED:g} layers",
             "num_failed": "failed layers", "num_skipped": "skipped layers", "alpha": "mean α",
             "alpha_weighted": "mean α_w"}
    show = [c for c in ["model_id", "source", "family", "status", "alpha", "alpha_weighted", "log_norm", metric,
                        "num_success", "num_over_trained", "num_under_trained", "num_failed", "num_skipped",
                        "reason"] if c in df.columns]
    shown = f"the {limit} with the lowest mean α of {total}" if total > limit else f"all {total}"
    out.append(f"<p>One row per model, its latest analysis ({shown}); click a column header to sort.</p>")
    out.append(html_table(df, show, {"alpha": ".3f", "alpha_weighted": ".3f", "log_norm": ".3f", metric: ".2f"},
                      heads, sortable=True, table_id="model-table"))
    return out


def _failures_section(con, have, limit: int = 200) -> list[str]:
    """Models that failed, were skipped or are incomplete, with reasons; layer skip / fail reasons."""
    out = ["<h2 id='failures'>Failed, skipped and incomplete</h2>"]
    if "models" in have:
        models = _latest(have, "models")
        n = con.execute(f"SELECT count(*) FROM {models} WHERE status <> 'success'").fetchone()[0]
        bad = con.execute(f"""SELECT model_id, source, status, reason FROM {models} WHERE status <> 'success'
                              ORDER BY status, model_id LIMIT ?""", [limit]).df()
        out.append(f"<h3>Models not fully analyzed: {n}" + (f" (first {limit})" if n > limit else "") + "</h3>"
                   + (html_table(bad, sortable=True) if n else "<p class='meta'>None: every model analyzed.</p>"))
    if "layers" in have:
        why = con.execute(f"""SELECT status, reason, count(*) AS layers, count(DISTINCT model_key) AS models
                              FROM {_latest(have, "layers")} WHERE status <> 'success' GROUP BY 1, 2
                              ORDER BY 3 DESC, 1, 2 LIMIT 30""").df()
        out.append("<h3>Why layers were skipped or failed (30 most common reasons)</h3>"
                   + (html_table(why) if len(why) else "<p class='meta'>None: every layer analyzed.</p>"))
    return out


def _phases_section(con, have) -> list[str]:
    """Distribution of the layers' phases (:mod:`hubscan.esd.phases`) over the survey."""
    out = ["<h2 id='phases'>Phases</h2>"]
    if "layers" not in have or "phase" not in _columns(con, "layers"):
        return out + [note_html("No phase column in the layers table.")]
    ph = con.execute(f"""SELECT coalesce(nullif(phase, ''), '(none)') AS phase, count(*) AS layers,
                                count(DISTINCT model_key) AS models, avg(alpha) AS mean_alpha
                         FROM {_latest(have, "layers")} WHERE status = 'success' GROUP BY 1 ORDER BY 2 DESC, 1""").df()
    if not len(ph):
        return out + [note_html("No successfully analyzed layer.")]
    total = float(ph["layers"].sum())
    rows = ["<div class='wrap'><table><thead><tr><th>phase</th><th>layers</th><th>share</th><th></th>"
            "<th>models</th><th>mean α</th></tr></thead><tbody>"]
    for r in ph.itertuples(index=False):
        share = r.layers / total
        rows.append(f"<tr><td>{escape_html(r.phase)}</td><td class='num'>{int(r.layers)}</td>"
                    f"<td class='num'>{share:.1%}</td><td><span class='bar' style='width:{share * 300:.0f}px'>"
                    f"</span></td><td class='num'>{int(r.models)}</td>"
                    f"<td class='num'>{escape_html(_fmt(r.mean_alpha, '.3f')[0])}</td></tr>")
    rows.append("</tbody></table></div>")
    out.append(f"<p>Phase of each successfully analyzed layer ({int(total)} layers; Martin &amp; Mahoney's "
               "5+1 phases of training, as hubscan.esd.phases assigns them).</p>" + "".join(rows))
    return out


def _accuracy_section(joined, corr, note, held, metric, benchmark, group_by) -> list[str]:
    bench = f" on {benchmark}" if benchmark else ""
    out = [f"<h2 id='accuracy'>Accuracy ({escape_html(metric)}{escape_html(bench)}) vs HTSR metrics</h2>"]
    if joined is None:
        first = "" if held else " Ingest reported accuracy first;"  # some is held: the note names it
        out.append(note_html(f"No accuracy data for metric {metric!r}{bench}: the accuracy-vs-HTSR sections are "
                         f"omitted ({note}).{first} The survey-only parts follow."))
        return out
    families = joined[group_by].nunique(dropna=False) if group_by in joined.columns else 1
    out.append(f"<p>{len(joined)} models with a reported {escape_html(metric)}, {families} "
               f"{escape_html(group_by) if group_by in joined.columns else 'group'}(s).</p>")
    if "benchmark" in joined.columns and joined["benchmark"].notna().any():
        counts = joined["benchmark"].value_counts()
        out.append("<p>Benchmarks: " + ", ".join(f"{escape_html(b)} ({n} models)" for b, n in counts.items()) + ".</p>")
    if note:
        out.append(note_html(note))
    if corr is not None:
        corr = plots.corr_columns(corr)
    if corr is not None and len(corr) and {"group", "metric_name", "kendall_tau"} <= set(corr.columns):
        fig = plots.tau_heatmap(corr)
        out.append("<h3 id='tau'>Kendall τ heat map</h3>" + embed_figure(fig, "Kendall tau per group and HTSR metric"))
    figs = []
    labels = metric_labels()
    for m in correlate_metrics():
        if m not in joined.columns:
            continue
        import pandas as pd
        x = pd.to_numeric(joined[m], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(x).any():
            continue
        fig = plots.accuracy_vs_metric(joined, m, accuracy=metric, group=group_by)
        figs.append(embed_figure(fig, f"{metric} vs {m}", labels.get(m, m)))
    if figs:
        out.append("<h3 id='scatters'>Accuracy vs each HTSR metric (dashed: fit over all models)</h3><div class='grid'>" + "".join(figs) + "</div>")
    if corr is not None and len(corr):
        cols = ["group", "metric_name", "n", "spearman", "spearman_p", "kendall_tau", "kendall_p", "kendall_tau_lo",
                "kendall_tau_hi", "pearson", "pearson_p", "slope", "intercept", "rmse", "r2"]
        fmts = {"spearman_p": ".2g", "kendall_p": ".2g", "pearson_p": ".2g", "spearman": ".3f",
                "kendall_tau": ".3f", "kendall_tau_lo": ".3f", "kendall_tau_hi": ".3f", "pearson": ".3f", "r2": ".3f"}
        heads = {"metric_name": "HTSR metric", "spearman": "spearman ρ", "kendall_tau": "kendall τ",
                 "pearson": "pearson r", "kendall_tau_lo": "τ low", "kendall_tau_hi": "τ high"}
        out.append("<h3 id='correlations'>Correlations per group</h3>"
                   + html_table(corr, cols, fmts, heads, sortable=True))
    elif corr is not None:
        out.append(note_html("The correlation table is empty (too few models per group)."))
    return out


def _layers_section(con, have, models_for_depth, esd_layers, worst_layers) -> list[str]:
    out = ["<h2 id='layers'>Layer spectra</h2>"]
    if "layers" not in have:
        out.append(note_html("The dataset holds no layers table."))
        return out
    layers = _latest(have, "layers")  # each model once (its latest analysis)
    alphas = con.execute(f"""SELECT model_key, alpha FROM {layers}
                             WHERE status = 'success' AND alpha IS NOT NULL AND isfinite(alpha)""").df()
    out.append("<h3 id='alpha-hist'>Layer α over the survey</h3>"
               + embed_figure(plots.alpha_histogram(alphas), "histogram of layer alpha"))

    keys: list[str] = []
    if "models" in have:
        order = con.execute(f"""SELECT model_key, model_id, downloads FROM {_latest(have, "models")}
                                WHERE status IN ('success', 'incomplete') AND coalesce(num_success, 0) > 0
                                ORDER BY downloads DESC NULLS LAST, model_id, model_key""").df()
        order = order.drop_duplicates("model_id").head(max(0, models_for_depth))
        keys = order["model_key"].tolist()
        by_downloads = bool(len(order)) and order["downloads"].notna().all()
    if keys:
        marks = ", ".join("?" * len(keys))
        depth = con.execute(f"""SELECT model_key, model_id, layer_id, name, part, status, alpha FROM layers
                                WHERE model_key IN ({marks})""", keys).df()
        ids = [depth.loc[depth["model_key"] == k, "model_id"].iloc[0] for k in keys
               if (depth["model_key"] == k).any()]
        which = "most downloaded" if by_downloads else "first by model id (no download counts)"
        out.append(f"<h3 id='depth'>α vs depth ({len(ids)} models: {which})</h3>"
                   + embed_figure(plots.alpha_vs_depth(depth, ids), "alpha per layer vs depth"))

    if "esd" in have and esd_layers > 0:
        out += _esd_plots(con, keys, esd_layers)

    for order, what, anchor in (("ASC", "lowest α (heaviest tails)", "lowest"), ("DESC", "highest α", "highest")):
        ext = con.execute(f"""SELECT model_id, layer_id, name, part, layer_type, alpha, D, num_pl_spikes, num_evals,
                                     xmin, xmax, phase, warning FROM {layers}
                              WHERE status = 'success' AND alpha IS NOT NULL AND isfinite(alpha)
                              ORDER BY alpha {order}, model_id, layer_id LIMIT ?""", [worst_layers]).df()
        beyond, guide = ("alpha < ?", f"below {plots.OVER_TRAINED:g} (over-trained)") if order == "ASC" else \
            ("alpha > ?", f"above {plots.UNDER_TRAINED:g} (under-trained)")
        n = con.execute(f"SELECT count(*) FROM {layers} WHERE status = 'success' AND {beyond}",
                        [plots.OVER_TRAINED if order == "ASC" else plots.UNDER_TRAINED]).fetchone()[0]
        out.append(f"<h3 id='{anchor}'>Layers with the {what}: first {worst_layers}</h3>"
                   + f"<p class='meta'>{n} layer(s) of the dataset have α {guide}.</p>"
                   + html_table(ext, formats={"alpha": ".3f", "D": ".3f", "xmin": ".4g", "xmax": ".4g"}, sortable=True))
    return out


def _training_section(con, have, runs: int) -> list[str]:
    """With a ``training`` table (:mod:`hubscan.monitor`): its runs, and α per layer over training of the
    latest ``runs`` of them."""
    if "training" not in have:
        return []
    table = con.execute("""
        SELECT run_id, any_value(model_class) AS model, count(DISTINCT step) AS analyses, min(step) AS first_step,
               max(step) AS last_step, max(epoch) AS last_epoch, min(analyzed_at) AS started,
               max(analyzed_at) AS last_analysis
        FROM training GROUP BY run_id ORDER BY last_analysis DESC""").df()
    out = ["<h2 id='training'>Alpha during training</h2>",
           f"<p>{len(table)} training run(s) monitored (<code>hubscan.monitor</code>): every analysis of the model "
           "in memory, one row per layer.</p>" + html_table(table, formats={"last_epoch": ".2f"})]
    for i, run in enumerate(table["run_id"].head(max(0, runs))):
        df = con.execute("""SELECT step, epoch, layer_id, name, part, status, alpha FROM training
                            WHERE run_id = ?""", [run]).df()
        out.append(f"<h3 id='training-{i + 1}'>α per layer over training: {escape_html(run)}</h3>"
                   + embed_figure(plots.alpha_over_training(df, title=f"α per layer over training ({run})"),
                                  f"alpha per layer over training of run {run}"))
    return out


def _esd_plots(con, keys: list[str], count: int) -> list[str]:
    fallback = con.execute("SELECT DISTINCT model_key FROM esd ORDER BY 1 LIMIT 1").fetchall()
    candidates = list(dict.fromkeys(keys + [r[0] for r in fallback]))
    for key in candidates:
        layers = con.execute("""
            SELECT l.model_id, l.layer_id, l.name, l.part, l.alpha, l.xmin, l.xmax, l.D, l.lambda_plus
            FROM layers l
            WHERE l.model_key = ? AND l.status = 'success' AND l.alpha IS NOT NULL
              AND EXISTS (SELECT 1 FROM esd e WHERE e.model_key = l.model_key AND e.layer_id = l.layer_id
                          AND e.name = l.name AND coalesce(e.part, '') = coalesce(l.part, ''))
            ORDER BY l.alpha, l.layer_id""", [key]).df()
        if not len(layers):
            continue
        pick = sorted(set(np.linspace(0, len(layers) - 1, min(count, len(layers))).round().astype(int).tolist()))
        chosen = layers.iloc[pick]
        figs = []
        for _, row in chosen.iterrows():
            ev = con.execute("""SELECT evals FROM esd WHERE model_key = ? AND layer_id = ? AND name = ?
                                AND coalesce(part, '') = ? LIMIT 1""",
                             [key, int(row["layer_id"]), row["name"], row["part"] or ""]).fetchone()[0]
            name = part_key(row["name"], row["part"])
            fig = plots.esd_loglog(np.asarray(ev, dtype=np.float64), row.to_dict(), title=name)
            figs.append(embed_figure(fig, f"ESD of {name}", f"{name} (α = {row['alpha']:.2f})"))
        model_id = layers["model_id"].iloc[0]
        return [f"<h3 id='esds'>ESDs of {len(figs)} layers of {escape_html(model_id)} (lowest to highest α)</h3>"
                "<div class='grid'>" + "".join(figs) + "</div>"]
    return []


def _toc(sections: list[str]) -> str:
    """A table of contents of the ``<h2 id=…>`` / ``<h3 id=…>`` headings among ``sections``."""
    import re
    items: list[list] = []  # [h2 item, [its h3 items]]: sections numbered 1, 2 …, their parts a, b …
    for part in sections:
        for level, anchor, text in re.findall(r"<h([23]) id='([^']+)'>(.*?)</h\1>", part):
            item = f"<a href='#{anchor}'>{re.sub(r'<[^>]+>', '', text)}</a>"
            if level == "3" and items:
                items[-1][1].append(item)
            else:
                items.append([item, []])
    body = "".join(f"<li>{top}" + (f"<ol type='a'>{''.join(f'<li>{s}</li>' for s in subs)}</ol>" if subs else "")
                   + "</li>" for top, subs in items)
    return "<nav class='toc' id='contents'><strong>Contents</strong><ol>" + body + "</ol></nav>"


def build_report(dataset: str, out_path: str | os.PathLike, *, metric: str = "top1", benchmark: str | None = None,
                 group_by: str = "family", models_for_depth: int = 3, corr=None, joined=None, esd_layers: int = 4,
                 worst_layers: int = 20, title: str = "hubscan survey report",
                 storage_options: dict | None = None, progress=None, model_rows: int = 1000,
                 training_runs: int = 3) -> Path:
    """Write a self-contained HTML report of a survey dataset.

    Parameters
    ----------
    dataset : str
        Dataset directory or URL (:class:`hubscan.store.Dataset`).
    out_path : path
        The HTML file to write (parent folders are created).
    metric : str
        Accuracy column to correlate (``top1`` …).
    benchmark : str, optional
        Benchmark the accuracy must come from (passed to :func:`hubscan.correlate.joined`).
    group_by : str
        Column grouping models in the correlations and scatters (``family``).
    models_for_depth : int
        How many models get an α-vs-depth line: the most downloaded, then by model id.
    corr : pandas.DataFrame, optional
        :func:`hubscan.correlate.correlate`'s table (``group``, ``metric`` or ``metric_name``,
        ``n``, ``kendall_tau`` …); computed from ``joined`` (lazy import of
        :mod:`hubscan.correlate`) when not given.
    joined : pandas.DataFrame, optional
        :func:`hubscan.correlate.joined`'s table: one row per model with ``model_id``,
        ``group_by``, the HTSR columns and the accuracy — in column ``metric`` (a hand-made
        table) or ``accuracy`` (``joined``'s own layout). Read from the dataset when not given.
        When neither gives an accuracy value (or hubscan.correlate fails) the page says so and
        keeps its survey-only parts.
    esd_layers : int
        ESD plots drawn (layers of the first depth model with stored eigenvalues, spread from
        the lowest to the highest α).
    worst_layers : int
        Rows of each of the lowest-α and highest-α layers tables.
    model_rows : int
        Rows of the per-model table at most (the lowest mean α first).
    training_runs : int
        With a ``training`` table (:mod:`hubscan.monitor`): the latest runs that get a plot of α per layer
        over training.
    title : str
        Page title.
    storage_options : dict, optional
        Filesystem options of the dataset (:func:`hubscan.store.open_filesystem`).
    progress : callable, optional
        Called with a short description of each step (``progress("plots")``) as it starts.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    hubscan.errors.HubscanError
        The folder of ``out_path`` does not exist (it is not created).
    """
    step = progress or (lambda what: None)
    out = Path(out_path)
    if not out.parent.is_dir():
        from hubscan.errors import HubscanError
        raise HubscanError(str(out), f"folder {out.parent} does not exist")
    from hubscan import __version__
    from hubscan.query import connect

    from hubscan.store import Dataset

    step("reading the dataset")
    con = connect(dataset, require=False, **(storage_options or {}))
    have = _views(con)
    data = Dataset(dataset, **storage_options) if storage_options else dataset
    joined, corr, note, held = _accuracy_frames(data, metric, benchmark, group_by, joined, corr)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{escape_html(title)}</h1>",
            f"<p class='meta'>Dataset {escape_html(dataset)} · generated {escape_html(now)} · "
            f"hubscan {escape_html(__version__)}</p>",
            "<p class='meta'>α: exponent of the power-law fit p(λ) ∝ λ^−α of each layer's ESD tail "
            "(eigenvalues of WᵀW); α &lt; 2 over-trained, α &gt; 6 under-trained (Martin &amp; Mahoney).</p>"]
    sections = _survey_section(con, have)
    sections += _models_section(con, have, joined, metric, model_rows)
    sections += _failures_section(con, have)
    sections += _phases_section(con, have)
    step("accuracy correlations and scatter plots")
    sections += _accuracy_section(joined, corr, note, held, metric, benchmark, group_by)
    step("layer plots")
    sections += _layers_section(con, have, models_for_depth, esd_layers, worst_layers)
    sections += _training_section(con, have, training_runs)
    from hubscan.report.tree import tree_section
    sections += tree_section(con, have)
    con.close()
    body += [_toc(sections)] + sections
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape_html(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{_SORT_JS}</script>\n</body></html>\n")
    out.write_text(page, encoding="utf-8")
    return out
