"""The --layers filter (hubscan.esd.select) through the API and the CLI, on all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import hubscan
from hubscan.esd.select import LayerFilter


def test_parse_and_keep():
    f = LayerFilter.parse("3, 10-12, embedding, *attention.self.query*, !11, !*layer.5.*")
    assert f.keeps(3, "x", "dense") and f.keeps(10, "x", "dense") and f.keeps(12, "x", "dense")
    assert not f.keeps(11, "x", "dense")                       # excluded id wins
    assert f.keeps(0, "embeddings.word_embeddings.weight", "embedding")
    assert f.keeps(40, "encoder.layer.0.attention.self.query.weight", "dense")
    assert not f.keeps(40, "encoder.layer.5.attention.self.query.weight", "dense")
    assert not f.keeps(4, "encoder.layer.0.output.dense.weight", "dense")
    only_excl = LayerFilter.parse("!dense")
    assert only_excl.keeps(0, "a", "embedding") and not only_excl.keeps(0, "a", "dense")
    assert LayerFilter.parse("").keeps(7, "a", "conv2d")
    for bad in ("5-2", "1,,2", "!", "-1", "!-2", "-3-5"):
        with pytest.raises(ValueError):
            LayerFilter.parse(bad)
    assert LayerFilter.parse("*-1*").include == (("glob", "*-1*"),)  # a glob with a dash stays a glob


def test_filter_on_minilm(minilm_dir):
    full = {r["name"]: r for r in hubscan.analyze(minilm_dir, mp_fit=False).rows}
    rows = hubscan.analyze(minilm_dir, mp_fit=False, layers="*layer.0.attention*,embedding,!*key*").rows
    by = {r["name"]: r for r in rows}
    assert set(by) == set(full)                                # every tensor still has its one row
    analyzed = {n for n, r in by.items() if r["status"] == "success"}
    assert analyzed == {"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                        "encoder.layer.0.attention.self.value.weight",
                        "encoder.layer.0.attention.output.dense.weight"}
    for n in analyzed:                                         # same numbers as unfiltered
        assert by[n]["alpha"] == full[n]["alpha"]
    skipped = by["encoder.layer.0.attention.self.key.weight"]
    assert skipped["status"] == "skipped" and skipped["reason"].startswith("excluded by --layers")
    # skipped for their own reasons first (integer tensor), not relabelled
    assert "integer" in by["embeddings.position_ids"]["reason"]
    ids = hubscan.analyze(minilm_dir, mp_fit=False, layers="5-9").rows
    assert all((5 <= r["layer_id"] <= 9) == (r["status"] == "success") for r in ids
               if not r["reason"] or r["reason"].startswith("excluded"))


def test_filter_that_selects_nothing_skips_the_model(minilm_dir):
    """A --layers spec that matches no layer of a model: the model is skipped, saying so (not a failed
    model, not a success); every tensor still has its row."""
    res = hubscan.analyze(minilm_dir, mp_fit=False, layers="*no_such_layer*")
    assert res.summary["status"] == "skipped", res.summary
    assert res.summary["reason"] == "no layer selected by --layers *no_such_layer*"
    assert res.summary["num_success"] == 0 and len(res.rows) == len(hubscan.analyze(minilm_dir, mp_fit=False).rows)
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(minilm_dir), "--layers", "nomatch"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 1, proc.stderr
    assert "summary status=skipped (no layer selected by --layers nomatch)" in proc.stdout
    assert "alpha=" not in proc.stdout  # no empty metric lines
    # the filter's exclusions in one note (with the ids), not one line per layer
    notes = [line for line in proc.stdout.splitlines() if "excluded by --layers" in line]
    n = sum(1 for r in res.rows if (r["reason"] or "").startswith("excluded by --layers"))
    assert len(notes) == 1 and notes[0].strip().startswith(f"{n} layer(s) excluded by --layers nomatch"), notes
    # nor one table row per excluded layer: the table holds the layers not left out by the filter (in --out all)
    table = [line for line in proc.stdout.splitlines() if re.match(r"^\s*\d+  ", line) and "layer(s)" not in line]
    assert len(table) == len(res.rows) - n, proc.stdout


def test_cli_rejects_bad_spec(minilm_dir):
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(minilm_dir), "--layers", "9-3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "ends before it starts" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(minilm_dir), "--layers=-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "ids are ≥ 0" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
