"""timm source: pretrained names → hub repos without network; a timm model served by the loopback
fake Hub analyzed by its timm name; a survey over the fake Hub with injected faults."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from hub_server import FakeHub, isolated_hf_client, status
from conftest import data_dir

import hubscan
from hubscan.hub import HubClient
from hubscan.sources.timm import family_of, list_timm, timm_ref


def test_resnet_names_map_to_hub_repos():
    import timm
    refs = {r.id: (r.repo_id, m) for r, m in list_timm("resnet*")}
    names = timm.list_models("resnet*", pretrained=True)
    assert sorted(refs) == sorted(names) and len(refs) > 50
    for name, (repo, meta) in refs.items():
        assert repo == f"timm/{name}", (name, repo)  # every resnet* lives under timm/<arch>.<tag>
        assert meta["family"] == "resnet" and meta["architecture"] == name.split(".")[0]
    assert family_of("vit_base_patch16_224.augreg_in21k") == "vit"
    assert family_of("convnext_tiny.fb_in1k") == "convnext"


def test_every_results_csv_model_is_a_timm_pretrained_name():
    """The survey's timm ids are the key of timm's results CSVs (joined by the accuracy module)."""
    import timm
    path = data_dir() / "timm-results" / "results-imagenet.csv"
    with open(path) as f:
        names = {row["model"] for row in csv.DictReader(f)}
    pretrained = set(timm.list_models(pretrained=True))
    assert names <= pretrained
    refs = [timm_ref(n) for n in sorted(names)[:50]]
    assert all(r.repo_id for r in refs)


def test_url_only_weights_are_refused_with_reason():
    import timm
    from timm.models import get_pretrained_cfg
    url_only = [n for n in timm.list_models(pretrained=True) if not get_pretrained_cfg(n).hf_hub_id]
    assert url_only
    with pytest.raises(hubscan.errors.SourceError) as info:
        timm_ref(url_only[0])
    assert "not on the Hugging Face Hub" in str(info.value)


@pytest.fixture(scope="module")
def timm_hub(tmp_path_factory):
    import timm
    from safetensors.torch import save_file
    root = tmp_path_factory.mktemp("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    path = root / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with isolated_hf_client(root / "cache"), FakeHub() as hub:
        hub.add_model("timm/resnet18.a1_in1k", {"model.safetensors": path, "config.json": b'{"architecture": "resnet18"}'},
                      info={"library_name": "timm", "tags": ["timm", "image-classification"], "downloads": 5})
        hub.add_model("timm/resnet34.a1_in1k", {"model.safetensors": path}, info={"library_name": "timm",
                                                                                  "tags": ["timm"], "downloads": 3})
        yield hub, path


def test_timm_name_analyzed_through_the_hub(timm_hub):
    hub, path = timm_hub
    client = HubClient(endpoint=hub.endpoint)
    res = hubscan.analyze("timm:resnet18.a1_in1k", client=client)
    assert res.ref.id == "resnet18.a1_in1k" and res.ref.repo_id == "timm/resnet18.a1_in1k"
    assert res.ref.revision == hub.sha("timm/resnet18.a1_in1k")
    assert res.metadata["family"] == "resnet" and res.metadata["downloads"] == 5
    local = hubscan.analyze(path)
    assert [(r["name"], r["alpha"]) for r in res.rows] == [(r["name"], r["alpha"]) for r in local.rows]
    conv = next(r for r in res.rows if r["name"] == "layer1.0.conv1.weight")
    assert (conv["layer_type"], conv["N"], conv["M"], conv["rf"]) == ("conv2d", 64, 64, 9)
    # a timm name whose hub repo is absent: the error names it as typed, the repo beside it
    with pytest.raises(hubscan.errors.HubscanError) as info:
        hubscan.analyze("timm:resnet50.a1_in1k", client=client)
    assert str(info.value).startswith("timm:resnet50.a1_in1k (hf:timm/resnet50.a1_in1k): ")


def test_survey_over_the_hub_with_faults(timm_hub, tmp_path):
    """hf enumeration → survey on Ray; a 500 storm on one model fails it with its reason, a 429 on
    another is retried; the next models still run; a rerun does nothing."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from hubscan.survey import SurveyConfig, survey
    hub, path = timm_hub
    hub.add_model("org/broken", {"model.safetensors": path}, info={"downloads": 4})
    hub.add_model("org/gated", {"model.safetensors": path}, info={"downloads": 2, "gated": "auto"})
    hub.inject(lambda r: r.repo_id == "org/broken" and r.kind == "resolve" and r.method == "GET"
               and (r.range or "").startswith("bytes=0-"), status(500), times=100)
    hub.inject(lambda r: r.repo_id == "timm/resnet34.a1_in1k" and r.kind == "resolve" and r.method == "GET",
               status(429, {"Retry-After": "1"}), times=1)
    out = tmp_path / "ds"
    cfg = SurveyConfig(source="hf", out=str(out), actors=1, progress=False, limit=10,
                       hub={"endpoint": hub.endpoint, "max_retries": 1, "backoff": 0.05})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = survey(cfg)
        assert (s["num_models"], s["num_success"], s["num_failed"], s["num_skipped"]) == (4, 2, 1, 1)
        s2 = survey(cfg)
        assert s2["num_already_done"] == 3  # the failed model is retried on the next run
    finally:
        ray.shutdown()
        hub.clear_faults()
    from hubscan.query import connect
    rows = dict(connect(str(out)).execute("SELECT model_id, status || ': ' || reason FROM models").fetchall())
    assert rows["org/broken"].startswith("failed: ") and "500" in rows["org/broken"]
    assert rows["org/gated"].startswith("skipped: ") and "gated" in rows["org/gated"]
    assert rows["timm/resnet18.a1_in1k"] == "success: "
    retried = connect(str(out)).execute("SELECT retries FROM models WHERE model_id = 'timm/resnet34.a1_in1k'").fetchall()
    assert retried[0][0] >= 1


def test_timm_survey_joins_timm_results(timm_hub, tmp_path):
    """A survey of timm names served by the fake Hub, then timm's results CSVs: every surveyed name
    that the CSV lists joins (model_id = timm name), at the pretrained input size (224 here)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from hubscan.accuracy import ingest_timm_results
    from hubscan.correlate import joined
    from hubscan.survey import SurveyConfig, survey
    hub, path = timm_hub
    hub.add_model("timm/resnet50.a1_in1k", {"model.safetensors": path}, info={"library_name": "timm"})
    names = ["resnet18.a1_in1k", "resnet34.a1_in1k", "resnet50.a1_in1k"]
    listing = tmp_path / "models.txt"
    listing.write_text("".join(f"timm:{n}\n" for n in names))
    out = tmp_path / "ds"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = survey(SurveyConfig(source=f"list:{listing}", out=str(out), actors=1, progress=False,
                                hub={"endpoint": hub.endpoint}))
    finally:
        ray.shutdown()
    assert s["num_success"] == 3
    ingest_timm_results(str(out), data_dir() / "timm-results")
    df = joined(str(out), metric="top1")
    assert sorted(df["model_id"]) == names
    expected = {"resnet18.a1_in1k": 71.504, "resnet34.a1_in1k": 76.420, "resnet50.a1_in1k": 80.382}
    assert dict(zip(df["model_id"], df["accuracy"])) == pytest.approx(expected)
    assert set(df["family"]) == {"resnet"}
