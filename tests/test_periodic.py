"""Periodic surveys of one hub into one dataset, counted from the fake Hub's own request log: byte-identical
re-uploads get their original's rows (``same_content_as``) after one header-length request (a sharded one after
its index and one ``paths-info`` request), and a second
survey after the hub changed reads only new and changed models, keeps the rows of deleted ones (``last_seen``)
and ``hubscan changes`` says what changed."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from hub_server import FakeHub, isolated_hf_client

from hubscan.store import Dataset

READ_KINDS = ("resolve", "cdn", "info", "tree", "paths-info")


def _model(path, seed: int):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    save_file({f"h.{j}.weight": rng.standard_t(3, (48, 32)).astype("float32") for j in range(3)}
              | {"h.0.bias": rng.standard_normal(48).astype("float32")}, str(path))
    return path


def _reads(hub) -> dict:
    """repo id → requests that read it (everything but the listing)."""
    out: dict = {}
    for r in hub.requests():
        if r.repo_id and r.kind in READ_KINDS:
            out[r.repo_id] = out.get(r.repo_id, 0) + 1
    return out


def _layers(ds, model_id):
    t = Dataset(ds, create=False).read("layers").to_pylist()
    return sorted(((r["name"], r["N"], r["M"], r["alpha"], r["lambda_max"]) for r in t if r["model_id"] == model_id),
                  key=str)


@pytest.fixture(scope="module")
def ray_local():
    import ray
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_week_two_reads_only_what_changed_and_reuploads_take_their_originals_rows(ray_local, tmp_path, capsys):
    from hubscan.cli import main
    from hubscan.query import survey_changes
    from hubscan.survey import SurveyConfig, survey

    with isolated_hf_client(tmp_path / "hf"), FakeHub(lfs_redirect=True) as hub:
        files = {i: _model(tmp_path / f"m{i}.safetensors", i) for i in range(6)}
        for i, f in files.items():
            hub.add_model(f"org/m{i}", {"model.safetensors": f}, info={"downloads": 100 - i})
        hub.add_model("mirror/m0", {"model.safetensors": files[0]}, info={"downloads": 1})  # byte-identical
        ds = str(tmp_path / "ds")
        cfg = dict(source="hf", out=ds, actors=2, progress=False, hub={"endpoint": hub.endpoint})

        # week 1: the re-upload costs one redirected header-length GET, and has the original's rows
        hub.reset_stats()
        w1 = survey(SurveyConfig(**cfg))
        reads1 = _reads(hub)
        models = {r["model_id"]: r for r in Dataset(ds, create=False).read("models").to_pylist()}
        assert w1["num_success"] == 7
        copy, orig = sorted(["mirror/m0", "org/m0"], key=lambda m: models[m]["same_content_as"] is None)
        assert models[copy]["same_content_as"] == models[orig]["model_key"]
        assert models[orig]["same_content_as"] is None
        sha = hashlib.sha256(files[0].read_bytes()).hexdigest()
        assert models[copy]["files_sha256"] == models[orig]["files_sha256"] == [sha]
        assert reads1[copy] <= 2 and reads1[orig] >= 4
        assert hub.bytes_sent(repo_id=copy) <= 8  # the 8-byte header length, no tensor byte
        assert _layers(ds, copy) == _layers(ds, orig) and len(_layers(ds, copy)) == 3
        assert models[copy]["alpha"] == models[orig]["alpha"]
        # the product's own count: that GET and its redirect, plus a retry's requests (a connection dropped
        # before the hub saw the request) — the hub's log of the copy's requests shown when it is more
        assert models[copy]["requests"] <= 2 + models[copy]["retries"], (
            {k: models[copy][k] for k in ("requests", "retries", "bytes_read")},
            [(r.kind, r.path, r.status, r.error) for r in hub.requests() if r.repo_id == copy])
        assert models[copy]["bytes_read"] == 8 and models[copy]["status"] == models[orig]["status"] == "success"

        # the hub changes: a new revision, a deletion, a repository gated, a new model, a new re-upload
        w1_rev = hub.sha("org/m1")
        hub_rev = hub.add_model("org/m1", {"model.safetensors": _model(tmp_path / "m1b.safetensors", 11)})
        hub.remove_model("org/m2")
        hub.set_info("org/m3", gated="manual")
        hub.add_model("org/m9", {"model.safetensors": _model(tmp_path / "m9.safetensors", 9)})
        hub.add_model("backup/m4", {"model.safetensors": files[4]}, info={"downloads": 0})
        hub.reset_stats()
        w2 = survey(SurveyConfig(**cfg))
        reads2 = _reads(hub)

    assert set(reads2) == {"org/m1", "org/m9", "backup/m4"}  # nothing else read, not even its config
    assert reads2["backup/m4"] <= 2
    assert w2["num_models"] == 8 and w2["num_already_done"] == 5  # org/m0, m3, m4, m5 and mirror/m0 listed again
    rows = Dataset(ds, create=False).read("models").to_pylist()
    by = {}
    for r in rows:
        by.setdefault(r["model_id"], []).append(r)
    s1 = w1["started_at"]
    assert [r["last_seen"] for r in by["org/m2"]] == [s1]  # deleted: its rows kept, last listed in week 1
    assert {r["revision"]: r["last_seen"] for r in by["org/m1"]} == {w1_rev: s1, hub_rev: None}  # old row marked
    assert all(r["last_seen"] is None for m in ("org/m0", "org/m3", "org/m4", "mirror/m0", "org/m9") for r in by[m])
    assert by["org/m3"][0]["gated"] is True
    assert by["backup/m4"][0]["same_content_as"] == by["org/m4"][0]["model_key"]
    assert _layers(ds, "backup/m4") == _layers(ds, "org/m4")

    # one row per model in the latest views: org/m1's new revision (not its week-1 row), org/m2 as last listed
    from hubscan.query import connect, summary_tables
    con = connect(ds)
    latest = dict(con.execute("SELECT model_id, revision FROM latest_models").fetchall())
    assert len(rows) == 10 and len(latest) == 9 and latest["org/m1"] == hub_rev and "org/m2" in latest
    assert con.execute("SELECT count(DISTINCT model_key), count(*) FROM latest_layers").fetchone() == (9, 27)
    summary = dict(summary_tables(ds))
    assert summary["the whole dataset (latest revision of each model), models by status"] == ["success: 9"]
    # the report counts the same: 9 models, their 27 layers (org/m1's week-1 row and layers left out)
    from hubscan.report import build_report
    page = build_report(ds, tmp_path / "r.html", joined=None).read_text(encoding="utf-8")
    assert "9 models in the dataset (10 analyses" in page
    assert "(27 layers; Martin" in page and "(all 9)" in page

    c = survey_changes(ds)
    assert (c["older"]["survey_id"], c["newer"]["survey_id"]) == (w1["survey_id"], w2["survey_id"])
    assert [r["model_id"] for r in c["new"]] == ["backup/m4", "org/m9"]
    assert [r["model_id"] for r in c["new_revision"]] == ["org/m1"]
    assert [r["model_id"] for r in c["unlisted"]] == ["org/m2"]
    assert c["access"] == [{"model_id": "org/m3", "before": False, "after": True}]
    assert main(["changes", "--dataset", ds]) == 0
    out = capsys.readouterr().out
    assert "new models: 2" in out and "no longer listed (rows kept, last_seen says when): 1" in out and "org/m2" in out


def test_sharded_reupload_costs_its_index_and_one_metadata_request(ray_local, tmp_path):
    """A sharded model (written by huggingface_hub's ``save_torch_state_dict``, the sharding transformers uses)
    and its byte-identical re-upload under another organisation: the copy reads its index and asks the Hub once
    for every shard's sha256 (``get_paths_info``), then takes the original's rows — no shard touched."""
    import torch
    from huggingface_hub import save_torch_state_dict

    from hubscan.survey import SurveyConfig, survey

    g = torch.Generator().manual_seed(7)
    state = {f"h.{j}.weight": torch.randn(48, 32, generator=g) for j in range(6)} | {"h.0.bias": torch.randn(48)}
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_torch_state_dict(state, folder, max_shard_size=7000)  # one 48 × 32 float32 matrix (6,144 B) per shard
    files = {p.name: p for p in folder.iterdir()}
    shards = sorted(n for n in files if n.endswith(".safetensors"))
    index = files["model.safetensors.index.json"]
    assert len(shards) == 6 and set(files) == {*shards, index.name}

    with isolated_hf_client(tmp_path / "hf"), FakeHub(lfs_redirect=True) as hub:
        hub.add_model("org/sharded", files, info={"downloads": 10})
        hub.add_model("mirror/sharded", files, info={"downloads": 1})  # byte-identical re-upload
        ds = str(tmp_path / "ds")
        hub.reset_stats()
        s = survey(SurveyConfig(source="hf", out=ds, actors=1, progress=False, hub={"endpoint": hub.endpoint}))
        reads = _reads(hub)
        kinds = {m: sorted(r.kind for r in hub.requests(repo_id=m) if r.kind in READ_KINDS)
                 for m in ("org/sharded", "mirror/sharded")}
        shard_bytes = {m: sum(hub.bytes_sent(repo_id=m, path=n) for n in shards) for m in kinds}

    models = {r["model_id"]: r for r in Dataset(ds, create=False).read("models").to_pylist()}
    assert s["num_success"] == 2
    copy, orig = sorted(models, key=lambda m: models[m]["same_content_as"] is None)
    assert models[copy]["same_content_as"] == models[orig]["model_key"] and models[orig]["same_content_as"] is None
    shas = sorted(hashlib.sha256(files[n].read_bytes()).hexdigest() for n in shards)
    assert models[copy]["files_sha256"] == models[orig]["files_sha256"] == shas

    # the copy, counted by the fake Hub: its index (a git file, no redirect) and one paths-info, no shard byte
    assert kinds[copy] == ["paths-info", "resolve"] and reads[copy] == 2 and models[copy]["requests"] == 2
    assert shard_bytes[copy] == 0 and models[copy]["bytes_read"] == index.stat().st_size
    # the original read every shard: the same two, then per shard its header length (resolve + CDN), header, tensor
    assert reads[orig] >= 2 + 2 * len(shards) and shard_bytes[orig] > sum(6144 for _ in shards)

    layers = _layers(ds, copy)
    assert layers == _layers(ds, orig)
    assert [(n, nn, m) for n, nn, m, *_ in layers] == sorted((k, 48, 32) for k in state if k.endswith(".weight"))
    assert all(np.isfinite(alpha) for *_, alpha, _ in layers)
    assert models[copy]["alpha"] == models[orig]["alpha"] and models[copy]["status"] == models[orig]["status"] == "success"


def test_a_limited_survey_counts_as_listing_only_what_it_listed(ray_local, tmp_path, capsys):
    """A survey cut by ``--limit`` lists part of the source: its ``surveys`` row says so (``filters`` names the
    limit), and a model it did not list keeps as ``last_seen`` the start of the last survey that did list it
    (the complete one before), while a model it re-analyzed (``--force``) was listed by it."""
    import json

    from hubscan.cli import main

    many = tmp_path / "many"
    many.mkdir()
    for i in range(6):
        _model(many / f"m{i:02d}.safetensors", i)
    ds = str(tmp_path / "ds")
    run = ["survey", "--source", f"local:{many}", "--out", ds, "--no-progress", "--actors", "1"]
    assert main(run) == 0
    assert main([*run, "--force", "--limit", "2"]) == 0  # analyzes m00 and m01 again, lists nothing else
    (many / "m05.safetensors").unlink()
    (many / "m00.safetensors").unlink()
    assert main(run) == 0
    capsys.readouterr()

    surveys = sorted(Dataset(ds, create=False).read("surveys").to_pylist(), key=lambda r: r["started_at"])
    assert [json.loads(r["filters"]) for r in surveys] == [{}, {"limit": 2}, {}]
    assert [r["num_models"] for r in surveys] == [6, 2, 4]
    first, limited, _ = (r["started_at"] for r in surveys)
    rows = Dataset(ds, create=False).read("models").to_pylist()
    seen = {r["model_id"].removesuffix(".safetensors"): r["last_seen"] for r in rows}
    assert seen == {"m05": first, "m00": limited, "m01": None, "m02": None, "m03": None, "m04": None}
