"""``hubscan publish``: a dataset as a Hub dataset repository (Parquet shards + card), read back.

Against the loopback fake Hub (tests/hub_server.py), driven by the REAL huggingface_hub client (create_repo,
preupload, the git-LFS batch API, commit) and read back by ``hubscan sql --dataset hf://…`` and by the real
``datasets.load_dataset`` (which reads the card's YAML ``configs``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import hubscan
from hub_server import isolated_hf_client, serve

TOKEN = "hf_publish_secret_token_0123456789"
REPO = "census-org/hub-census"
URL = f"hf://datasets/{REPO}"
SMALL = {"models": 2, "layers": 2, "esd": 2, "deltas": 2, "surveys": 2, "accuracy": 2, "lineage": 2}


def _model_file(path, seed: int) -> None:
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    save_file({"a.weight": rng.standard_t(3, (96, 48)).astype(np.float32),
               "b.weight": rng.standard_normal((64, 40)).astype(np.float32),
               "b.bias": np.zeros(64, np.float32)}, str(path))


def _survey(ds, folder, seeds, sid: str, start: dt.datetime) -> list[str]:
    """Analyze one tiny model per seed (hubscan.analyze, real rows and eigenvalues) and write its rows and a
    surveys row, as a survey does. Returns the model keys."""
    from hubscan.schema import rows_to_table, table_schema
    from hubscan.store import config_hash, model_key

    cfg = config_hash(hubscan.AnalyzeOptions())
    keys = []
    for i, seed in enumerate(seeds):
        p = folder / f"m{seed}.safetensors"
        _model_file(p, seed)
        res = hubscan.analyze(str(p), keep_evals=True)
        ref = res.ref
        key = model_key(ref.source, ref.id, ref.revision, cfg)
        model = {"model_key": key, "source": ref.source, "model_id": ref.id, "revision": ref.revision,
                 "config_hash": cfg, "status": res.summary["status"], "reason": res.summary.get("reason"),
                 "alpha": res.summary.get("alpha"), "num_layers": len(res.rows), "survey_id": sid,
                 "analyzed_at": start + dt.timedelta(seconds=i), "tags": ["toy", f"seed:{seed}"]}
        esd = [{"layer_id": r["layer_id"], "name": r["name"], "part": r["part"], "evals": e.astype(np.float32)}
               for r in res.rows if (e := res.evals.get(r["name"])) is not None]
        ds.write_model(model, res.rows, esd)
        keys.append(key)
    ds.write("surveys", rows_to_table([{"survey_id": sid, "started_at": start, "finished_at": start,
                                        "source": f"local:{folder.name}", "num_models": len(seeds)}],
                                      table_schema("surveys")))
    return keys


def _sorted(t: pa.Table, keys) -> list[dict]:
    return t.sort_by([(k, "ascending") for k in keys]).to_pylist()


_KEYS = {"models": ["model_key"], "layers": ["model_key", "layer_id", "part"], "esd": ["model_key", "layer_id", "part"],
         "surveys": ["survey_id"]}


@pytest.fixture
def hub(tmp_path):
    with isolated_hf_client(tmp_path / "hf-cache") as guard, serve() as h:
        h.grant(TOKEN, write=True)
        yield h
        assert not guard.blocked, guard.blocked


@pytest.fixture
def dataset(tmp_path):
    from hubscan.store import Dataset
    folder = tmp_path / "models"
    folder.mkdir()
    ds = Dataset(str(tmp_path / "ds"))
    keys = _survey(ds, folder, range(6), "survey-1", dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc))
    ds.keys_week1 = keys
    ds.folder = folder
    return ds


def _publish(ds, hub, **kw):
    from hubscan.publish import publish
    return publish(ds.url, URL, endpoint=hub.endpoint, token=TOKEN, groups_per_shard=SMALL, **kw)


def test_shards_are_deterministic_ordered_and_hold_every_row(dataset):
    from hubscan.publish import shards
    a = shards(dataset, groups_per_shard=SMALL)
    b = shards(dataset, groups_per_shard=SMALL)
    assert [(s.path, s.data) for s in a] == [(s.path, s.data) for s in b]
    for table in ("models", "layers", "esd", "surveys"):
        mine = [s for s in a if s.table == table]
        assert mine and all(s.path.startswith(f"data/{table}/part-") for s in mine)
        import pyarrow.parquet as pq, io
        got = pa.concat_tables([pq.read_table(io.BytesIO(s.data)) for s in mine])
        assert _sorted(got, _KEYS[table]) == _sorted(dataset.read(table).select(got.column_names), _KEYS[table])
        # a model's rows never straddle two shards
        if table != "surveys":
            owners = {}
            for s in mine:
                for k in set(pq.read_table(io.BytesIO(s.data), columns=["model_key"]).column(0).to_pylist()):
                    assert owners.setdefault(k, s.path) == s.path
    assert len([s for s in a if s.table == "layers"]) > 1  # 6 models, ~2 per shard


def test_publish_then_read_back_with_sql_and_one_commit_per_publish(dataset, hub, tmp_path, capsys):
    from hubscan.cli import main
    from hubscan.publish import parse_url

    r = _publish(dataset, hub)
    assert r.commit is not None and not r.deleted and r.unchanged == 0
    files = hub.files(REPO, repo_type="dataset")
    assert "README.md" in files and set(r.added) <= set(files)
    assert len(hub.commits(REPO, repo_type="dataset")) == 2  # the repo's initial commit + the publish
    card = hub.file_bytes(REPO, "README.md", repo_type="dataset").decode()
    import yaml
    meta = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in meta["configs"]} == {"models", "layers", "esd", "surveys"}
    assert all(c["data_files"][0]["path"] == f"data/{c['config_name']}/*.parquet" for c in meta["configs"])
    # no request carried the token in the log, and no output printed it
    assert all(TOKEN not in json.dumps(rec.headers) for rec in hub.requests())

    # hubscan sql reads the published census: the same rows as the dataset
    assert main(["sql", "--dataset", URL, "--endpoint", hub.endpoint, "--format", "json",
                 "SELECT model_key, alpha, num_layers FROM models ORDER BY model_key"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = _sorted(dataset.read("models", columns=["model_key", "alpha", "num_layers"]), ["model_key"])
    assert got == want
    assert main(["sql", "--dataset", URL, "--endpoint", hub.endpoint, "--format", "json",
                 "SELECT count(*) AS n, sum(len(evals)) AS e FROM esd"]) == 0
    got = json.loads(capsys.readouterr().out)[0]
    esd = dataset.read("esd")
    assert (got["n"], got["e"]) == (esd.num_rows, sum(len(x) for x in esd.column("evals").to_pylist()))
    assert TOKEN not in capsys.readouterr().out

    # an unchanged dataset: no commit, nothing uploaded
    before = len(hub.commits(REPO, repo_type="dataset"))
    hub.reset_stats()
    again = _publish(dataset, hub)
    assert again.commit is None and again.unchanged == sum(again.shards.values())
    assert len(hub.commits(REPO, repo_type="dataset")) == before
    assert not hub.requests(kind="upload")

    # week 2: new models and one model re-analyzed (replaced): ONE commit, new shards added, replaced removed
    from hubscan.store import Dataset
    old_shards = set(p for p in hub.files(REPO, repo_type="dataset") if p.startswith("data/"))
    _survey(dataset, dataset.folder, range(6, 9), "survey-2", dt.datetime(2026, 11, 8, tzinfo=dt.timezone.utc))
    gone = dataset.keys_week1[0]
    for table in ("esd", "layers", "models"):
        Dataset(dataset.url).commit(table, [], replace=("model_key", [gone]))
    hub.reset_stats()
    r2 = _publish(dataset, hub)
    assert r2.commit is not None and r2.added and r2.deleted
    assert len(hub.commits(REPO, repo_type="dataset")) == before + 1
    assert len(hub.requests(kind="commit")) == 1
    now = set(p for p in hub.files(REPO, repo_type="dataset") if p.startswith("data/"))
    assert now == (old_shards - set(r2.deleted)) | set(r2.added)
    assert set(r2.deleted) <= old_shards and not set(r2.added) & old_shards
    assert r2.unchanged > 0  # shards that held no changed model were neither uploaded nor deleted
    uploaded = {rec.path.rsplit("/", 1)[-1] for rec in hub.requests(kind="upload")}
    assert len(uploaded) == len(r2.added)
    assert main(["sql", "--dataset", URL, "--endpoint", hub.endpoint, "--format", "json",
                 "SELECT model_key FROM models ORDER BY model_key"]) == 0
    got = [x["model_key"] for x in json.loads(capsys.readouterr().out)]
    assert got == sorted(dataset.read("models", columns=["model_key"]).column(0).to_pylist())
    assert gone not in got and len(got) == 8
    # an older commit stays queryable by revision
    assert parse_url(f"{URL}@{r.commit}") == (REPO, r.commit)
    assert main(["sql", "--dataset", f"{URL}@{r.commit}", "--endpoint", hub.endpoint, "--format", "json",
                 "SELECT count(*) AS n FROM models"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 6}]


def test_publish_errors_in_one_line(dataset, hub, tmp_path, capsys, monkeypatch):
    from hubscan.cli import main
    # a token without write access: the hub refuses; one line, the token nowhere
    monkeypatch.setenv("HF_TOKEN", "hf_read_only_token_987654321")
    assert main(["publish", dataset.url, URL, "--endpoint", hub.endpoint]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hubscan: error: {URL}: no write access") and "\n" not in err, err
    assert "hf_read_only_token_987654321" not in err
    assert main(["publish", dataset.url, "hf://models/x/y", "--endpoint", hub.endpoint]) == 1
    assert "not a Hub dataset URL" in capsys.readouterr().err
    assert main(["publish", str(tmp_path / "nothing"), URL, "--endpoint", hub.endpoint]) == 1
    assert "no hubscan dataset here" in capsys.readouterr().err
    assert main(["sql", "--dataset", "hf://datasets/census-org/absent", "--endpoint", hub.endpoint, "SELECT 1"]) == 1
    assert "repository not found" in capsys.readouterr().err


@pytest.mark.slow
def test_datasets_load_dataset_reads_every_table(dataset, hub, tmp_path):
    """The real ``datasets.load_dataset`` (in a subprocess pointed at the fake Hub) reads each table through
    the card's configs: the same rows as the dataset."""
    pytest.importorskip("datasets")
    _publish(dataset, hub)
    code = ("import datasets, json, sys\n"
            "out = {}\n"
            "for t in ('models', 'layers', 'esd', 'surveys'):\n"
            "    d = datasets.load_dataset(sys.argv[1], t, split='train')\n"
            "    out[t] = d.data.table.to_pydict()\n"
            "import pickle; sys.stdout.buffer.write(pickle.dumps(out))\n")
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": TOKEN}
    env.pop("HF_HUB_OFFLINE", None)
    p = subprocess.run([sys.executable, "-c", code, REPO], env=env, capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    import pickle
    got = pickle.loads(p.stdout)
    for table, cols in got.items():
        t = pa.table(cols)
        want = dataset.read(table)
        assert t.num_rows == want.num_rows
        assert _sorted(t.select(want.column_names), _KEYS[table]) == _sorted(want, _KEYS[table])
