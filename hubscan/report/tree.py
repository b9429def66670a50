"""The report's model-tree section: lineage (``lineage`` table) with the spectra of parent and child.

What it shows, per root of the dataset's ``lineage`` table (:mod:`hubscan.census`):

* **the tree** — nodes placed by generation (x) and coloured by the model's mean α (``models.alpha``),
  edges coloured by relation (finetune, adapter, quantized, merge);
* **Δα vs depth** — per layer (x = the layer's position in the parent, ``layer_id``), Δα = α(child) − α(parent) of the
  same layer (``layers`` rows of both, matched by name and part), median over the children and the
  10–90 % band, one line per relation;
* **layers most changed by fine-tuning** — over ``finetune`` edges, per layer name: the median relative
  change ‖ΔW‖_F / ‖W_parent‖_F (``deltas.delta_W_rel``), median Δα and median α of ΔW;
* **over-trained descendants** — children with more layers at α < 2 than their parent (Martin &
  Mahoney's over-trained threshold);
* **Δaccuracy vs Δα** — where the ``accuracy`` table holds the same metric for child and parent.

The queries are plain DuckDB SQL on the views of :func:`hubscan.query.connect` (README's "model tree"
walkthrough shows them).
"""

from __future__ import annotations

from hubscan.report import plots

RELATION_COLORS = {"finetune": "#4c78a8", "adapter": "#f58518", "quantized": "#54a24b", "merge": "#e45756"}

#: Δα per layer of every edge: child layer α minus the parent's same layer α (plain analyses).
LAYER_DELTA_SQL = """
SELECT g.root, g.child, g.parent, g.relation, g.depth, p.layer_id, c.name, c.part,
       c.alpha - p.alpha AS d_alpha, c.alpha AS alpha_child, p.alpha AS alpha_parent
FROM lineage g
JOIN layers c ON c.model_id = g.child AND c.revision = g.child_revision AND c.status = 'success'
JOIN layers p ON p.model_id = g.parent AND p.revision = g.parent_revision AND p.status = 'success'
             AND p.name = c.name AND p.part = c.part AND p.model_key <> c.model_key
"""

#: Layers most changed by fine-tuning (README's walkthrough query).
MOST_CHANGED_SQL = """
SELECT d.name, count(DISTINCT d.model_id) AS children, median(d.delta_W_rel) AS median_delta_W_rel,
       median(x.d_alpha) AS median_d_alpha, median(d.alpha) AS median_alpha_of_dW
FROM deltas d JOIN lineage g ON g.child = d.model_id AND g.parent = d.parent_id
LEFT JOIN ({layer_delta}) x ON x.child = d.model_id AND x.parent = d.parent_id AND x.name = d.name AND x.part = d.part
WHERE d.relation = 'finetune' AND d.status = 'success'
GROUP BY d.name ORDER BY median_delta_W_rel DESC NULLS LAST
"""

#: Children with more over-trained layers (α < 2) than their parent.
OVER_TRAINED_SQL = """
WITH n AS (SELECT model_id, revision, count(*) FILTER (WHERE alpha < 2) AS over, count(*) AS layers
           FROM layers WHERE status = 'success' GROUP BY ALL)
SELECT g.child, g.parent, g.relation, c.over AS over_trained_child, p.over AS over_trained_parent, c.layers
FROM lineage g JOIN n c ON c.model_id = g.child AND c.revision = g.child_revision
JOIN n p ON p.model_id = g.parent AND p.revision = g.parent_revision
WHERE c.over > p.over ORDER BY c.over - p.over DESC, g.child
"""


def _frames(con, have: set):
    nodes = con.execute("""
        WITH e AS (SELECT root, child AS model_id, child_revision AS revision, min(depth) AS depth FROM lineage GROUP BY ALL
                   UNION SELECT DISTINCT root, root, NULL, 0 FROM lineage)
        SELECT e.root, e.model_id, e.depth, any_value(m.alpha) AS alpha, any_value(m.status) AS status
        FROM e LEFT JOIN models m ON m.model_id = e.model_id AND (e.revision IS NULL OR m.revision = e.revision)
        GROUP BY ALL ORDER BY e.root, e.depth, e.model_id""").df()
    edges = con.execute("SELECT root, child, parent, relation, depth, found_by FROM lineage ORDER BY depth, child").df()
    deltas = con.execute(LAYER_DELTA_SQL).df() if "layers" in have else None
    return nodes, edges, deltas


def tree_figure(nodes, edges, *, title: str | None = None):
    """The tree: generation on x, nodes coloured by mean α, edges by relation.

    Parameters
    ----------
    nodes : pandas.DataFrame
        ``model_id``, ``depth`` (0 = root), ``alpha`` (mean layer α; NaN when not analyzed).
    edges : pandas.DataFrame
        ``child``, ``parent``, ``relation``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    import numpy as np

    fig = plots.new_figure(figsize=(11.0, max(3.2, 0.55 * nodes.groupby("depth").size().max() + 1.5)))
    ax = fig.add_subplot(1, 1, 1)
    pos = {}
    for d, grp in nodes.groupby("depth"):
        ids = list(grp["model_id"])
        for i, mid in enumerate(ids):
            pos[mid] = (float(d), (len(ids) - 1) / 2.0 - i)
    for rel in RELATION_COLORS:
        ax.plot([], [], color=RELATION_COLORS[rel], linewidth=2, label=rel)
    for e in edges.itertuples(index=False):
        if e.child in pos and e.parent in pos:
            (x0, y0), (x1, y1) = pos[e.parent], pos[e.child]
            ax.annotate("", xy=(x1 - 0.04, y1), xytext=(x0 + 0.04, y0),
                        arrowprops=dict(arrowstyle="-|>", color=RELATION_COLORS.get(e.relation, "0.5"), lw=1.8))
    alpha = nodes["alpha"].astype(float).to_numpy()
    finite = alpha[np.isfinite(alpha)]
    norm = matplotlib.colors.Normalize(vmin=float(finite.min()) if len(finite) else 2.0,
                                       vmax=float(finite.max()) if len(finite) else 6.0)
    cmap = matplotlib.colormaps["viridis"]
    xs = [pos[m][0] for m in nodes["model_id"]]
    ys = [pos[m][1] for m in nodes["model_id"]]
    colors = [cmap(norm(a)) if np.isfinite(a) else (0.8, 0.8, 0.8, 1.0) for a in alpha]
    ax.scatter(xs, ys, s=260, c=colors, edgecolors="0.2", zorder=3)
    for m, x, y, a in zip(nodes["model_id"], xs, ys, alpha):
        ax.text(x, y - 0.32, plots.short_label(m, 28) + (f"\nα {a:.2f}" if np.isfinite(a) else ""), ha="center",
                va="top", fontsize=7.5)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="mean layer α of the model", shrink=0.8)
    ax.set_xticks(sorted({int(x) for x in xs}))
    ax.set_xlabel("generation (0 = base model)")
    ax.set_yticks([])
    ax.set_xlim(-0.5, max(xs) + 0.5)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.6)
    ax.set_title(title or "model tree")
    plots.legend_outside(ax, small=True)
    return fig


def delta_alpha_vs_depth(deltas, *, title: str | None = None):
    """Δα per layer position: median over the children (line) and the 10–90 % band, per relation.

    Parameters
    ----------
    deltas : pandas.DataFrame
        :data:`LAYER_DELTA_SQL` rows (``relation``, ``layer_id``, ``name``, ``d_alpha``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = plots.new_figure(figsize=(9.0, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    names = deltas.groupby("layer_id")["name"].first()
    for rel, grp in deltas.groupby("relation"):
        q = grp.groupby("layer_id")["d_alpha"].quantile([0.1, 0.5, 0.9]).unstack()
        n = len(grp[["child", "parent"]].drop_duplicates())
        color = RELATION_COLORS.get(rel, "0.4")
        ax.plot(q.index, q[0.5], marker="o", color=color, label=f"{rel} ({n} edge{'s' if n > 1 else ''})")
        ax.fill_between(q.index, q[0.1], q[0.9], color=color, alpha=0.18, linewidth=0)
    ax.axhline(0.0, **plots.GUIDE_STYLE)
    ax.set_xticks(list(names.index))
    ax.set_xticklabels([plots.short_label(n, 24) for n in names], rotation=30, ha="right", fontsize=7.5)
    ax.set_ylabel("Δα = α(child) − α(parent)")
    ax.set_title(title or "per-layer Δα vs depth (median, 10–90 % band)")
    plots.legend_outside(ax, small=True, below=True)  # under the plot: the layers keep the full width
    return fig


def _accuracy_pairs(con, have: set):
    if "accuracy" not in have:
        return None
    return con.execute("""
        WITH a AS (SELECT model_id, benchmark, metric, avg(value) AS value FROM accuracy GROUP BY ALL),
             m AS (SELECT model_id, revision, avg(alpha) AS alpha FROM models GROUP BY ALL)
        SELECT g.child, g.parent, g.relation, ca.benchmark, ca.metric, ca.value - pa.value AS d_accuracy,
               cm.alpha - pm.alpha AS d_alpha
        FROM lineage g
        JOIN a ca ON ca.model_id = g.child JOIN a pa ON pa.model_id = g.parent
             AND pa.benchmark = ca.benchmark AND pa.metric = ca.metric
        JOIN m cm ON cm.model_id = g.child AND cm.revision = g.child_revision
        JOIN m pm ON pm.model_id = g.parent AND pm.revision = g.parent_revision
        ORDER BY g.child""").df()


def accuracy_vs_delta_alpha(pairs, *, title: str | None = None):
    """Δaccuracy against Δ(mean α) per edge, coloured by relation.

    Parameters
    ----------
    pairs : pandas.DataFrame
        ``child``, ``relation``, ``d_accuracy``, ``d_alpha``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = plots.new_figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    for rel, grp in pairs.groupby("relation"):
        ax.scatter(grp["d_alpha"], grp["d_accuracy"], color=RELATION_COLORS.get(rel, "0.4"), label=rel, s=40)
        for r in grp.itertuples(index=False):
            ax.annotate(plots.short_label(r.child, 22), (r.d_alpha, r.d_accuracy), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    ax.axhline(0.0, **plots.GUIDE_STYLE)
    ax.axvline(0.0, **plots.GUIDE_STYLE)
    ax.set_xlabel("Δ mean α (child − parent)")
    ax.set_ylabel("Δ accuracy (child − parent)")
    ax.set_title(title or "accuracy change vs α change per edge")
    plots.legend_outside(ax, small=True)
    return fig


def tree_section(con, have: set) -> list[str]:
    """The model-tree section of the HTML report (module docstring); ``[]`` when the dataset has no
    ``lineage`` table.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        :func:`hubscan.query.connect`'s views.
    have : set of str
        The views present.

    Returns
    -------
    list of str
        HTML fragments (escaped).
    """
    from hubscan.report.html import escape_html, embed_figure, note_html, html_table

    if "lineage" not in have:
        return []
    out = ["<h2 id='tree'>Model tree</h2>"]
    nodes, edges, deltas = _frames(con, have)
    if not len(edges):
        return out + [note_html("The lineage table is empty.")]
    for root, grp in nodes.groupby("root"):
        e = edges[edges["root"] == root]
        out.append(f"<p>{len(grp)} models below and including <b>{escape_html(root)}</b>, {len(e)} edges "
                   f"({escape_html(', '.join(f'{k}: {v}' for k, v in e['relation'].value_counts().items()))}).</p>")
        out.append(embed_figure(tree_figure(grp, e, title=f"model tree of {root}"), f"model tree of {root}",
                        "Nodes: the model's mean layer α (grey: not analyzed; an adapter: α of its ΔW = s·B·A); "
                        "edges: relation to the parent."))
    out.append(html_table(edges, ["child", "parent", "relation", "depth", "found_by"], sortable=True))
    out.append("<h3 id='tree-depth'>Δα per layer, parent → child</h3>")
    if deltas is None or not len(deltas):
        out.append(note_html("No layer is analyzed in both a child and its parent."))
    else:
        out.append(embed_figure(delta_alpha_vs_depth(deltas), "delta alpha vs depth",
                        "Δα of each layer (same name in child and parent), median over the edges of each relation "
                        "and its 10–90 % band; below 0: heavier-tailed after the change. Adapters have no "
                        "layer of their parent's names (their rows are ΔW: see the deltas table)."))
    out.append("<h3 id='tree-changed'>Layers most changed by fine-tuning</h3>")
    if "deltas" in have:
        changed = con.execute(MOST_CHANGED_SQL.format(layer_delta=LAYER_DELTA_SQL)).df()
        out.append("<p>Over the fine-tune edges: median ‖ΔW‖<sub>F</sub>/‖W<sub>parent</sub>‖<sub>F</sub> "
                   "per layer, the median Δα and the median α of ΔW itself (deltas table).</p>")
        out.append(html_table(changed, formats={"median_delta_W_rel": ".4f", "median_d_alpha": "+.3f",
                                            "median_alpha_of_dW": ".3f"}, sortable=True))
    else:
        out.append(note_html("No deltas table (the census writes it)."))
    out.append("<h3 id='tree-over'>Over-trained descendants</h3>")
    over = con.execute(OVER_TRAINED_SQL).df() if "layers" in have else None
    if over is None or not len(over):
        out.append("<p>No child has more layers with α &lt; 2 than its parent.</p>")
    else:
        out.append("<p>Children with more layers at α &lt; 2 (over-trained) than their parent:</p>")
        out.append(html_table(over, sortable=True))
    out.append("<h3 id='tree-accuracy'>Δaccuracy vs Δα</h3>")
    pairs = _accuracy_pairs(con, have)
    if pairs is None or not len(pairs):
        out.append(note_html("No accuracy ingested for both a child and its parent (hubscan accuracy --cards / "
                         "--leaderboard / --csv)."))
    else:
        for (bench, metric), grp in pairs.groupby(["benchmark", "metric"]):
            out.append(embed_figure(accuracy_vs_delta_alpha(grp, title=f"{metric} ({bench}): Δaccuracy vs Δα"),
                            f"delta accuracy vs delta alpha, {metric}"))
    return out
