"""The fake Hub under a survey's load, and its dataset repositories / write API, against the REAL
huggingface_hub 2.4 client (no hubscan code here): rate-limit windows with the Hub's IETF headers, latency,
5xx bursts, a repo deleted between listing and reading, the request log, and create_repo / create_commit /
upload / read of dataset repositories (what ``hubscan publish`` uses)."""

from __future__ import annotations

import time

import pytest

from hub_server import FakeHub, isolated_hf_client, serve

hh = pytest.importorskip("huggingface_hub")
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError  # noqa: E402
from huggingface_hub.utils import parse_ratelimit_headers  # noqa: E402

TOKEN = "hf_fake_write_token_0123456789"


@pytest.fixture
def client(tmp_path):
    with isolated_hf_client(tmp_path / "cache") as guard:
        yield guard
    assert not guard.blocked


def _models(hub: FakeHub, n: int) -> None:
    for i in range(n):
        hub.add_model(f"org/m{i}", {"config.json": b"{}", "model.safetensors": b"\0" * (100 + i)},
                      info={"downloads": 1000 - i})


def _wait_until(t: float) -> None:
    while time.monotonic() < t:
        time.sleep(0.02)


def test_rate_limit_windows_headers_and_429(client):
    with serve(rate_limits={"api": (3, 2), "resolvers": (2, 2)}) as hub:
        _models(hub, 1)
        api = HfApi(endpoint=hub.endpoint, token=False)
        session = hh.get_session()
        # let a fresh window begin, so the 4 requests below share one
        _wait_until(hub._t0 + (int((time.monotonic() - hub._t0) // 2) + 1) * 2 + 0.01)
        seen = []
        for _ in range(4):
            r = session.get(f"{hub.endpoint}/api/models/org/m0")
            seen.append((r.status_code, parse_ratelimit_headers(r.headers)))
        assert [c for c, _ in seen] == [200, 200, 200, 429]
        assert [i.remaining for _, i in seen] == [2, 1, 0, 0]
        assert all(i.resource_type == "api" and i.limit == 3 and i.window_seconds == 2 and 1 <= i.reset_in_seconds <= 2
                   for _, i in seen)
        # resolvers are a window of their own; a HEAD counts
        assert session.head(f"{hub.endpoint}/org/m0/resolve/main/config.json").status_code == 200
        # the log: one window, 4 api requests received (3 served, 1 throttled)
        counts = hub.window_counts("api")
        assert list(counts.values()) == [4] and hub.window_counts("api", status=429) == {list(counts)[0]: 1}
        assert hub.window_counts("resolvers") == {list(counts)[0]: 1}
        # the real client waits out a 429 as the header says (t + 1 s), then succeeds
        t = time.monotonic()
        assert api.list_models(limit=5) is not None and len(list(api.list_models())) == 1
        assert time.monotonic() - t >= 1
        assert max(hub.window_counts("api", status=200).values()) <= 3


def test_latency_per_kind_and_slow_redirect_target(client, tmp_path):
    blob = b"x" * 4096
    with serve(lfs_redirect=True, latency={"api": 0.0, "resolvers": 0.0, "cdn": 0.4}) as hub:
        hub.add_model("org/big", {"model.safetensors": blob, "config.json": b"{}"})
        t = time.monotonic()
        HfApi(endpoint=hub.endpoint, token=False).model_info("org/big")
        fast = time.monotonic() - t
        t = time.monotonic()
        p = hf_hub_download("org/big", "model.safetensors", endpoint=hub.endpoint, cache_dir=tmp_path / "c", token=False)
        slow = time.monotonic() - t
        assert open(p, "rb").read() == blob
        assert slow >= 0.4 > fast
        cdn = hub.requests(kind="cdn")
        assert len(cdn) == 1 and cdn[0].rate_kind is None and cdn[0].bytes_sent == len(blob)
    with serve(latency=0.3) as hub:  # a number: every request
        hub.add_model("org/x", {"config.json": b"{}"})
        t = time.monotonic()
        HfApi(endpoint=hub.endpoint, token=False).model_info("org/x")
        assert time.monotonic() - t >= 0.3


def test_burst_of_503_on_one_kind(client):
    with serve() as hub:
        _models(hub, 1)
        api = HfApi(endpoint=hub.endpoint, token=False)
        session = hh.get_session()
        inj = hub.burst(0.5, 503, kind="resolvers")
        assert session.get(f"{hub.endpoint}/org/m0/resolve/main/config.json").status_code == 503
        assert api.model_info("org/m0").id == "org/m0"  # api requests are not in this burst
        _wait_until(time.monotonic() + 0.55)
        assert session.get(f"{hub.endpoint}/org/m0/resolve/main/config.json").status_code == 200
        assert inj.fired == 1
        assert [r.status for r in hub.requests(kind="resolve")] == [503, 200]


def test_repo_deleted_between_listing_and_reading(client):
    with serve(list_page_size=2) as hub:
        _models(hub, 5)
        hub.delete_after_listing("org/m1")
        api = HfApi(endpoint=hub.endpoint, token=False)
        listed = [m.id for m in api.list_models(sort="downloads")]
        assert listed == ["org/m0", "org/m1", "org/m2", "org/m3", "org/m4"]  # pages stay whole after the deletion
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("org/m1")
        assert [m.id for m in api.list_models(sort="downloads")] == ["org/m0", "org/m2", "org/m3", "org/m4"]
        recs = hub.requests(kind="info")
        assert recs[0].status == 404 and recs[0].repo_id == "org/m1" and recs[0].rate_kind == "api"


def test_request_log_fields(client, tmp_path):
    with serve() as hub:
        _models(hub, 1)
        hf_hub_download("org/m0", "model.safetensors", endpoint=hub.endpoint, cache_dir=tmp_path / "c", token=False)
        get = hub.requests(method="GET", kind="resolve")[0]
        assert (get.repo_id, get.file, get.status, get.bytes_sent, get.rate_kind) == ("org/m0", "model.safetensors",
                                                                                     200, 100, "resolvers")
        assert 0 <= get.time < 60 and get.repo_type == "model"


def test_dataset_repos_write_and_read_with_the_real_client(client, tmp_path):
    with serve() as hub:
        hub.grant(TOKEN, write=True)
        with pytest.raises(HfHubHTTPError) as e:  # a token without write access
            HfApi(endpoint=hub.endpoint, token="hf_read_only").create_repo("org/data", repo_type="dataset")
        assert e.value.response.status_code == 403
        api = HfApi(endpoint=hub.endpoint, token=TOKEN)
        url = api.create_repo("org/data", repo_type="dataset")
        assert url == f"{hub.endpoint}/datasets/org/data"
        assert api.create_repo("org/data", repo_type="dataset", exist_ok=True) == url  # 409 → exists
        with pytest.raises(HfHubHTTPError):
            api.create_repo("org/data", repo_type="dataset")
        big = b"P" * 3000
        c1 = api.create_commit("org/data", [CommitOperationAdd("t/a.parquet", big), CommitOperationAdd("notes.txt", b"hi")],
                               commit_message="one", repo_type="dataset")
        assert hub.files("org/data", repo_type="dataset") == [".gitattributes", "notes.txt", "t/a.parquet"]
        # the parquet file went through preupload → LFS batch → PUT → verify; the text file inline
        assert [r.kind for r in hub.requests() if r.kind in ("preupload", "lfs-batch", "upload", "lfs-verify", "commit")] \
            == ["preupload", "lfs-batch", "upload", "lfs-verify", "commit"]
        assert hub.requests(kind="upload")[0].bytes_received == len(big)
        assert all(TOKEN not in str(r.headers) for r in hub.requests())
        # same content again: nothing uploaded, only a delete committed
        hub.reset_stats()
        api.create_commit("org/data", [CommitOperationAdd("t/a.parquet", big), CommitOperationDelete("notes.txt")],
                          commit_message="two", repo_type="dataset", parent_commit=c1.oid)
        assert not hub.requests(kind="upload")
        assert hub.files("org/data", repo_type="dataset") == [".gitattributes", "t/a.parquet"]
        assert len(hub.commits("org/data", repo_type="dataset")) == 3
        # a stale parent commit is refused (412), as on the Hub
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit("org/data", [CommitOperationAdd("x.txt", b"x")], commit_message="three",
                              repo_type="dataset", parent_commit=c1.oid)
        assert e.value.response.status_code == 412
        # read back: info, listing, download
        anon = HfApi(endpoint=hub.endpoint, token=False)
        assert anon.dataset_info("org/data").sha == hub.sha("org/data", repo_type="dataset")
        assert sorted(anon.list_repo_files("org/data", repo_type="dataset")) == [".gitattributes", "t/a.parquet"]
        p = hf_hub_download("org/data", "t/a.parquet", repo_type="dataset", endpoint=hub.endpoint,
                            cache_dir=tmp_path / "dl", token=False)
        assert open(p, "rb").read() == big
        # anonymous writes are refused
        with pytest.raises(HfHubHTTPError) as e:
            anon.create_commit("org/data", [CommitOperationAdd("y.txt", b"y")], commit_message="anon", repo_type="dataset")
        assert e.value.response.status_code == 401


def test_preupload_modes_follow_gitattributes_and_size(client):
    with serve() as hub:
        hub.create_repo("org/d", "dataset")
        hub.grant(TOKEN, write=True)
        r = hh.get_session().post(f"{hub.endpoint}/api/datasets/org/d/preupload/main",
                                  json={"files": [{"path": "a.parquet", "size": 10, "sample": ""},
                                                  {"path": "b.txt", "size": 10, "sample": ""},
                                                  {"path": "c.txt", "size": 11 * 1024 * 1024, "sample": ""}]},
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        assert [(f["path"], f["uploadMode"], f["oid"]) for f in r.json()["files"]] == [
            ("a.parquet", "lfs", None), ("b.txt", "regular", None), ("c.txt", "lfs", None)]
