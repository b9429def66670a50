"""The batch-size toy experiment (jobs/batch_size_experiment.py) end to end in its --small mode: training,
checkpoints, the Ray survey of the local hub, the DuckDB read-back, trend statistics, plots and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "batch_size_experiment.py"
SMALL_BATCH_SIZES = (4, 64, 512)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bs_small")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_checkpoints_exist(small_run):
    out, stdout = small_run
    for B in SMALL_BATCH_SIZES:
        ckpt = out / "hub" / f"mlp_bs{B}_seed0.safetensors"
        assert ckpt.is_file() and ckpt.stat().st_size > 0
        from safetensors import safe_open
        with safe_open(str(ckpt), "pt") as f:
            assert {"fc1.weight", "fc2.weight", "fc3.weight"} <= set(f.keys())
            assert tuple(f.get_slice("fc2.weight").get_shape()) == (256, 256)
    assert "train [3/3]" in stdout and "survey done" in stdout  # progress lines


def test_dataset_holds_every_model_with_success(small_run):
    out, _ = small_run
    from hubscan.query import connect
    con = connect(str(out / "dataset"))
    rows = con.execute("SELECT model_id, status FROM models").fetchall()
    # local ids are relative to the surveyed root (OUT/hub), so the dataset is portable
    expected = {f"mlp_bs{B}_seed0.safetensors" for B in SMALL_BATCH_SIZES}
    assert {m for m, _ in rows} == expected
    assert all(s == "success" for _, s in rows), rows
    n = con.execute("SELECT count(*) FROM layers WHERE name = 'fc2.weight' AND status = 'success' "
                    "AND alpha IS NOT NULL").fetchone()[0]
    assert n == len(SMALL_BATCH_SIZES)


def test_results_json(small_run):
    out, _ = small_run
    res = json.loads((out / "results.json").read_text())
    mlp = res["models"]["mlp"]
    assert set(mlp["alpha_per_batch_size"]) == {str(B) for B in SMALL_BATCH_SIZES}
    assert all(isinstance(v, float) and v > 1 for v in mlp["alpha_per_batch_size"].values())
    # the 10-class output layer is left out of the mean, the two hidden layers enter
    assert mlp["layers_in_mean"] == ["fc1.weight", "fc2.weight"]
    for y in ("alpha", "test_accuracy"):
        tr = mlp["trend"][y]
        assert tr["n"] == len(SMALL_BATCH_SIZES)
        for k in ("spearman_p", "kendall_p", "ols_p"):
            assert 0.0 <= tr[k] <= 1.0
    assert res["timing"]["total_s"] > 0
    assert res["optimizer"]["name"] == "SGD"
    md = (out / "results.md").read_text()
    assert "| batch size |" in md and "Spearman" in md and "**Observation.**" in md


def test_plots_are_pngs(small_run):
    out, _ = small_run
    res = json.loads((out / "results.json").read_text())
    names = set(res["plots"])
    assert {"alpha_vs_batch_size.png", "accuracy_vs_batch_size.png", "esd_smallest_vs_largest_batch.png"} <= names
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


def test_accuracy_csv_joins_models(small_run):
    out, _ = small_run
    acc = pd.read_csv(out / "accuracy.csv")
    assert list(acc.columns[:3]) == ["model_id", "metric", "value"]
    assert {"batch_size", "seed", "model"} <= set(acc.columns)
    assert (acc.metric == "test_accuracy").all() and acc.value.between(0, 1).all()
    from hubscan.query import connect
    con = connect(str(out / "dataset"))
    con.register("acc", acc)
    joined = con.execute("SELECT count(*) FROM acc JOIN models USING (model_id)").fetchone()[0]
    assert joined == len(acc) == len(SMALL_BATCH_SIZES)
