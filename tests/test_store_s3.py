"""The dataset on S3-compatible object storage: moto's server mode on loopback, written through
pyarrow's S3FileSystem by a survey, read back by pyarrow and DuckDB (``hubscan sql``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from hubscan.store import Dataset  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with bucket ``hubscan``; yields storage options for pyarrow."""
    port = _free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        import urllib.request
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError as e:
                if getattr(e, "code", None):
                    break
                time.sleep(0.1)
        opts = {"endpoint_override": f"127.0.0.1:{port}", "scheme": "http", "access_key": "testing",
                "secret_key": "testing", "region": "us-east-1"}
        import pyarrow.fs as pafs
        pafs.S3FileSystem(**opts, allow_bucket_creation=True).create_dir("hubscan")
        yield opts
    finally:
        server.terminate()
        server.wait(timeout=30)


def _objects(s3, prefix: str) -> set[str]:
    import pyarrow.fs as pafs
    fs = pafs.S3FileSystem(**s3)
    return {i.path.removeprefix(prefix + "/") for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
            if i.type == pafs.FileType.File and "_delta_log" not in i.path}


def test_write_replace_and_read_on_s3(s3, cases_dir):
    import hubscan
    from hubscan.query import connect

    ds = Dataset("s3://hubscan/run1", **s3)
    res = hubscan.analyze(cases_dir / "ok_small.safetensors", keep_evals=True)
    ident = {"model_key": "k1", "source": "local", "model_id": "ok_small", "revision": "r"}
    layers = [{**ident, **r} for r in res.rows]
    esd = [{**ident, "layer_id": 0, "name": "layer.good.weight", "part": "", "evals": res.evals["layer.good.weight"]}]
    for _ in range(2):  # the second write replaces the rows (delete + add in one commit): no duplicates
        ds.write_model("k1", "local", {**ident, "status": "success", "alpha": res.summary["alpha"]}, layers, esd)
    assert {t: len(ds.files(t)) for t in ("esd", "layers", "models")} == {"esd": 1, "layers": 1, "models": 1}
    assert ds.done() == {"k1": "success"}
    con = connect("s3://hubscan/run1", **s3)
    assert con.execute("SELECT count(*), max(alpha) FROM layers").fetchall() == [(1, res.rows[0]["alpha"])]
    assert con.execute("SELECT len(evals) FROM esd").fetchall() == [(128,)]
    # vacuum (retention 0) deletes the replaced files: the bucket holds exactly the referenced ones
    ds.compact(retention_hours=0)
    for t in ("esd", "layers", "models"):
        assert _objects(s3, f"hubscan/run1/{t}") == set(ds.files(t)), t


def test_reader_during_compaction_sees_every_model_once(s3):
    """Many small commits, then optimize + vacuum in a thread while readers query: every snapshot
    holds each model exactly once."""
    import threading
    from hubscan.query import connect

    url = "s3://hubscan/compaction"
    ds = Dataset(url, **s3)
    n = 24
    for i in range(n):
        ident = {"model_key": f"k{i:02d}", "source": "hf" if i % 2 else "local", "model_id": f"m{i}", "revision": "r"}
        layers = [{**ident, "layer_id": j, "name": f"l{j}.weight", "part": "", "status": "success", "alpha": 2 + j}
                  for j in range(3)]
        ds.write_model(ident["model_key"], ident["source"], {**ident, "status": "success"}, layers, None)
    assert len(ds.files("layers")) == n
    box = {}
    # optimize commits the compacted files while readers hold older snapshots; vacuum keeps the
    # replaced files for the retention period (here the default), so those readers finish
    th = threading.Thread(target=lambda: box.setdefault("r", Dataset(url, **s3).compact()))
    th.start()
    reads = 0
    while th.is_alive() or reads < 3:
        con = connect(url, **s3)
        assert con.execute("SELECT count(*), count(DISTINCT model_key) FROM models").fetchall() == [(n, n)]
        assert con.execute("SELECT count(*), count(DISTINCT (model_key, layer_id)) FROM layers").fetchall() == [
            (3 * n, 3 * n)]
        reads += 1
    th.join()
    assert box["r"]["layers"]["files_after"] == 2  # one file per source partition
    assert {t: len(ds.files(t)) for t in ("models", "layers")} == {"models": 2, "layers": 2}
    ds.compact(retention_hours=0)  # no reader left: the replaced files go
    assert _objects(s3, "hubscan/compaction/layers") == set(ds.files("layers"))


def test_survey_to_s3(s3, cases_dir, tmp_path):
    import json
    from hubscan.cli import main

    listing = tmp_path / "models.txt"
    listing.write_text(f"{cases_dir / 'ok_small.safetensors'}\n{cases_dir / 'nested_checkpoint.pt'}\n")
    opts = json.dumps(s3)
    # the real entry point in its own process: it exits 0 (native S3 / Ray / Delta teardown included;
    # `ray job submit` reports a job by this status)
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "survey", "--source", f"list:{listing}", "--out",
                           "s3://hubscan/run2", "--actors", "1", "--no-progress", "--storage-options", opts],
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from hubscan.query import connect
    con = connect("s3://hubscan/run2", **s3)
    assert con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM models").fetchall() == [(2, 2)]
    # rerun: nothing to do (the done-set is read from S3)
    assert main(["survey", "--source", f"list:{listing}", "--out", "s3://hubscan/run2", "--actors", "1",
                 "--no-progress", "--storage-options", opts]) == 0
    assert con.execute("SELECT count(*) FROM models").fetchall() == [(2,)]
    surveys = connect("s3://hubscan/run2", **s3).execute(
        "SELECT num_success, num_already_done FROM surveys ORDER BY started_at").fetchall()
    assert surveys == [(2, 0), (0, 2)]


def _tiny_hub(root: Path, n_tiny: int, n_slow: int) -> Path:
    """``n_tiny`` small models (96 × 64, Student-t) and ``n_slow`` that take seconds each (1800²)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_slow):
        save_file({"w.weight": torch.from_numpy(rng.standard_t(3, (1800, 1800)).astype(np.float32))},
                  str(root / f"slow{i}.safetensors"))
    for i in range(n_tiny):
        save_file({"a.weight": torch.from_numpy(rng.standard_t(3, (96, 64)).astype(np.float32)),
                   "b.weight": torch.from_numpy(rng.standard_t(4, (64, 48)).astype(np.float32))},
                  str(root / f"tiny{i:03d}.safetensors"))
    return root


def test_s3_concurrent_actors_killed_actor_and_killed_driver(s3, tmp_path):
    """4 actors write data files concurrently to S3 while one driver commits; an actor and then
    the driver are killed; the rerun completes: no committed model lost, none twice, and vacuum
    leaves only the referenced files in the bucket."""
    import json
    import signal
    from hubscan.survey import SurveyConfig, survey

    n_tiny, n_slow = 40, 4
    hub = _tiny_hub(tmp_path / "hub", n_tiny, n_slow)
    url = "s3://hubscan/faults"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "hubscan.cli", "survey", "--source", f"local:{hub}", "--out", url, "--actors", "4",
           "--cpus-per-actor", "0.5", "--flush-models", "2", "--no-progress", "--storage-options", json.dumps(s3)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ds = Dataset(url, **s3)

    def wait_for(pred, timeout=300):
        t0 = time.monotonic()
        while not pred():
            assert time.monotonic() - t0 < timeout and proc.poll() is None, "survey ended or stalled"
            time.sleep(0.3)

    def workers():  # this survey's actors: descendants of its driver
        from test_survey_faults import _actor_pids
        return _actor_pids(proc.pid)
    try:
        wait_for(lambda: len(ds.done()) >= 2)
        wait_for(lambda: len(workers()) >= 4)
        victim = workers()[0]
        victim.send_signal(signal.SIGKILL)  # its buffered and in-flight models are redone
        wait_for(lambda: len(ds.done()) >= 12)
        committed = ds.done()
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its actors
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    committed_after_kill = ds.done()
    assert set(committed) <= set(committed_after_kill)  # no commit lost; nothing commits after the driver died
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = survey(SurveyConfig(source=f"local:{hub}", out=url, actors=2, progress=False, storage_options=s3))
    finally:
        ray.shutdown()
    n = n_tiny + n_slow
    assert s["num_already_done"] == len(committed_after_kill) and s["num_already_done"] + s["num_success"] == n
    from hubscan.query import connect
    con = connect(url, **s3)
    assert con.execute("SELECT count(*), count(DISTINCT model_key), count(*) FILTER (WHERE status = 'success') "
                       "FROM models").fetchall() == [(n, n, n)]
    # a model with two sets of layers: which surveys wrote them, its models row, and whether the killed run had
    # committed it (failed once in CI, 86 layer rows for 84, not reproduced alone)
    twice = "SELECT model_key FROM layers GROUP BY model_key, layer_id, part HAVING count(*) > 1"
    twice = (con.execute(f"SELECT model_key, layer_id, survey_id FROM layers WHERE model_key IN ({twice}) "
                         "ORDER BY ALL").fetchall(),
             con.execute(f"SELECT model_key, survey_id, status FROM models WHERE model_key IN ({twice})").fetchall())
    twice += ([k in committed for k, _, _ in twice[1]],)
    assert con.execute("SELECT count(*), count(DISTINCT (model_key, layer_id, part)), count(DISTINCT model_key) "
                       "FROM layers").fetchall() == [(2 * n_tiny + n_slow, 2 * n_tiny + n_slow, n)], twice
    assert con.execute("SELECT count(*) FROM esd").fetchall() == [(2 * n_tiny + n_slow,)]
    # uncommitted files of the killed actor and driver are in the bucket until vacuum deletes them
    ds.compact(retention_hours=0, keep_versions={})
    for t in ("esd", "layers", "models"):
        assert _objects(s3, f"hubscan/faults/{t}") == set(ds.files(t)), t
    assert con.execute("SELECT count(*) FROM models").fetchall() == [(n,)]
