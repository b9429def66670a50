"""Hub and timm sources through the real ``huggingface_hub`` client against the loopback fake Hub
(``tests/hub_server.py``) serving real weights: range reads, pinning, file choice, faults."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hub_server import FakeHub, cut, isolated_hf_client, status
from conftest import package_dir, safetensors_needed_bytes

import hubscan
from hubscan.errors import GatedModelError, NoWeightsError, SourceError, UnsafeFileError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef, parse_ref
from hubscan.sources.hf import choose_files, list_hf

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SILERO = "snakers4/silero-vad"


@pytest.fixture(scope="module")
def hub(minilm_dir, tmp_path_factory):
    silero = package_dir("silero_vad") / "data" / "silero_vad_16k.safetensors"
    card = ("---\nlicense: apache-2.0\nmodel-index:\n- name: m\n  results:\n  - task: {type: sentence-similarity}\n"
            "    dataset: {type: stsb, name: STS-B, split: test}\n    metrics:\n    - {type: spearman, value: 82.0}\n---\n")
    with isolated_hf_client(tmp_path_factory.mktemp("hfcache")), FakeHub() as h:
        h.add_model_from_dir(MINILM, minilm_dir, info={"downloads": 1000, "likes": 50,
                                                       "pipeline_tag": "sentence-similarity",
                                                       "library_name": "sentence-transformers"})
        h.add_model(SILERO, {"silero_vad_16k.safetensors": silero, "README.md": card.encode()},
                    info={"downloads": 10, "library_name": "silero-vad"})
        yield h


@pytest.fixture
def client(hub, tmp_path):
    return HubClient(endpoint=hub.endpoint, max_retries=3, backoff=0.1, cache_dir=None)


def rows(result):
    return {(r["name"], r["part"]): r for r in result.rows}


def test_hf_analysis_equals_local_and_reads_only_what_it_needs(hub, client, minilm_dir):
    hub.reset_stats()
    remote = hubscan.analyze(f"hf:{MINILM}", client=client)
    local = hubscan.analyze(minilm_dir)
    assert remote.ref.revision == hub.sha(MINILM) and remote.ref.files == ("model.safetensors",)
    assert remote.metadata["downloads"] == 1000 and remote.metadata["model_type"] == "bert"
    r, l = rows(remote), rows(local)
    assert r.keys() == l.keys()
    for key in l:
        for col in ("status", "N", "M", "alpha", "D", "xmin", "log_norm", "log_spectral_norm", "num_pl_spikes",
                    "phase", "stable_rank", "entropy"):
            a, b = r[key].get(col), l[key].get(col)
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (key, col, a, b)
    # bytes: header + the ≥ 2-D tensors (the analysis never fetches biases / norms)
    blob = (minilm_dir / "model.safetensors").read_bytes()
    needed = safetensors_needed_bytes(minilm_dir / "model.safetensors")
    sent = hub.bytes_sent(repo_id=MINILM, path="model.safetensors")
    assert remote.summary["bytes_read"] == sent or remote.summary["bytes_read"] <= sent
    assert sent <= 1.05 * needed, (sent, needed, sent / needed)
    assert sent < len(blob)  # never the whole file


def test_revision_pinning_and_new_revision(hub, client, minilm_dir):
    from hubscan.sources import resolve
    old = hub.sha(MINILM)
    ref, _ = resolve(f"hf:{MINILM}@main", client)
    assert ref.revision == old
    files = {p.name: p for p in minilm_dir.iterdir() if p.is_file()}
    new = hub.add_model(MINILM, files)
    try:
        ref2, _ = resolve(f"hf:{MINILM}", client)
        assert ref2.revision == new != old
        pinned, _ = resolve(f"hf:{MINILM}@{old}", client)  # the old commit stays readable
        assert pinned.revision == old
        assert hubscan.analyze(pinned, client=client).summary["status"] == "success"
    finally:
        hub.add_model(MINILM, files, revision_sha=old)


def test_list_models_with_metadata(hub, client):
    listed = list(list_hf(client, sort="downloads", limit=5))
    assert [r.id for r, _ in listed] == [MINILM, SILERO]
    ref, meta = listed[1]
    assert ref.revision == hub.sha(SILERO) and ref.files == ("silero_vad_16k.safetensors",)
    assert meta["eval_results"] == [{"task": "sentence-similarity", "dataset": "stsb", "dataset_name": "STS-B",
                                     "split": "test", "metric": "spearman", "value": 82.0}]
    assert [r.id for r, _ in list_hf(client, filter="sentence-transformers")] == [MINILM]


def test_choose_files_preference():
    assert choose_files(["model.safetensors", "pytorch_model.bin", "model.onnx"]) == (("model.safetensors",), "safetensors")
    assert choose_files(["model.safetensors.index.json", "model-00001-of-00002.safetensors"]) == \
        (("model.safetensors.index.json",), "safetensors")
    assert choose_files(["pytorch_model.bin", "onnx/model.onnx", "training_args.bin"]) == (("pytorch_model.bin",), "torch")
    assert choose_files(["onnx/model.onnx", "onnx/model_quantized.onnx", "model.gguf"]) == (("onnx/model.onnx",), "onnx")
    assert choose_files(["x-Q4_K_M.gguf", "README.md"]) == (("x-Q4_K_M.gguf",), "gguf")
    assert choose_files(["adapter_model.safetensors", "adapter_config.json"]) == (("adapter_model.safetensors",), "safetensors")
    with pytest.raises(NoWeightsError):
        choose_files(["README.md", "config.json"])
    with pytest.raises(UnsafeFileError):
        choose_files(["../../etc/model.safetensors"])


def test_whole_file_format_downloaded_and_cache_removed(hub, client, cases_dir, tmp_path):
    hub.add_model("org/torch-only", {"pytorch_model.bin": cases_dir / "nested_checkpoint.pt"})
    cache = tmp_path / "cache"
    c = HubClient(endpoint=hub.endpoint, cache_dir=str(cache))
    res = hubscan.analyze("hf:org/torch-only", client=c)
    assert res.format == "torch" and rows(res)[("enc.weight", "")]["status"] == "success"
    assert res.summary["bytes_read"] == os.path.getsize(cases_dir / "nested_checkpoint.pt")
    # a temporary cache is removed after the model; --cache-dir keeps files in the user's cache
    tmp_client = HubClient(endpoint=hub.endpoint)
    import tempfile
    before = set(os.listdir(tempfile.gettempdir()))
    hubscan.analyze("hf:org/torch-only", client=tmp_client)
    assert not {d for d in set(os.listdir(tempfile.gettempdir())) - before if d.startswith("hubscan-cache-")}


def test_bad_files_on_the_hub_one_line_errors(hub, client, cases_dir):
    hub.add_model("org/truncated", {"model.safetensors": cases_dir / "truncated.safetensors"})
    hub.add_model("org/huge-header", {"model.safetensors": cases_dir / "header_length_huge.safetensors"})
    hub.add_model("org/shape-larger", {"model.safetensors": cases_dir / "shape_larger_than_data.safetensors"})
    hub.add_model("org/sharded-missing", {p.name: p for p in (cases_dir / "sharded_missing_shard").iterdir()})
    hub.add_model("org/no-weights", {"README.md": b"hello"})
    for repo, frag in (("org/truncated", "shorter"), ("org/huge-header", "exceeds"), ("org/shape-larger", "needs")):
        hub.reset_stats()
        with pytest.raises(hubscan.errors.CorruptFileError) as info:
            hubscan.analyze(f"hf:{repo}", client=client)
        assert frag in str(info.value) and "\n" not in str(info.value)
        assert hub.bytes_sent(repo_id=repo) < 2000  # refused from the header, before reading the data
    res = hubscan.analyze("hf:org/sharded-missing", client=client)
    assert res.summary["status"] == "incomplete" and [n for n, _ in res.missing] == ["l1.weight"]
    with pytest.raises(NoWeightsError):
        hubscan.analyze("hf:org/no-weights", client=client)


@pytest.mark.parametrize("fault,expect", [
    (status(404), "not found"),
    (status(401, {"X-Error-Code": "GatedRepo"}), "gated"),
])
def test_model_info_errors(hub, client, fault, expect):
    hub.inject(f"/api/models/{SILERO}", fault, times=1)
    with pytest.raises(SourceError) as info:
        hubscan.analyze(f"hf:{SILERO}", client=client)
    assert expect in str(info.value).lower()
    assert isinstance(info.value, GatedModelError) == (expect == "gated")
    hub.clear_faults()


def test_gated_repo_skipped_without_token_and_read_with_it(hub, client, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    hub.add_model("org/gated", {"model.safetensors": hub.file_bytes(SILERO, "silero_vad_16k.safetensors")},
                  info={"gated": "manual"})
    with pytest.raises(GatedModelError):
        hubscan.analyze("hf:org/gated", client=client)
    hub.grant("hf_test_token_123", "org/gated")
    authed = HubClient(endpoint=hub.endpoint, token="hf_test_token_123")
    res = hubscan.analyze("hf:org/gated", client=authed)
    assert res.summary["status"] == "success"
    assert any(r.authorized for r in hub.requests(repo_id="org/gated"))
    # the token is never logged nor part of any result or repr
    assert "hf_test_token_123" not in caplog.text + repr(authed) + repr(res.ref) + str(res.summary) + str(res.rows)


@pytest.mark.parametrize("fault", [status(429, {"Retry-After": "1"}), status(503), cut(100)])
def test_transient_faults_are_retried_and_counted(hub, fault):
    c = HubClient(endpoint=hub.endpoint, max_retries=3, backoff=0.1)
    hub.inject(lambda rec: rec.kind == "resolve" and rec.method == "GET" and (rec.range or "").startswith("bytes=")
               and rec.repo_id == SILERO and rec.file == "silero_vad_16k.safetensors"
               and not rec.range.startswith("bytes=0-"), fault, times=1)
    res = hubscan.analyze(f"hf:{SILERO}", client=c)
    assert res.summary["status"] == "success"
    assert hub.faults_fired() >= 1 and c.total_retries() >= 1
    hub.clear_faults()


def test_model_info_429_retried_honouring_retry_after(hub, monkeypatch):
    import hubscan.hub as hubmod
    slept = []
    real_sleep = hubmod.time.sleep
    monkeypatch.setattr(hubmod.time, "sleep", lambda s: (slept.append(s), real_sleep(s)))
    c = HubClient(endpoint=hub.endpoint, max_retries=2, backoff=5.0)
    hub.inject(f"/api/models/{SILERO}", status(429, {"Retry-After": "1"}), times=1)
    hubscan.analyze(f"hf:{SILERO}", client=c)
    assert slept == [1.0]  # waited Retry-After (1 s), not the 5 s backoff
    assert c.retries == 1
    hub.inject(f"/api/models/{SILERO}", status(500), times=10)
    with pytest.raises(SourceError) as info:
        hubscan.analyze(f"hf:{SILERO}", client=HubClient(endpoint=hub.endpoint, max_retries=2, backoff=0.05))
    assert "HTTP 500" in str(info.value) and "after 2 retries" in str(info.value)
    hub.clear_faults()


def test_cli_hf_analyze(hub, capsys):
    from hubscan.cli import main
    assert main(["analyze", f"hf:{SILERO}", "--endpoint", hub.endpoint, "-q"]) == 0
    assert main(["analyze", "hf:org/does-not-exist", "--endpoint", hub.endpoint, "--max-retries", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "org/does-not-exist" in err[0] and "not found" in err[0]


def test_parse_ref():
    assert parse_ref("hf:org/name@abc") == ModelRef("hf", "org/name", "abc", (), "org/name")
    assert parse_ref("timm:resnet18.a1_in1k") == ModelRef("timm", "resnet18.a1_in1k")
    assert parse_ref("local:/x/y").id == "/x/y" and parse_ref("/x/y").source == "local"
    for bad in ("hf:", "hf:../etc", "hf:a/b/c", "timm:"):
        with pytest.raises(ValueError):
            parse_ref(bad)


def test_stalled_server_times_out_and_is_retried(hub):
    from hub_server import delay
    c = HubClient(endpoint=hub.endpoint, timeout=1.0, max_retries=2, backoff=0.05)
    try:
        hub.inject(f"/api/models/{SILERO}", delay(5), times=1)
        import time
        t0 = time.monotonic()
        res = hubscan.analyze(f"hf:{SILERO}", client=c)
        assert res.summary["status"] == "success" and c.retries >= 1
        assert time.monotonic() - t0 < 5  # bounded: did not wait for the stalled answer
    finally:
        hub.clear_faults()
        HubClient(endpoint=hub.endpoint)  # restore the default timeout for the other tests


def test_offline_mode_reads_the_cache_only(hub, tmp_path):
    from huggingface_hub import snapshot_download
    cache = tmp_path / "cache"
    snapshot_download(SILERO, cache_dir=str(cache), endpoint=hub.endpoint)
    hub.reset_stats()
    c = HubClient(endpoint=hub.endpoint, offline=True, cache_dir=str(cache), keep_cache=True)
    res = hubscan.analyze(f"hf:{SILERO}", client=c)
    assert res.summary["status"] == "success" and res.ref.revision == hub.sha(SILERO)
    assert hub.requests() == []  # nothing asked of the network
    with pytest.raises(SourceError) as info:
        hubscan.analyze(f"hf:{MINILM}", client=c)  # not in the cache
    assert "offline" in str(info.value)


def _case_files(path: Path) -> dict:
    if path.is_dir():
        files = {p.name: p for p in path.iterdir() if p.is_file()}
        return files if any(n != "README.md" for n in files) else {"README.md": b"no weights here"}
    name = "model.safetensors" if path.suffix == ".safetensors" else "pytorch_model.bin"
    return {name: path}


def test_every_bad_input_case_behaves_the_same_through_the_hub(hub, client, cases_dir, tmp_path, monkeypatch):
    """The shared corpus through the hub source: the same rows and statuses, or the same kind of
    one-line error, as the local files (EXPECTED.md); the malicious pickle never runs."""
    monkeypatch.chdir(tmp_path)
    cases = sorted(p for p in cases_dir.iterdir() if p.name not in ("EXPECTED.md", "SOURCE.md", "llm", "hub-r3"))  # llm/: test_layouts; hub-r3/: test_format_cases_r3
    assert len(cases) >= 25
    for case in cases:
        repo = "cases/" + case.name.replace(".", "-")
        hub.add_model(repo, _case_files(case))
        try:
            local = hubscan.analyze(case)
        except hubscan.errors.HubscanError as exc:
            local = exc
        try:
            remote = hubscan.analyze(f"hf:{repo}", client=client)
        except hubscan.errors.HubscanError as exc:
            remote = exc
        if isinstance(local, Exception):
            assert isinstance(remote, Exception), (case.name, remote)
            assert type(remote) is type(local), (case.name, local, remote)
            assert "\n" not in str(remote) and repo in str(remote) or "cases" in str(remote)
        else:
            assert not isinstance(remote, Exception), (case.name, remote)
            assert [(r["name"], r["status"]) for r in remote.rows] == [(r["name"], r["status"]) for r in local.rows]
            assert sorted(n for n, _ in remote.missing) == sorted(n for n, _ in local.missing), case.name
            assert remote.summary["status"] == local.summary["status"]
    assert not (tmp_path / "hubscan_pickle_was_executed").exists()


def test_sentence_transformers_modules_are_read_locally_and_through_the_hub(hub, client, tmp_path):
    """A model saved by sentence-transformers itself (BERT + Pooling + Dense + Normalize): the Dense module's
    weight (``2_Dense/model.safetensors``, listed in ``modules.json``) is analyzed beside the transformer's, its
    row named ``2_Dense/linear.weight``, with alpha equal to WeightWatcher's ``WWFit`` on numpy's eigenvalues of
    the matrix the library loads back; the same rows locally and through the Hub."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    WWFit = pytest.importorskip("weightwatcher.WW_powerlaw").WWFit
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefgh"]) + "\n")
    BertTokenizerFast(str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=13, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=32)).save_pretrained(bert)
    tr = models.Transformer(str(bert), max_seq_length=16)
    dense = models.Dense(64, 96, activation_function=torch.nn.Tanh())
    SentenceTransformer(modules=[tr, models.Pooling(64, "mean"), dense, models.Normalize()]).save(str(tmp_path / "st"))
    st = tmp_path / "st"
    assert (st / "2_Dense" / "model.safetensors").is_file() and not any((st / "1_Pooling").glob("*.safetensors"))

    local = hubscan.analyze(st)
    dense = rows(local)[("2_Dense/linear.weight", "")]
    W = SentenceTransformer(str(st), device="cpu")[2].linear.weight.detach().double().numpy()  # (96, 64)
    ev = np.linalg.svd(W, compute_uv=False) ** 2
    assert (dense["status"], dense["N"], dense["M"]) == ("success", 96, 64)
    assert dense["alpha"] == pytest.approx(WWFit(np.sort(ev[ev > 1e-5])).alpha, rel=1e-9)
    assert dense["lambda_max"] == pytest.approx(ev[0], rel=1e-10)
    assert local.summary["status"] == "success" and "2_Dense/model.safetensors" not in local.metadata["files_not_read"]
    names = [r["name"] for r in local.rows]
    assert len(names) == len(set(names)) and not any(n.startswith(("1_Pooling/", "3_Normalize/")) for n in names)

    hub.add_model_from_dir("tinysent/st-dense", st)
    remote = hubscan.analyze("hf:tinysent/st-dense", client=client)
    assert remote.ref.files == ("model.safetensors", "2_Dense/model.safetensors")
    r, loc = rows(remote), rows(local)
    assert r.keys() == loc.keys()
    for key in loc:
        for col in ("status", "N", "M", "alpha", "D", "lambda_max", "phase", "layer_type"):
            a, b = r[key][col], loc[key][col]
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (key, col, a, b)
