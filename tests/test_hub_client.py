"""The Hub client and remote reads against the loopback fake Hub: fail fast when the Hub is unreachable,
coalesced streamed range reads (requests and bytes per model), the ``RateLimit`` wait rule with an
injected clock, and no per-model ``model_info`` when a listing pinned the models."""

from __future__ import annotations

import math
import socket
import time

import pytest

from hub_server import FakeHub, isolated_hf_client, status
from conftest import package_dir, safetensors_needed_bytes

import hubscan
from hubscan.errors import HubUnreachableError
from hubscan.hub import HubClient, server_wait
from hubscan.weights.remote import coalesce

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SILERO = "snakers4/silero-vad"
RATELIMIT = {"RateLimit": '"resolvers";r=0;t=55', "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300'}


@pytest.fixture(scope="module")
def hub(minilm_dir, tmp_path_factory):
    silero = package_dir("silero_vad") / "data" / "silero_vad_16k.safetensors"
    with isolated_hf_client(tmp_path_factory.mktemp("hfcache")), FakeHub() as h:
        h.add_model_from_dir(MINILM, minilm_dir, info={"downloads": 1000})
        h.add_model(SILERO, {"silero_vad_16k.safetensors": silero}, info={"downloads": 10})
        yield h


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections are refused


def test_unreachable_hub_fails_fast_in_one_line(hub, caplog, capsys, tmp_path):
    import logging
    from hubscan.cli import main
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    expected = f"cannot reach the Hub at {endpoint} (offline? set HF_HUB_OFFLINE=1 to use the cache)"
    caplog.set_level(logging.WARNING)
    t0 = time.monotonic()
    with pytest.raises(HubUnreachableError) as info:
        hubscan.analyze("hf:org/does-not-exist", client=HubClient(endpoint=endpoint))
    assert time.monotonic() - t0 < 3.0  # no retries, no backoff sleeps (huggingface_hub's alone: 23 s)
    assert str(info.value) == f"hf:org/does-not-exist: {expected}"
    # the CLI: analyze and survey, one line each, no retry warnings before it
    t0 = time.monotonic()
    assert main(["analyze", "hf:org/does-not-exist", "--endpoint", endpoint]) == 1
    assert main(["survey", "--source", "hf", "--out", str(tmp_path / "ds"), "--endpoint", endpoint,
                 "--no-progress"]) == 1
    assert time.monotonic() - t0 < 6.0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("hubscan: error: ") and expected in line for line in err)
    assert err[0].endswith(expected) and err[1].startswith("hubscan: error: hf: ")  # the survey names its source
    assert err[1].endswith(f"{expected}: the survey stopped before writing any model (a later run is unaffected)")
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]
    assert not (tmp_path / "ds").exists()  # nothing created


def test_a_library_call_leaves_the_callers_http_client_alone(hub, minilm_dir):
    """hubscan.analyze installs nothing process-wide: a host program's huggingface_hub client factory (its
    proxy, its timeouts) survives a local analysis and a hub one; hubscan's own range reads are still counted."""
    import httpx2
    from huggingface_hub import get_session, set_client_factory

    from hubscan.hub import install_http_client

    made = []

    def mine():
        made.append(httpx2.Client(follow_redirects=True))
        return made[-1]

    set_client_factory(mine)
    try:
        session = get_session()
        assert hubscan.analyze(minilm_dir).summary["status"] == "success"
        assert get_session() is session and made == [session]
        hub.reset_stats()
        remote = hubscan.analyze(f"hf:{MINILM}", client=HubClient(endpoint=hub.endpoint))
        assert get_session() is session and made == [session]  # model_info went through the caller's client
        weights = hub.requests(repo_id=MINILM, path="model.safetensors")
        assert remote.summary["requests"] == len(weights) + len(hub.requests(repo_id=MINILM, path="config.json"))
    finally:
        install_http_client(30.0)  # as the CLI would (an entry point)


def test_server_wait_rule():
    assert server_wait(RATELIMIT, 429) == 55.0  # RateLimit, quota spent: wait its reset time
    assert server_wait({"RateLimit": '"api";r=12;t=55'}, 429) is None  # quota left: plain backoff
    assert server_wait({"Retry-After": "7"}, 503) == 7.0
    assert server_wait({"RateLimit": '"api";r=0;t=55'}, 503) is None  # RateLimit only speaks for a 429
    assert server_wait({"Retry-After": "100000"}, 429) == 300.0  # capped at the Hub's window
    assert server_wait({}, 429) is None


@pytest.mark.parametrize("target", ["info", "range"])
def test_ratelimit_429_waited_out_as_the_header_says(hub, target):
    """A 429 carrying only ``RateLimit: "resolvers";r=0;t=55`` waits 55 s — on an injected clock."""
    slept = []
    c = HubClient(endpoint=hub.endpoint, max_retries=2, backoff=0.01, sleep=slept.append)
    if target == "info":
        match = f"/api/models/{SILERO}"
    else:
        def match(rec):  # a tensor range, not the header reads
            return (rec.kind == "resolve" and rec.repo_id == SILERO and rec.method == "GET"
                    and (rec.range or "").startswith("bytes=") and not rec.range.startswith(("bytes=0-", "bytes=8-")))
    hub.inject(match, status(429, RATELIMIT), times=1)
    t0 = time.monotonic()
    res = hubscan.analyze(f"hf:{SILERO}", client=c)
    assert time.monotonic() - t0 < 20  # nothing really slept 55 s
    assert res.summary["status"] == "success" and hub.faults_fired() == 1
    assert slept == [55.0] and c.retries == 1
    hub.clear_faults()


def test_coalesce_rule():
    mib = 1 << 20
    assert coalesce([(0, 10), (10, 20)]) == [(0, 20)]  # touching
    assert coalesce([(0, 100), (100 + mib, 200 + mib)]) == [(0, 200 + mib)]  # gap of 1 MiB: merged
    assert coalesce([(0, 100), (101 + mib, 200 + mib)]) == [(0, 100), (101 + mib, 200 + mib)]  # just over
    big = 200 * mib  # a 2 MiB gap is ≤ 2 % of a 200 MiB span: merged
    assert coalesce([(0, big), (big + 2 * mib, big + 3 * mib)]) == [(0, big + 3 * mib)]
    assert coalesce([(50, 60), (0, 10)]) == [(0, 60)]  # any order in, sorted out


def test_minilm_through_the_hub_coalesced(hub, minilm_dir):
    """≤ 4 requests to model.safetensors, bytes ≤ 1.05 × the tensors needed, rows identical to the folder."""
    hub.reset_stats()
    client = HubClient(endpoint=hub.endpoint)
    remote = hubscan.analyze(f"hf:{MINILM}", client=client)
    local = hubscan.analyze(minilm_dir)
    reqs = hub.requests(repo_id=MINILM, path="model.safetensors")
    assert 1 <= len(reqs) <= 4, [(r.method, r.range) for r in reqs]
    config = hub.requests(repo_id=MINILM, path="config.json")  # typing tensors by module, as the folder does
    assert len(config) == 1 and remote.summary["requests"] == len(reqs) + 1  # counted as the server saw them
    needed = safetensors_needed_bytes(minilm_dir / "model.safetensors")
    sent = hub.bytes_sent(repo_id=MINILM, path="model.safetensors")
    assert remote.summary["bytes_read"] <= sent <= 1.05 * needed, (sent, needed)
    assert [(r["layer_id"], r["name"], r["part"]) for r in remote.rows] == \
        [(r["layer_id"], r["name"], r["part"]) for r in local.rows]
    for a, b in zip(remote.rows, local.rows):
        for col, va in a.items():
            if col in ("seconds",):
                continue
            vb = b[col]
            assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), (a["name"], col, va, vb)


def test_skipped_tensor_in_the_middle_is_jumped_over(hub, tmp_path):
    """A large tensor the analysis skips (4 eigenvalues < min_evals here) is not streamed: the stream
    closes before it and a new range starts after it (what is on the wire when it closes is the only waste)."""
    import torch
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(0)
    tensors = {"a.weight": torch.randn(64, 48, generator=g), "b.embed": torch.randn(1_250_000, 4, generator=g),
               "c.weight": torch.randn(48, 64, generator=g)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    hub.add_model("org/skip-middle", {"model.safetensors": path})
    hub.reset_stats()
    res = hubscan.analyze("hf:org/skip-middle", client=HubClient(endpoint=hub.endpoint))
    assert [r["status"] for r in res.rows] == ["success", "skipped", "success"]
    big = 1_250_000 * 4 * 4  # 20 MB
    assert hub.bytes_sent(repo_id="org/skip-middle") < path.stat().st_size - big // 2


def test_hub_survey_makes_no_model_info_call_when_the_listing_pinned_it(hub, tmp_path):
    import os
    import ray
    from hubscan.survey import SurveyConfig, survey
    os.environ["RAY_AUTH_MODE"] = "disabled"
    hub.reset_stats()
    cfg = SurveyConfig(source="hf", out=str(tmp_path / "ds"), actors=1, progress=False, keep_esd=False,
                       hub={"endpoint": hub.endpoint})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = survey(cfg)
    finally:
        ray.shutdown()
    assert s["num_success"] >= 2
    assert len(hub.requests(kind="list")) == 1
    assert hub.requests(kind="info") == []  # sha and siblings came with the listing
    assert len(hub.requests(repo_id=MINILM, path="model.safetensors")) <= 4
    # the models table records each model's requests as the server saw them; the surveys row sums them
    from hubscan.query import connect
    con = connect(str(tmp_path / "ds"))
    per_model = dict(con.execute("SELECT model_id, requests FROM models").fetchall())
    for repo in (MINILM, SILERO):
        assert per_model[repo] == len(hub.requests(repo_id=repo)), repo
    assert s["requests"] == sum(per_model.values())
