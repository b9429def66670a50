"""The fake Hub (tests/hub_server.py) against the REAL huggingface_hub 2.4 client: no hubscan code here.

What these tests pin down about the client (huggingface_hub 2.4, httpx2-based):

* Retries. ``utils/_http.py::http_backoff`` retries 408/429/500/502/503/504 and timeouts / network errors /
  ``RemoteProtocolError`` (up to 5 retries, sleeping 1, 2, 4, 8, 8 s; on ``Retry-After: n`` or a 429 with
  ``RateLimit: ...;r=0;t=n`` it sleeps n + 1 s). Who uses it:
  - ``list_models`` / ``list_repo_tree`` (pagination) and ``HfFileSystem`` range reads: retried.
  - ``model_info`` / ``repo_info``, ``get_paths_info``, the two ranged GETs of
    ``parse_safetensors_file_metadata``: plain ``get_session()`` calls, NOT retried.
  - ``hf_hub_download``: the HEAD is first made without retries; on a timeout / network error / retryable
    status it is made once more *with* retries. The GET (``http_get``) retries only 408/429 statuses, but
    resumes a body cut mid-way (``Range: bytes=<got>-``) up to 5 times, sleeping 1 s each time. A 500 on the
    GET is raised at once.
* Range reads. ``HfFileSystem.open`` gives an fsspec ``readahead`` buffered file: ``read(n)`` at offset a
  fetches ``bytes=a-(a+n+block_size-1)``; the default block_size is 5 MiB, so a small read transfers ~5 MiB.
  ``block_size=0`` gives a streaming file: one open-ended GET (``bytes=<loc>-`` or none), no seeking.
  ``read()`` of a whole file from offset 0 streams it without Range.
* ``get_safetensors_metadata``: HEAD ``model.safetensors`` (file_exists); then GET ``bytes=0-100000``
  (100,001 bytes, or the whole file if smaller); if the header is larger, a second GET
  ``bytes=8-<8+n-1>``. Sharded: HEAD model.safetensors (404) → HEAD index → hf_hub_download the index →
  the same two-step read per shard.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import package_dir
from hub_server import FakeHub, cut, delay, drop, isolated_hf_client, serve, status

hh = pytest.importorskip("huggingface_hub")
httpx2 = pytest.importorskip("httpx2")
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

MINI = "sentence-transformers/all-MiniLM-L6-v2"
SILERO = "snakers4/silero-vad"
GATED = "acme/gated-model"
PRIVATE = "acme/private-model"
TOKEN = "hf_fake_granted_token_0123456789"
MiB = 1024 * 1024

EVAL_CARD = {
    "library_name": "timm",
    "license": "apache-2.0",
    "model-index": [
        {
            "name": "resnet18.a1_in1k",
            "results": [
                {
                    "task": {"type": "image-classification"},
                    "dataset": {"name": "ImageNet-1k", "type": "imagenet-1k"},
                    "metrics": [{"type": "top1", "value": 71.49, "name": "Top-1 accuracy"}],
                }
            ],
        }
    ],
}


def _st_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def _timm_like(seed: int) -> bytes:
    import torch

    g = torch.Generator().manual_seed(seed)
    return _st_bytes({
        "conv1.weight": torch.randn(8, 3, 3, 3, generator=g),
        "fc.weight": torch.randn(10, 8, generator=g),
        "fc.bias": torch.zeros(10),
    })


@pytest.fixture(scope="module")
def silero_file() -> Path:
    return package_dir("silero_vad") / "data" / "silero_vad_16k.safetensors"


@pytest.fixture(scope="module")
def hub(minilm_dir, silero_file, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-default-cache")
    with isolated_hf_client(cache_dir=cache) as guard, serve() as h:
        h.add_model_from_dir(MINI, minilm_dir, info={
            "library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
            "downloads": 5000, "likes": 50,
        })
        h.add_model(SILERO, {"model.safetensors": silero_file, "README.md": b"# silero\n"},
                    info={"downloads": 300, "likes": 7, "tags": ["audio", "safetensors"]})
        h.add_model("timm/resnet18.a1_in1k", {"model.safetensors": _timm_like(0), "config.json": b'{"architecture": "resnet18"}'},
                    info={"downloads": 900, "likes": 10, "library_name": "timm", "pipeline_tag": "image-classification",
                          "tags": ["timm", "image-classification", "safetensors"], "cardData": EVAL_CARD,
                          "config": {"model_type": "resnet"}, "createdAt": "2023-04-05T06:07:08.000Z"})
        h.add_model("timm/vit_tiny_patch16_224.augreg_in21k", {"model.safetensors": _timm_like(1)},
                    info={"downloads": 2000, "likes": 5, "library_name": "timm", "pipeline_tag": "image-classification",
                          "tags": ["timm", "image-classification"]})
        h.add_model("timm/mobilenetv3_small_050.lamb_in1k", {"model.safetensors": _timm_like(2)},
                    info={"downloads": 100, "likes": 30, "library_name": "timm", "tags": ["timm"]})
        h.add_model(GATED, {"model.safetensors": _timm_like(3), "config.json": b"{}"},
                    info={"gated": "manual", "downloads": 1, "tags": ["timm"]})
        h.add_model(PRIVATE, {"config.json": b"{}"}, info={"private": True, "tags": ["timm"]})
        h.grant(TOKEN, GATED)
        h.grant(TOKEN, PRIVATE)
        h.guard = guard
        yield h
        assert not guard.blocked, f"something tried to leave loopback: {guard.blocked}"


@pytest.fixture(autouse=True)
def _fresh(hub):
    hub.clear_faults()
    hub.reset_stats()
    yield
    hub.clear_faults()


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.endpoint, token=False)


def _fs(hub, **kw):
    return HfFileSystem(endpoint=hub.endpoint, token=False, skip_instance_cache=True, **kw)


# --------------------------------------------------------------------------------------------- listing
def test_list_models_filter_sort_limit_expand(hub, api):
    expand = ["downloads", "likes", "tags", "pipeline_tag", "library_name", "safetensors", "config", "cardData",
              "sha", "siblings", "gated", "private", "createdAt", "lastModified"]
    models = list(api.list_models(filter="timm", sort="downloads", limit=2, expand=expand))
    assert [m.id for m in models] == ["timm/vit_tiny_patch16_224.augreg_in21k", "timm/resnet18.a1_in1k"]
    resnet = models[1]
    assert resnet.downloads == 900 and resnet.likes == 10
    assert resnet.library_name == "timm" and resnet.pipeline_tag == "image-classification"
    assert "image-classification" in resnet.tags
    assert resnet.safetensors.total == 8 * 3 * 3 * 3 + 10 * 8 + 10
    assert resnet.config == {"model_type": "resnet"}
    assert resnet.sha == hub.sha("timm/resnet18.a1_in1k")
    assert [s.rfilename for s in resnet.siblings] == ["config.json", "model.safetensors"]
    assert resnet.created_at.year == 2023
    ev = resnet.card_data.eval_results  # parsed from cardData["model-index"] by the client
    assert ev and ev[0].metric_value == 71.49 and ev[0].dataset_type == "imagenet-1k"
    reqs = hub.requests(kind="list")
    assert len(reqs) == 1  # limit=2 fits one page: the client does not ask for the next one
    q = reqs[0].query
    assert q["filter"] == ["timm"] and q["sort"] == ["downloads"] and q["limit"] == ["2"]
    assert q["expand"] == expand
    # expand= returns only what was asked (plus id)
    only = next(iter(api.list_models(search="resnet18", expand=["downloads"])))
    assert only.downloads == 900 and only.likes is None and only.tags is None


def test_list_models_filters_and_link_pagination(hub, api):
    everyone = [m.id for m in api.list_models()]
    assert PRIVATE not in everyone and GATED in everyone and MINI in everyone
    assert PRIVATE in [m.id for m in HfApi(endpoint=hub.endpoint, token=TOKEN).list_models(author="acme")]
    assert [m.id for m in api.list_models(author="snakers4")] == [SILERO]
    assert [m.id for m in api.list_models(search="minilm")] == [MINI]
    assert {m.id for m in api.list_models(pipeline_tag="image-classification")} == {
        "timm/resnet18.a1_in1k", "timm/vit_tiny_patch16_224.augreg_in21k"}
    assert [m.id for m in api.list_models(filter="sentence-transformers")] == [MINI]  # library_name counts
    assert [m.id for m in api.list_models(filter=["timm", "image-classification"], sort="likes")] == [
        "timm/resnet18.a1_in1k", "timm/vit_tiny_patch16_224.augreg_in21k"]
    assert [m.id for m in api.list_models(gated=True)] == [GATED]
    default = next(iter(api.list_models(search="resnet18")))
    assert default.downloads == 900 and default.siblings is None and default.sha is None
    full = next(iter(api.list_models(search="resnet18", full=True, cardData=True, fetch_config=True)))
    assert full.sha and full.siblings and full.card_data.library_name == "timm" and full.config

    hub.reset_stats()
    old = hub.list_page_size
    hub.list_page_size = 2
    try:
        timm = [m.id for m in api.list_models(filter="timm", sort="downloads")]
    finally:
        hub.list_page_size = old
    assert timm[:3] == ["timm/vit_tiny_patch16_224.augreg_in21k", "timm/resnet18.a1_in1k",
                        "timm/mobilenetv3_small_050.lamb_in1k"] and len(timm) == 4
    assert len(hub.requests(kind="list")) == 2  # followed the Link: rel="next" header


# ------------------------------------------------------------------------------------------ model info
def test_model_info_siblings_and_metadata(hub, api, minilm_dir):
    info = api.model_info(MINI)
    assert info.sha == hub.sha(MINI) and len(info.sha) == 40
    expected = sorted(p.relative_to(minilm_dir).as_posix() for p in minilm_dir.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)
    assert sorted(s.rfilename for s in info.siblings) == expected
    assert info.safetensors.total == 22_713_728  # counted from the safetensors header
    assert info.config["model_type"] == "bert"
    assert info.card_data.library_name == "sentence-transformers"  # README.md front matter
    assert {"sentence-similarity", "feature-extraction", "safetensors"} <= set(info.tags)
    assert not any(k.startswith("_auto") for k in vars(info))
    assert info.siblings[0].size is None  # sizes only with files_metadata=True (blobs=true), as on the Hub
    detailed = {s.rfilename: s for s in api.model_info(MINI, files_metadata=True).siblings}
    st = detailed["model.safetensors"]
    assert st.size == (minilm_dir / "model.safetensors").stat().st_size
    assert st.lfs.sha256 == hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    assert detailed["config.json"].lfs is None and detailed["config.json"].size == 612
    only = api.model_info("timm/resnet18.a1_in1k", expand=["downloads", "safetensors"])
    assert only.downloads == 900 and only.safetensors.total == 306 and only.tags is None and only.sha is None
    resnet = api.model_info("timm/resnet18.a1_in1k")
    assert resnet.model_index == EVAL_CARD["model-index"]  # top-level "model-index" mirrored from the card
    assert api.model_info(GATED).gated == "manual"  # gated metadata is public; files are not


def test_revisions_branch_moves_old_sha_resolves(hub, api, tmp_path):
    repo = "acme/versioned"
    sha1 = hub.add_model(repo, {"config.json": b'{"v": 1}', "w/model.safetensors": _timm_like(5)},
                         info={"downloads": 1})
    sha2 = hub.add_model(repo, {"config.json": b'{"v": 2}'})
    sha3 = hub.add_model(repo, {"config.json": b'{"v": 3}'}, revision_sha="ab" * 20)
    assert len({sha1, sha2, sha3}) == 3 and sha3 == "ab" * 20
    assert hub.sha(repo) == sha3 and hub.sha(repo, sha1[:10]) == sha1
    assert api.model_info(repo).sha == sha3
    old = api.model_info(repo, revision=sha1)
    assert old.sha == sha1 and {s.rfilename for s in old.siblings} == {"config.json", "w/model.safetensors"}
    assert api.model_info(repo).downloads == 1  # metadata carried over to the new revision
    p_old = hf_hub_download(repo, "config.json", revision=sha1, cache_dir=tmp_path, endpoint=hub.endpoint)
    p_new = hf_hub_download(repo, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert Path(p_old).read_bytes() == b'{"v": 1}' and Path(p_new).read_bytes() == b'{"v": 3}'
    refs = tmp_path / "models--acme--versioned" / "refs"
    assert (refs / "main").read_text() == sha3 and {p.name for p in refs.iterdir()} == {"main"}
    assert [c.commit_id for c in api.list_repo_commits(repo)] == [sha3, sha2, sha1]
    assert api.list_repo_refs(repo).branches[0].target_commit == sha3
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "config.json", revision="c" * 40, cache_dir=tmp_path, endpoint=hub.endpoint)


# ---------------------------------------------------------------------------------- tree / paths-info
def test_list_repo_tree_and_paths_info(hub, api, minilm_dir):
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    top = list(api.list_repo_tree(MINI))
    assert isinstance(top[0], RepoFolder) and top[0].path == "1_Pooling"
    assert "1_Pooling/config.json" not in {e.path for e in top}
    everything = {e.path: e for e in api.list_repo_tree(MINI, recursive=True)}
    assert "1_Pooling/config.json" in everything and "1_Pooling" in everything
    assert [e.path for e in api.list_repo_tree(MINI, path_in_repo="1_Pooling")] == ["1_Pooling/config.json"]
    st = everything["model.safetensors"]
    assert isinstance(st, RepoFile) and st.size == 90_868_376 and st.lfs.size == st.size
    assert st.lfs.sha256 == hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    cfg = everything["config.json"]
    raw = (minilm_dir / "config.json").read_bytes()
    assert cfg.lfs is None and cfg.blob_id == hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()
    assert sorted(api.list_repo_files(MINI)) == sorted(p for p, e in everything.items() if isinstance(e, RepoFile))
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(MINI, path_in_repo="nope"))

    infos = api.get_paths_info(MINI, ["model.safetensors", "1_Pooling", "missing.bin"], expand=True)
    assert [i.path for i in infos] == ["model.safetensors", "1_Pooling"]  # unknown paths are left out
    assert infos[0].lfs.pointer_size > 0 and infos[0].last_commit.oid == hub.sha(MINI)
    pi = hub.requests(kind="paths-info")[0]
    assert pi.method == "POST" and pi.revision == "main"

    hub.reset_stats()
    old = hub.tree_page_size
    hub.tree_page_size = 4
    try:
        paged = [e.path for e in api.list_repo_tree(MINI, recursive=True)]
    finally:
        hub.tree_page_size = old
    assert sorted(paged) == sorted(everything) and len(hub.requests(kind="tree")) == 4  # 14 entries / 4


# ------------------------------------------------------------------------------------------ downloads
def test_hf_hub_download_into_tmp_cache(hub, silero_file, tmp_path):
    p = hf_hub_download(SILERO, "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert Path(p).read_bytes() == silero_file.read_bytes()
    assert str(tmp_path) in p and f"snapshots/{hub.sha(SILERO)}/" in p
    assert (tmp_path / "models--snakers4--silero-vad" / "refs" / "main").read_text() == hub.sha(SILERO)
    assert [(r.method, r.status) for r in hub.requests(repo_id=SILERO)] == [("HEAD", 200), ("GET", 200)]
    assert hub.bytes_sent(repo_id=SILERO, path="model.safetensors") == silero_file.stat().st_size
    hub.reset_stats()
    assert hf_hub_download(SILERO, "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint) == p
    assert [r.method for r in hub.requests()] == ["HEAD"] and hub.bytes_sent() == 0  # etag matched the cache
    hub.reset_stats()
    by_sha = hf_hub_download(SILERO, "model.safetensors", revision=hub.sha(SILERO), cache_dir=tmp_path,
                             endpoint=hub.endpoint)
    assert by_sha == p and hub.requests() == []  # a cached commit sha needs no request at all


def test_snapshot_download_allow_patterns(hub, minilm_dir, tmp_path):
    folder = snapshot_download(MINI, allow_patterns=["*.json", "1_Pooling/*"], cache_dir=tmp_path,
                               endpoint=hub.endpoint)
    got = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
    want = sorted(p.relative_to(minilm_dir).as_posix() for p in minilm_dir.rglob("*.json"))
    assert got == want
    kinds = [r.kind for r in hub.requests()]
    assert kinds[:2] == ["info", "tree"] and "model.safetensors" not in {r.file for r in hub.requests()}


# ------------------------------------------------------------------------------------------ range reads
def test_hffs_range_read_small_block(hub, minilm_dir):
    data = (minilm_dir / "model.safetensors").read_bytes()
    fs = _fs(hub)
    with fs.open(f"{MINI}/model.safetensors", "rb", block_size=1024) as f:
        f.seek(1_000_000)
        assert f.read(4096) == data[1_000_000:1_004_096]
        assert f.read(512) == data[1_004_096:1_004_608]  # served from the read-ahead, no request
    gets = hub.requests(method="GET", kind="resolve")
    assert [(r.range, r.status) for r in gets] == [("bytes=1000000-1005119", 206)]  # n + block_size
    assert hub.bytes_sent(repo_id=MINI, path="model.safetensors") == 4096 + 1024
    # before the read: repo_info (resolve_path) and the parent listing (size for fsspec)
    assert [r.kind for r in hub.requests()] == ["info", "tree", "resolve"]


def test_hffs_default_block_reads_ahead_5mib(hub, minilm_dir):
    fs = _fs(hub)
    with fs.open(f"{MINI}/model.safetensors", "rb") as f:
        f.seek(8)
        f.read(100)
    (get,) = hub.requests(method="GET", kind="resolve")
    assert get.range == f"bytes=8-{8 + 100 + 5 * MiB - 1}" and get.bytes_sent == 100 + 5 * MiB


def test_hffs_streaming_block_size_0(hub, silero_file):
    fs = _fs(hub)
    with fs.open(f"{SILERO}/model.safetensors", "rb", block_size=0) as f:
        head = f.read(8)
        with pytest.raises(ValueError):
            f.seek(100)
    assert head == silero_file.read_bytes()[:8]
    (get,) = hub.requests(method="GET", kind="resolve")
    assert get.range is None  # one open-ended GET from the current position


def test_get_safetensors_metadata_minilm_and_silero(hub, minilm_dir, silero_file):
    from safetensors import safe_open

    for repo, local in ((MINI, minilm_dir / "model.safetensors"), (SILERO, silero_file)):
        hub.reset_stats()
        md = HfApi(endpoint=hub.endpoint, token=False).get_safetensors_metadata(repo)
        tensors = md.files_metadata["model.safetensors"].tensors
        with safe_open(str(local), framework="pt") as f:
            assert set(tensors) == set(f.keys())
            for k in f.keys():
                assert tensors[k].shape == list(f.get_slice(k).get_shape())
        reqs = hub.requests(repo_id=repo)
        assert [(r.method, r.range) for r in reqs] == [("HEAD", None), ("GET", "bytes=0-100000")]
        assert reqs[1].bytes_sent == min(100_001, local.stat().st_size)
    (n,) = struct.unpack("<Q", (minilm_dir / "model.safetensors").read_bytes()[:8])
    assert n == 11408  # MiniLM's header fits in the first 100 kB


def test_get_safetensors_metadata_big_header_second_range(hub):
    import torch

    repo = "acme/many-tensors"
    blob = _st_bytes({f"blocks.{i}.a_rather_long_parameter_name.weight": torch.zeros(2, 2) for i in range(1500)})
    (n,) = struct.unpack("<Q", blob[:8])
    assert n > 100_000
    hub.add_model(repo, {"model.safetensors": blob})
    md = HfApi(endpoint=hub.endpoint, token=False).get_safetensors_metadata(repo)
    assert len(md.files_metadata["model.safetensors"].tensors) == 1500
    assert [r.range for r in hub.requests(repo_id=repo, method="GET")] == ["bytes=0-100000", f"bytes=8-{n + 7}"]


def test_sharded_safetensors_metadata(hub, tmp_path):
    import torch

    repo = "acme/sharded"
    s1 = _st_bytes({"a.weight": torch.zeros(4, 3)})
    s2 = _st_bytes({"b.weight": torch.zeros(5, 2)})
    index = {"metadata": {"total_size": 68}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                            "b.weight": "model-00002-of-00002.safetensors"}}
    hub.add_model(repo, {"model.safetensors.index.json": json.dumps(index).encode(),
                         "model-00001-of-00002.safetensors": s1, "model-00002-of-00002.safetensors": s2})
    api = HfApi(endpoint=hub.endpoint, token=False)
    md = api.get_safetensors_metadata(repo)  # downloads the index into constants.HF_HUB_CACHE (a tmp dir here)
    assert md.sharded and md.metadata == {"total_size": 68} and md.parameter_count == {"F32": 22}
    assert api.model_info(repo).safetensors.total == 22
    one_shot = api.get_sharded_safetensors_metadata(repo)
    assert one_shot.weight_map == md.weight_map and one_shot.parameter_count == {"F32": 22}


def test_range_edge_cases_raw_http(hub, silero_file):
    data = silero_file.read_bytes()
    url = f"{hub.endpoint}/{SILERO}/resolve/main/model.safetensors"

    def get(rng):
        req = urllib.request.Request(url, headers={"Range": rng} if rng else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    st, h, body = get("bytes=-10")
    assert st == 206 and body == data[-10:] and h["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
    st, h, body = get(f"bytes={len(data) - 5}-")
    assert st == 206 and body == data[-5:]
    st, h, body = get(f"bytes=100-{len(data) * 2}")  # clamped
    assert st == 206 and body == data[100:]
    st, h, _ = get(f"bytes={len(data)}-")
    assert st == 416 and h["Content-Range"] == f"bytes */{len(data)}"
    st, _, body = get("bytes=0-1,5-6")  # multi-range: ignored, whole file
    assert st == 200 and body == data
    st, h, body = get(None)
    assert st == 200 and h["X-Repo-Commit"] == hub.sha(SILERO) and h["Accept-Ranges"] == "bytes"
    assert h["X-Linked-Size"] == str(len(data)) and h["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    served = [r.served for r in hub.requests(method="GET")]
    assert served[0] == (len(data) - 10, len(data) - 1) and served[3] is None


# --------------------------------------------------------------------------------------- errors / auth
def test_not_found_errors_map_to_client_exceptions(hub, api, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/does-not-exist", "config.json", cache_dir=tmp_path, endpoint=hub.endpoint)
    with pytest.raises(RemoteEntryNotFoundError) as e:
        hf_hub_download(MINI, "nope.bin", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert isinstance(e.value, EntryNotFoundError)
    assert (tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2" / ".no_exist" / hub.sha(MINI) / "nope.bin").exists()
    assert api.file_exists(MINI, "config.json") and not api.file_exists(MINI, "nope.bin")
    assert not api.file_exists("acme/does-not-exist", "config.json")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_tree(MINI, revision="nope").__next__()
    fs = _fs(hub)
    with pytest.raises(FileNotFoundError):
        fs.open("acme/does-not-exist/config.json")
    assert all(r.headers.get("Authorization") is None for r in hub.requests())


def test_gated_and_private_repos(hub, tmp_path):
    with pytest.raises(GatedRepoError) as e:
        hf_hub_download(GATED, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token=False)
    assert e.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as e:
        hf_hub_download(GATED, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token="hf_wrong")
    assert e.value.response.status_code == 403
    with pytest.raises(GatedRepoError):
        HfApi(endpoint=hub.endpoint, token=False).get_safetensors_metadata(GATED)
    p = hf_hub_download(GATED, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token=TOKEN)
    assert Path(p).read_bytes() == b"{}"
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).model_info(PRIVATE)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token="hf_wrong").model_info(PRIVATE)
    assert HfApi(endpoint=hub.endpoint, token=TOKEN).model_info(PRIVATE).private is True
    # the log knows a token was sent but never its value
    recs = hub.requests()
    assert any(r.authorized for r in recs)
    assert TOKEN not in repr(recs) and "hf_wrong" not in repr(recs)
    assert {r.headers.get("Authorization") or r.headers.get("authorization") for r in recs if r.authorized} == {
        "<redacted>"}


# --------------------------------------------------------------------------------------------- faults
def test_429_on_list_models_is_retried_by_the_client(hub, api):
    inj = hub.inject("/api/models?", status(429, {"Retry-After": "0"}), times=1)
    t = time.monotonic()
    assert len(list(api.list_models(filter="timm", limit=1))) == 1
    assert time.monotonic() - t >= 1.0  # Retry-After 0 → the client sleeps 0 + 1 s
    assert inj.fired == 1 and [r.status for r in hub.requests(kind="list")] == [429, 200]


def test_429_and_5xx_where_the_client_does_not_retry(hub, api):
    hub.inject(f"/api/models/{MINI}", status(429, {"Retry-After": "1"}), times=1)
    with pytest.raises(HfHubHTTPError) as e:
        api.model_info(MINI)  # plain get_session().get: no backoff
    assert e.value.response.status_code == 429
    assert api.model_info(MINI).sha == hub.sha(MINI)  # the fault fired once only
    hub.inject("model.safetensors", status(500), times=1, method="GET")
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(endpoint=hub.endpoint, token=False).get_safetensors_metadata(SILERO)
    assert e.value.response.status_code == 500


def test_hf_hub_download_recovers_from_head_503_and_get_429(hub, silero_file, tmp_path):
    head = hub.inject("silero-vad/resolve", status(503), times=1, method="HEAD")
    get = hub.inject("silero-vad/resolve", status(429, {"Retry-After": "1"}), times=1, method="GET")
    t = time.monotonic()
    p = hf_hub_download(SILERO, "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint)
    took = time.monotonic() - t
    assert Path(p).read_bytes() == silero_file.read_bytes()
    assert head.fired == get.fired == 1 and hub.faults_fired() == 2
    assert [(r.method, r.status) for r in hub.requests(repo_id=SILERO)] == [
        ("HEAD", 503), ("HEAD", 200), ("GET", 429), ("GET", 200)]
    assert took >= 2.0  # Retry-After: 1 → sleeps 1 + 1 s


def test_get_500_is_not_retried_by_hf_hub_download(hub, tmp_path):
    hub.inject("silero-vad/resolve", status(500), times=1, method="GET")
    with pytest.raises(HfHubHTTPError) as e:
        hf_hub_download(SILERO, "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert e.value.response.status_code == 500
    assert not list((tmp_path / "models--snakers4--silero-vad" / "blobs").glob("*[!e]"))  # nothing complete


def test_cut_download_restarts_or_resumes(hub, silero_file, minilm_dir, tmp_path):
    # http_get reads the body in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE); bytes of an unfinished chunk
    # are lost when the connection drops, so a cut inside the first 10 MiB restarts from 0 (no Range) ...
    inj = hub.inject("silero-vad/resolve/main/model.safetensors", cut(300_000), times=1)
    p = hf_hub_download(SILERO, "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert Path(p).read_bytes() == silero_file.read_bytes() and inj.fired == 1
    gets = hub.requests(method="GET", repo_id=SILERO)
    assert gets[0].status == 200 and gets[0].bytes_sent == 300_000 and gets[0].error.startswith("cut")
    assert (gets[1].range, gets[1].status) == (None, 200)
    assert hub.bytes_sent(repo_id=SILERO) == silero_file.stat().st_size + 300_000
    # ... and a later cut resumes at the last whole chunk with Range: bytes=<n·10 MiB>-
    inj = hub.inject("MiniLM-L6-v2/resolve/main/model.safetensors", cut(12 * MiB), times=1)
    p = hf_hub_download(MINI, "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert inj.fired == 1
    assert hashlib.sha256(Path(p).read_bytes()).hexdigest() == hashlib.sha256(
        (minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    gets = hub.requests(method="GET", repo_id=MINI)
    assert [(g.range, g.status) for g in gets] == [(None, 200), (f"bytes={10 * MiB}-", 206)]
    assert hub.bytes_sent(repo_id=MINI) == 90_868_376 + 2 * MiB


def test_cut_is_a_read_error_without_retry_and_retried_in_hffs(hub, minilm_dir):
    hub.inject("MiniLM-L6-v2/resolve", cut(10), times=1, method="GET")
    with pytest.raises(httpx2.RemoteProtocolError):
        HfApi(endpoint=hub.endpoint, token=False).get_safetensors_metadata(MINI)
    # HfFileSystem range reads go through http_backoff, which retries RemoteProtocolError after 1 s
    inj = hub.inject("MiniLM-L6-v2/resolve", cut(100), times=1, method="GET")
    with _fs(hub).open(f"{MINI}/model.safetensors", "rb", block_size=1) as f:
        f.seek(500)
        assert f.read(1000) == (minilm_dir / "model.safetensors").read_bytes()[500:1500]
    assert inj.fired == 1
    # a streaming HfFileSystem file re-opens once (Range: bytes=<loc>-), then gives up
    hub.inject("MiniLM-L6-v2/resolve", cut(10), times=2, method="GET")
    with pytest.raises(httpx2.RemoteProtocolError):
        with _fs(hub).open(f"{MINI}/model.safetensors", "rb", block_size=0) as f:
            f.read(100)


def test_delay_times_out_then_succeeds(hub, api, tmp_path):
    hub.inject(f"/api/models/{MINI}", delay(3), times=1)
    t = time.monotonic()
    with pytest.raises(httpx2.TimeoutException):
        api.model_info(MINI, timeout=0.3)
    assert time.monotonic() - t < 2
    assert api.model_info(MINI, timeout=5).sha == hub.sha(MINI)
    # hf_hub_download: a HEAD that times out is retried (with retries) before giving up
    inj = hub.inject("MiniLM-L6-v2/resolve/main/config.json", delay(3), times=1, method="HEAD")
    p = hf_hub_download(MINI, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, etag_timeout=0.3)
    assert Path(p).name == "config.json" and inj.fired == 1


def test_drop_and_predicate_match(hub, api):
    hub.inject(lambda r: r.kind == "resolve" and r.file == "README.md" and r.method == "GET", drop(), times=1)
    with pytest.raises(httpx2.RemoteProtocolError):
        # get_session() is the client's shared httpx2 client: a bare GET has no retry
        hh.utils.get_session().get(f"{hub.endpoint}/{SILERO}/resolve/main/README.md")
    assert hub.faults_fired() == 1 and hub.requests()[0].status == 0


# -------------------------------------------------------------------------------------- CDN redirects
def test_lfs_redirect_to_another_origin(silero_file, minilm_dir, tmp_path):
    models = {SILERO: ({"model.safetensors": silero_file, "config.json": b"{}"}, None), MINI: minilm_dir}
    with FakeHub(models, lfs_redirect=True) as h:
        assert h.cdn_endpoint != h.endpoint
        p = hf_hub_download(SILERO, "model.safetensors", cache_dir=tmp_path, endpoint=h.endpoint)
        assert Path(p).read_bytes() == silero_file.read_bytes()
        seq = [(r.kind, r.method, r.status) for r in h.requests()]
        # HEAD stops at the 302 (other origin: metadata from X-Linked-*); GET follows it to the "CDN"
        # (hf_hub_download GETs the Location of the HEAD's 302 directly, saving a redirect)
        assert seq == [("resolve", "HEAD", 302), ("cdn", "GET", 200)]
        assert h.bytes_sent(repo_id=SILERO, path="model.safetensors") == silero_file.stat().st_size
        h.reset_stats()
        md = HfApi(endpoint=h.endpoint, token=False).get_safetensors_metadata(SILERO)
        assert len(md.files_metadata["model.safetensors"].tensors) == 15
        assert [(r.kind, r.range) for r in h.requests(method="GET")] == [
            ("resolve", "bytes=0-100000"), ("cdn", "bytes=0-100000")]
        cfg = hf_hub_download(SILERO, "config.json", cache_dir=tmp_path, endpoint=h.endpoint)
        assert Path(cfg).read_bytes() == b"{}"  # non-LFS files are served directly


def test_concurrent_downloads_and_accounting(hub, minilm_dir, tmp_path):
    names = ["config.json", "vocab.txt", "tokenizer.json", "1_Pooling/config.json", "modules.json"]
    errors = []

    def fetch(name, i):
        try:
            hf_hub_download(MINI, name, cache_dir=tmp_path / str(i), endpoint=hub.endpoint)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=fetch, args=(n, i)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n in names:
        assert hub.bytes_sent(repo_id=MINI, path=n) == (minilm_dir / n).stat().st_size
    assert hub.bytes_sent(repo_id=MINI) == sum((minilm_dir / n).stat().st_size for n in names)
    assert len(hub.requests(method="HEAD")) == len(names)
