"""Model-tree census on a real trained tree (hubscan.demo.tree) served by the loopback fake Hub: lineage
edges and relations, deltas equal to ``analyze(CHILD, base=PARENT)``, the parent read once per batch."""

from __future__ import annotations

import json
import math
import re
import struct

import numpy as np
import pytest

from hub_server import FakeHub, isolated_hf_client

import hubscan
from hubscan.census import analyze_edges, census
from hubscan.demo.tree import build_tree
from hubscan.hub import HubClient
from hubscan.sources.lineage import enumerate_lineage
from hubscan.store import Dataset

EXPECTED = {  # (child, parent) -> relation, depth, found_by
    ("tree/ft-lr0.01", "tree/base"): ("finetune", 1, "tag"),
    ("tree/ft-lr0.1", "tree/base"): ("finetune", 1, "tag"),
    ("tree/ft-shift", "tree/base"): ("finetune", 1, "tag"),
    ("tree/lora", "tree/base"): ("adapter", 1, "tag"),
    ("tree/int8", "tree/base"): ("quantized", 1, "config"),  # card names the base, no relation
    ("tree/merge", "tree/ft-lr0.01"): ("merge", 2, "tag"),
    ("tree/merge", "tree/ft-shift"): ("merge", 2, "tag"),
    ("tree/ft-lr0.01-ft", "tree/ft-lr0.01"): ("finetune", 2, "tag"),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def hub(tree, tmp_path_factory):
    with isolated_hf_client(tmp_path_factory.mktemp("hfcache")), FakeHub() as h:
        for node in tree:
            h.add_model_from_dir(node.repo_id, node.folder, info={"downloads": 10})
        # an unrelated model that names a tree model in its card text only: never a child
        h.add_model("other/unrelated", {"README.md": b"---\nlicense: mit\n---\nbased on tree/base\n"})
        yield h


@pytest.fixture
def client(hub):
    return HubClient(endpoint=hub.endpoint, max_retries=2, backoff=0.1, cache_dir=None)


def needed_bytes(blob: bytes) -> int:
    """Header + the tensors of rank >= 2 of a safetensors file (what an analysis must read)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    return 8 + n + sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
                       if k != "__metadata__" and len(v["shape"]) >= 2)


def test_lineage_every_edge_once_with_its_relation(hub, client):
    t = enumerate_lineage("tree/base", client)
    got = {(e.child, e.parent): (e.relation, e.depth, e.found_by) for e in t.edges}
    assert len(t.edges) == len(got) == len(EXPECTED)
    assert got == EXPECTED
    assert list(t.nodes)[0] == "tree/base" and len(t.nodes) == 8
    for mid, (ref, _) in t.nodes.items():  # every node pinned to its commit and files
        assert ref.revision == hub.sha(mid) and ref.files
    # bounds: depth 1 keeps the root's children; relations filter; limit caps descendants
    d1 = enumerate_lineage("tree/base", client, depth=1)
    assert {e.child for e in d1.edges} == {c for (c, p), v in EXPECTED.items() if v[1] == 1}
    ad = enumerate_lineage("tree/base", client, relations=["adapter", "quantized"])
    assert {(e.child, e.relation) for e in ad.edges} == {("tree/lora", "adapter"), ("tree/int8", "quantized")}
    assert len(enumerate_lineage("tree/base", client, limit=3).nodes) == 4


def test_lineage_ignores_cycles_and_card_relation(hub, client, tree):
    base = next(n for n in tree if n.repo_id == "tree/base")
    # a cycle: the root declares its own grandchild as base model; a child found by the generic tag only,
    # whose card states the relation (legacy tags)
    hub.add_model("cyc/a", {"model.safetensors": (base.folder / "model.safetensors"),
                            "README.md": b"---\nbase_model: cyc/b\nbase_model_relation: finetune\n---\n"})
    hub.add_model("cyc/b", {"model.safetensors": (base.folder / "model.safetensors"),
                            "README.md": b"---\nbase_model: cyc/a\nbase_model_relation: finetune\n---\n"},
                  info={"tags": ["base_model:cyc/a"], "cardData": {"base_model": "cyc/a",
                                                                   "base_model_relation": "finetune"}})
    try:
        t = enumerate_lineage("cyc/a", client)
        assert [(e.child, e.parent, e.relation, e.depth, e.found_by) for e in t.edges] == [
            ("cyc/b", "cyc/a", "finetune", 1, "card")]
    finally:
        hub.remove_model("cyc/a")
        hub.remove_model("cyc/b")


@pytest.fixture(scope="module")
def census_ds(hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("census") / "ds"
    client = HubClient(endpoint=hub.endpoint, max_retries=2, backoff=0.1, cache_dir=None)
    summary = census("tree/base", str(out), client=client)
    return out, summary


def test_deltas_equal_analyze_with_base(census_ds, client):
    out, summary = census_ds
    assert summary["failed_edges"] == [] and summary["edges"] == len(EXPECTED) and summary["analyzed"] == 8
    ds = Dataset(str(out), create=False)
    lineage = ds.read("lineage").to_pylist()
    assert {(r["child"], r["parent"]): (r["relation"], r["depth"], r["found_by"]) for r in lineage} == EXPECTED
    deltas = ds.read("deltas").to_pylist()
    assert {(r["model_id"], r["parent_id"]) for r in deltas} == set(EXPECTED)
    for (child, parent), (relation, _, _) in EXPECTED.items():
        ref = hubscan.analyze(f"hf:{child}", base=f"hf:{parent}", client=client)
        got = {(r["name"], r["part"]): r for r in deltas if r["model_id"] == child and r["parent_id"] == parent}
        assert set(got) == {(r["name"], r["part"]) for r in ref.rows}
        for r in ref.rows:
            g = got[(r["name"], r["part"])]
            assert g["relation"] == relation
            for col in ("status", "alpha", "D", "xmin", "lambda_max", "num_evals", "delta_W", "delta_W_rel",
                        "delta_spectral_rel", "N", "M"):
                a, b = g[col], r.get(col)
                assert a == b or (isinstance(a, float) and math.isclose(a, b, rel_tol=1e-12)) \
                    or (a is None and (b is None or (isinstance(b, float) and math.isnan(b)))), (child, r["name"], col, a, b)
    # what the rows are: the adapter's ΔW = s·B·A (rank 4) and W + ΔW; the int8 child dequantized
    lora = {r["name"]: r for r in deltas if r["model_id"] == "tree/lora"}
    assert lora["fc1.lora_BA"]["num_evals"] == 4 and lora["fc1.weight"]["num_evals"] == 64
    q = {r["name"]: r for r in deltas if r["model_id"] == "tree/int8"}
    assert "dequantized" in q["fc2.weight"]["reason"] and q["fc2.weight"]["delta_W_rel"] < 0.02
    assert "fc2.weight_scale" not in q
    models = {m["model_id"]: m for m in ds.read("models", ["model_id", "status", "alpha"]).to_pylist()}
    assert sorted(models) == sorted({c for c, _ in EXPECTED} | {"tree/base"})
    assert all(m["status"] == "success" for m in models.values())  # the adapter too: as ΔW = s·B·A
    lora_alone = hubscan.analyze("hf:tree/lora", client=client)
    # rank 4 < min_evals (8): each ΔW is measured and fitted on 4 eigenvalues, its alpha kept in the row
    # but out of the model's means, so the model has no mean alpha — in the dataset as alone
    assert all("not in the model's means" in r["reason"] for r in lora_alone.rows)
    assert math.isnan(lora_alone.summary["alpha"])
    assert models["tree/lora"]["alpha"] is None or math.isnan(models["tree/lora"]["alpha"])
    assert [r["name"] for r in lora_alone.rows] == ["fc1.lora_BA", "fc2.lora_BA"]


def test_report_model_tree_section(census_ds, tmp_path):
    from hubscan.accuracy import ingest_card_results
    from hubscan.report import build_report

    out, _ = census_ds
    assert ingest_card_results(str(out)).num_rows == 8  # the cards' test accuracy
    page = build_report(str(out), tmp_path / "report.html", metric="accuracy")
    text = page.read_text()
    for anchor in ("tree", "tree-depth", "tree-changed", "tree-over", "tree-accuracy"):
        assert f"id='{anchor}'" in text
    sec = text[text.index("<h2 id='tree'>"):]
    assert sec.count("data:image/png;base64,") == 3  # tree, Δα vs depth, Δaccuracy vs Δα
    assert "8 models below and including <b>tree/base</b>, 8 edges" in sec
    # most changed by fine-tuning: one row per layer of the 4 fine-tune edges, sorted by median ΔW_rel
    rows = re.findall(r"<tr><td>(fc\d\.weight)</td><td class='num' data-v='4.0'>", sec)
    assert sorted(rows) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    try:
        from test_report import CHROMIUM_FLAGS, _check_screenshot, _console_problems, _screenshot  # noqa: F401
    except ImportError:
        return
    import shutil
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed")
    shot, log = _screenshot(exe, page, tmp_path)
    assert not _console_problems(log, page), _console_problems(log, page)
    _check_screenshot(shot)


def test_parent_read_once_per_batch(hub, client, tree):
    t = enumerate_lineage("tree/base", client, depth=1)
    blobs = {n.repo_id: (n.folder / ("adapter_model.safetensors" if n.relation == "adapter" else "model.safetensors"))
             .read_bytes() for n in tree}
    hub.reset_stats()
    out = list(analyze_edges(t, client=client, batch_size=8))
    assert len(out) == 5 and all(r is not None for _, r, _ in out)
    # the base: read once for its 5 children (≤ 1.05 × its header + matrices), not 5 times
    base_needed = needed_bytes(blobs["tree/base"])
    assert hub.bytes_sent(repo_id="tree/base", path="model.safetensors") <= 1.05 * base_needed
    assert sum(i["parent_bytes_read"] for _, _, i in out) <= 1.05 * base_needed
    for e, _, info in out:  # each child: its own tensors once
        sent = hub.bytes_sent(repo_id=e.child, path="adapter_model.safetensors" if e.relation == "adapter"
                              else "model.safetensors")
        assert info["bytes_read"] == sent and sent <= 1.05 * needed_bytes(blobs[e.child]), (e.child, sent)
    # batch_size=1: one parent read per child
    hub.reset_stats()
    list(analyze_edges(t, client=client, batch_size=1))
    assert hub.bytes_sent(repo_id="tree/base", path="model.safetensors") >= 4.5 * base_needed


def _files(tree):
    return {n.repo_id: "adapter_model.safetensors" if n.relation == "adapter" else "model.safetensors" for n in tree}


def test_census_reads_each_child_once(hub, client, tree, tmp_path):
    """A child's own analysis and its delta share one read of its files; the parent is read once as a node
    and once for its batch of children. The merge (two parents) is read once more for its second edge."""
    files = _files(tree)
    needed = {n.repo_id: needed_bytes((n.folder / files[n.repo_id]).read_bytes()) for n in tree}
    hub.reset_stats()
    s = census("tree/base", str(tmp_path / "ds"), client=client)
    assert s["failed_edges"] == [] and s["analyzed"] == 8
    sent = {m: hub.bytes_sent(repo_id=m, path=files[m]) for m in needed}
    parents = {"tree/base": 1, "tree/ft-lr0.01": 1, "tree/ft-shift": 1}  # batches read as a parent
    for m, n in needed.items():
        reads = 1 + parents.get(m, 0) + (m == "tree/merge")
        assert 0.99 * reads * n <= sent[m] <= 1.05 * reads * n, (m, sent[m] / n)
        if m not in parents:  # what the census reports as read for a child is what the Hub sent
            assert s["bytes_per_child"][m] == sent[m], m
    # read once, yet each child's own rows equal its analysis alone, and its deltas the pair analyzed alone
    layers = Dataset(str(tmp_path / "ds"), create=False).read("layers").to_pylist()
    for m in needed:
        alone = {(r["name"], r["part"]): r for r in hubscan.analyze(f"hf:{m}", client=client).rows}
        mine = {(r["name"], r["part"]): r for r in layers if r["model_id"] == m}
        assert set(mine) == set(alone), m
        for k, r in alone.items():
            assert mine[k]["status"] == r["status"], (m, k)
            for col in ("alpha", "D", "lambda_max", "stable_rank"):
                assert mine[k][col] == pytest.approx(r[col], rel=1e-12, nan_ok=True), (m, k, col)
    deltas = Dataset(str(tmp_path / "ds"), create=False).read("deltas").to_pylist()
    # the small-fit caution counts the eigenvalues the fit used (ΔW: most are under the 1e-5 threshold)
    fits = [r for r in deltas if r["status"] == "success"]
    assert any(r["num_fit_evals"] < 20 <= r["num_evals"] for r in fits)
    for r in fits:
        assert (f"few eigenvalues: fit on {r['num_fit_evals']} (< 20)" in (r["reason"] or "")) == (r["num_fit_evals"] < 20)
    ref = hubscan.analyze("hf:tree/int8", base="hf:tree/base", client=client)
    got = {r["name"]: r for r in deltas if r["model_id"] == "tree/int8"}
    assert {r["name"] for r in ref.rows} == set(got)
    for r in ref.rows:
        assert got[r["name"]]["alpha"] == pytest.approx(r["alpha"], rel=1e-12, nan_ok=True)


def test_cli_survey_lineage_and_analyze_base_agree(hub, tree, tmp_path, capsys):
    import pyarrow.parquet as pq

    from hubscan.cli import main

    out = str(tmp_path / "ds")
    hub.reset_stats()
    assert main(["survey", "--source", "hf", "--lineage", "tree/base", "--depth", "1", "--relations",
                 "finetune,quantized", "--out", out, "--endpoint", hub.endpoint]) == 0
    # on the actors: each child read once (its analysis and its delta together), the base once as a node
    # and once for its batch of 4 children (--batch-size 8: one actor call)
    files = _files(tree)
    needed = {n.repo_id: needed_bytes((n.folder / files[n.repo_id]).read_bytes()) for n in tree}
    for m in ("tree/ft-lr0.01", "tree/ft-lr0.1", "tree/ft-shift", "tree/int8"):
        assert 0.99 * needed[m] <= hub.bytes_sent(repo_id=m, path=files[m]) <= 1.05 * needed[m], m
    assert 2 * 0.99 * needed["tree/base"] <= hub.bytes_sent(repo_id="tree/base", path=files["tree/base"]) \
        <= 2 * 1.05 * needed["tree/base"]
    text = capsys.readouterr().out
    assert "tree/int8 ← tree/base  (quantized, found by config)" in text and "tree/lora" not in text
    lineage = Dataset(out, create=False).read("lineage").to_pylist()
    assert sorted((r["child"], r["relation"]) for r in lineage) == [
        ("tree/ft-lr0.01", "finetune"), ("tree/ft-lr0.1", "finetune"), ("tree/ft-shift", "finetune"),
        ("tree/int8", "quantized")]
    # the nodes went through the survey machinery: one surveys row naming the tree, versions of every table
    (srow,) = Dataset(out, create=False).read("surveys").to_pylist()
    assert json.loads(srow["filters"])["lineage"] == "tree/base" and srow["num_success"] == 5
    assert {"lineage", "deltas", "models", "layers"} <= set(json.loads(srow["table_versions"]))
    deltas = [r for r in Dataset(out, create=False).read("deltas").to_pylist() if r["model_id"] == "tree/ft-lr0.1"]
    assert main(["analyze", "hf:tree/ft-lr0.1", "--base", "hf:tree/base", "--endpoint", hub.endpoint,
                 "--out", str(tmp_path / "pair.parquet")]) == 0
    cli = {r["name"]: r for r in pq.read_table(tmp_path / "pair.parquet").to_pylist()}
    assert {r["name"] for r in deltas} == set(cli)
    for r in deltas:
        for col in ("alpha", "D", "lambda_max", "delta_W_rel", "delta_spectral_rel", "stable_rank"):
            assert math.isclose(r[col], cli[r["name"]][col], rel_tol=1e-12), (r["name"], col)
    # the whole tree into the same dataset, as README's demo runs it: the nodes not surveyed yet analyzed on the
    # actors, then the merge's second edge in the driver once the pool is stopped (it still takes the Hub budget)
    capsys.readouterr()
    assert main(["survey", "--source", "hf", "--lineage", "tree/base", "--out", out, "--endpoint", hub.endpoint]) == 0
    text = capsys.readouterr().out
    assert "not analyzed" not in text and "8 edges," in text, text
    ds = Dataset(out, create=False)
    last = max(ds.read("surveys").to_pylist(), key=lambda r: r["started_at"])
    assert last["num_failed_edges"] == 0 and last["num_success"] == 3  # merge, lora, ft-lr0.01-ft
    deltas = ds.read("deltas").to_pylist()
    assert {(r["model_id"], r["parent_id"]) for r in deltas} == set(EXPECTED)
    _check_merge_edges(tree, [r for r in deltas if r["model_id"] == "tree/merge"])
    _check_readme_tree_figures(out)
    # option checks: one line, non-zero
    with pytest.raises(SystemExit):
        main(["survey", "--source", "timm", "--lineage", "tree/base", "--out", out])
    with pytest.raises(SystemExit):
        main(["survey", "--source", "hf", "--lineage", "tree/base", "--relations", "finetune,distill", "--out", out])
    assert "distill" in capsys.readouterr().err


def _check_merge_edges(tree, rows):
    """Both edges of the merge M = (A + B) / 2 in ``deltas``: ΔW = M − A and M − B (= ∓(A − B) / 2 up to the
    float32 rounding of M) per matrix, against numpy on the files the tree wrote: ‖ΔW‖_F, ‖ΔW‖_F / ‖W‖_F,
    ‖ΔW‖_2 / ‖W‖_2 and λ_max = σ_max(ΔW)²."""
    from safetensors.numpy import load_file

    parents = ("tree/ft-lr0.01", "tree/ft-shift")
    w = {n.repo_id: {k: v.astype(np.float64) for k, v in load_file(n.folder / "model.safetensors").items()}
         for n in tree if n.repo_id in ("tree/merge", *parents)}
    got = {(r["parent_id"], r["name"]): r for r in rows}
    assert set(got) == {(p, f"fc{i}.weight") for p in parents for i in (1, 2, 3)}
    for (parent, name), r in got.items():
        d, wp = w["tree/merge"][name] - w[parent][name], w[parent][name]
        assert r["relation"] == "merge" and r["status"] == "success" and (r["N"], r["M"]) == (max(d.shape), min(d.shape))
        assert r["delta_W"] == pytest.approx(np.linalg.norm(d), rel=1e-6)
        assert r["delta_W_rel"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(wp), rel=1e-6)
        assert r["delta_spectral_rel"] == pytest.approx(np.linalg.norm(d, 2) / np.linalg.norm(wp, 2), rel=1e-6)
        assert r["lambda_max"] == pytest.approx(np.linalg.norm(d, 2) ** 2, rel=1e-6)
    for i in (1, 2, 3):  # the two halves of one difference: the same ESD up to M's rounding
        a, b = got[(parents[0], f"fc{i}.weight")], got[(parents[1], f"fc{i}.weight")]
        assert a["lambda_max"] == pytest.approx(b["lambda_max"], rel=1e-4)


def _check_readme_tree_figures(out):
    """README's two model-tree queries on the whole demo tree give README's figures (4 fine-tune edges)."""
    from hubscan.query import connect

    con = connect(out)
    dw = con.execute("""SELECT d.name, count(*), median(d.delta_W_rel) FROM deltas d
        JOIN lineage g ON g.child = d.model_id AND g.parent = d.parent_id
        WHERE g.root = 'tree/base' AND d.relation = 'finetune' AND d.status = 'success'
        GROUP BY d.name ORDER BY 3 DESC""").fetchall()
    assert [(n, c, round(m, 3)) for n, c, m in dw] == [
        ("fc3.weight", 4, 0.049), ("fc1.weight", 4, 0.034), ("fc2.weight", 4, 0.029)]
    da = con.execute("""SELECT c.name, count(*), median(c.alpha - p.alpha) FROM lineage g
        JOIN layers c ON c.model_id = g.child AND c.revision = g.child_revision
        JOIN layers p ON p.model_id = g.parent AND p.revision = g.parent_revision AND p.name = c.name
             AND p.part = c.part
        WHERE g.relation = 'finetune' AND c.status = 'success' AND p.status = 'success'
        GROUP BY c.name ORDER BY abs(median(c.alpha - p.alpha)) DESC""").fetchall()
    assert [(n, c, round(m, 2)) for n, c, m in da] == [
        ("fc3.weight", 4, -1.11), ("fc1.weight", 4, -0.21), ("fc2.weight", 4, -0.04)]


def test_cli_survey_lineage_counts_and_says_failed_edges(hub, tree, tmp_path, capsys):
    """An edge whose delta cannot be analyzed is never silent: listed with its reason in one line, counted in the
    summary line and in ``surveys.num_failed_edges``; exit 0 while another edge was analyzed (as a survey with
    some failed models), one ``hubscan: error:`` line and exit 1 when no edge was."""
    from hubscan.cli import main

    w = {n.repo_id: n.folder / "model.safetensors" for n in tree}

    def card(parent):
        return {"README.md": f"---\nbase_model: {parent}\nbase_model_relation: finetune\n---\n".encode()}

    def child(parent):
        return {"tags": [f"base_model:finetune:{parent}"], "cardData": {"base_model": parent,
                                                                        "base_model_relation": "finetune"}}

    hub.add_model("bad/base", {"model.safetensors": w["tree/base"]})
    hub.add_model("bad/mid", {"model.safetensors": b"not a safetensors file", **card("bad/base")},
                  info=child("bad/base"))  # unreadable: the model fails, and both its edges
    hub.add_model("bad/leaf", {"model.safetensors": w["tree/ft-lr0.01"], **card("bad/mid")}, info=child("bad/mid"))
    hub.add_model("bad/ft", {"model.safetensors": w["tree/ft-lr0.1"], **card("bad/base")}, info=child("bad/base"))
    out = str(tmp_path / "ds")
    try:
        assert main(["survey", "--source", "hf", "--lineage", "bad/base", "--out", out, "--endpoint", hub.endpoint,
                     "--max-retries", "0"]) == 0
        text = " ".join(capsys.readouterr().out.split())  # at any terminal width
        assert "3 edges (2 not analyzed, below)" in text, text
        notes = re.split(r" delta (?=\S+ ← )", text)[1:]
        assert [n.split(" not analyzed: ")[0] for n in notes] == ["bad/mid ← bad/base", "bad/leaf ← bad/mid"], notes
        assert all("not a safetensors file" in n and "actor" not in n and "…" not in n for n in notes), notes
        (row,) = Dataset(out, create=False).read("surveys").to_pylist()
        assert (row["num_failed_edges"], row["num_failed"], row["num_success"]) == (2, 1, 3)
        assert {r["model_id"] for r in Dataset(out, create=False).read("deltas").to_pylist()} == {"bad/ft"}
        # the subtree below the unreadable model: its one edge failed, the survey with it
        assert main(["survey", "--source", "hf", "--lineage", "bad/mid", "--out", str(tmp_path / "ds2"),
                     "--endpoint", hub.endpoint, "--max-retries", "0"]) == 1
        err = capsys.readouterr().err
        assert "hubscan: error: bad/mid: no edge's delta could be analyzed (1 tried; the reasons above)" in err, err
    finally:
        for m in ("bad/base", "bad/mid", "bad/leaf", "bad/ft"):
            hub.remove_model(m)


def test_larger_finetune_lr_changes_alpha_more(tmp_path):
    """README's measurement at 3 seeds: |Δα| of the hidden layers larger at lr 0.1 than at 0.01 in every
    seed, both towards smaller α, and ‖ΔW‖/‖W‖ larger too."""
    from hubscan.demo.tree import lr_effect

    r = lr_effect(tmp_path, seeds=(0, 1, 2))
    assert r["larger_in"] == 3 and r["n"] == 3
    lo, hi = r["summary"][0.01], r["summary"][0.1]
    assert hi["delta_alpha"][0] < lo["delta_alpha"][0] < 0
    assert hi["delta_W_rel"][0] > 3 * lo["delta_W_rel"][0]


def test_shared_reads_once_per_tensor_and_window():
    """SharedReads: a tensor taken by both readers is read once; one the second reader never takes leaves
    memory after `window` further reads (read again if asked late); a failed read is not kept."""
    from collections import Counter

    import torch

    from hubscan.weights.base import TensorEntry, WeightSet
    from hubscan.weights.shared import SharedReads

    loads = Counter()

    def entry(name):
        def load():
            loads[name] += 1
            if name == "bad":
                raise OSError("unreadable")
            return torch.full((2, 2), float(len(loads)))
        return TensorEntry(name, (2, 2), "float32", "f", load)

    names = ["a", "b", "c", "d", "bad"]
    shared = SharedReads(WeightSet(files=["f"], format="x", entries=lambda: iter([entry(n) for n in names])),
                         readers=2, window=1)
    one, two = ({e.name: e for e in v.entries()} for v in (shared.view(), shared.view()))
    assert torch.equal(one["a"].load(), two["a"].load()) and loads["a"] == 1 and not shared._cache
    one["b"].load(), one["c"].load()
    assert set(shared._cache) == {"b", "c"}  # b is 1 read old: within the window
    one["d"].load()
    assert set(shared._cache) == {"c", "d"}  # b dropped (2 reads old)
    two["b"].load()
    assert loads["b"] == 2 and shared.reads["b"] == 2
    for view in (one, two):
        with pytest.raises(OSError):
            view["bad"].load()
    assert loads["bad"] == 2 and "bad" not in shared._cache
    shared.close()
    assert not shared._cache
