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


def test_write_replace_and_read_on_s3(s3, cases_dir):
    import pyarrow.fs as pafs
    import hubscan
    from hubscan.query import connect

    ds = Dataset("s3://hubscan/run1", **s3)
    res = hubscan.analyze(cases_dir / "ok_small.safetensors", keep_evals=True)
    ident = {"model_key": "k1", "source": "local", "model_id": "ok_small", "revision": "r"}
    layers = [{**ident, **r} for r in res.rows]
    esd = [{**ident, "layer_id": 0, "name": "layer.good.weight", "part": "", "evals": res.evals["layer.good.weight"]}]
    for _ in range(2):  # the second write replaces the files: no duplicates
        ds.write_model("k1", "local", {**ident, "status": "success", "alpha": res.summary["alpha"]}, layers, esd)
    fs = pafs.S3FileSystem(**s3)
    names = sorted(i.path for i in fs.get_file_info(pafs.FileSelector("hubscan/run1", recursive=True))
                   if i.type == pafs.FileType.File)
    assert names == [f"hubscan/run1/table={t}/source=local/part-k1.parquet" for t in ("esd", "layers", "models")]
    assert ds.done() == {"k1": "success"}
    con = connect("s3://hubscan/run1", **s3)
    assert con.execute("SELECT count(*), max(alpha) FROM layers").fetchall() == [(1, res.rows[0]["alpha"])]
    assert con.execute("SELECT len(evals) FROM esd").fetchall() == [(128,)]


def test_survey_to_s3(s3, cases_dir, tmp_path):
    import json
    from hubscan.cli import main

    listing = tmp_path / "models.txt"
    listing.write_text(f"{cases_dir / 'ok_small.safetensors'}\n{cases_dir / 'nested_checkpoint.pt'}\n")
    opts = json.dumps(s3)
    assert main(["survey", "--source", f"list:{listing}", "--out", "s3://hubscan/run2", "--actors", "1",
                 "--no-progress", "--storage-options", opts]) == 0
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
