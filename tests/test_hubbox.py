"""The hub-in-a-box generator (hubscan/demo/hubbox.py): its hand-written formats against independent
references (MLX's documented quantization unpacked bit by bit; GGUF read back by the ``gguf`` package's
reader), its config shrinking against transformers' own model classes, and (slow) the quick box served by
the fake Hub as the Hub would serve it, and mutated for week 2."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hubscan.demo import hubbox


def test_mlx_quantize_reconstructs_within_half_a_step():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 128)) + rng.uniform(-1, 1, (6, 1))).astype(np.float32)
    packed, scales, biases = hubbox.mlx_quantize(w, group_size=64, bits=4)
    assert packed.dtype == np.uint32 and packed.shape == (6, 16) and scales.shape == biases.shape == (6, 2)
    # unpack independently: value j of a word sits in bits 4j..4j+3 (first value in the lowest bits)
    q = np.stack([(packed >> np.uint32(4 * j)) & np.uint32(0xF) for j in range(8)], axis=-1).reshape(6, 2, 64)
    g = w.reshape(6, 2, 64)
    edge = np.where(np.abs(g.min(-1)) > np.abs(g.max(-1)), g.min(-1), g.max(-1))
    np.testing.assert_array_equal(biases, edge)  # the larger-magnitude edge is exact (q = 0)
    w_hat = scales[..., None] * q + biases[..., None]
    step = np.abs(scales)[..., None]
    far = biases[..., None] + 15 * scales[..., None]  # the other end of the representable range
    inside = (g >= np.minimum(biases[..., None], far) - 1e-6) & (g <= np.maximum(biases[..., None], far) + 1e-6)
    assert (np.abs(w_hat - g)[inside] <= (step / 2 + 1e-6).repeat(64, -1)[inside]).all()  # round to nearest
    # outside it (the edge made exact moved the range by < 1 step: q0 ≥ 8) values clip to its end
    assert (np.abs(w_hat - g) <= 1.5 * step).all()


def test_mlx_quantize_equals_mlx_core_quantize_bit_for_bit():
    mx = pytest.importorskip("mlx.core")
    rng = np.random.default_rng(1)
    for shape in ((8, 128), (3, 256)):
        w = (rng.standard_normal(shape) + rng.uniform(-1, 1, (shape[0], 1))).astype(np.float32)
        ref = [np.array(x) for x in mx.quantize(mx.array(w), group_size=64, bits=4)]
        for got, want in zip(hubbox.mlx_quantize(w, 64, 4), ref):
            np.testing.assert_array_equal(got, want)


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=256, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    return cfg, LlamaForCausalLM(cfg).state_dict()


def test_gguf_written_by_the_gguf_writer_reads_back(tmp_path):
    gguf = pytest.importorskip("gguf")
    cfg, state = _tiny_llama()
    files = hubbox.write_gguf(tmp_path, "m-Q8_0", state, cfg, "Q8_0")
    assert files == ["m-Q8_0.gguf"]
    r = gguf.GGUFReader(str(tmp_path / files[0]))
    tensors = {t.name: t for t in r.tensors}
    assert set(tensors) == {hubbox._gguf_name_map(cfg)[k] for k in state}
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    # Q8_0 values: the original up to the quantization step, rows of q permuted as llama.cpp does
    q = state["model.layers.0.self_attn.q_proj.weight"].numpy()
    perm = q.reshape(4, 2, 8, 64).swapaxes(1, 2).reshape(64, 64)
    deq = gguf.quants.dequantize(tensors["blk.0.attn_q.weight"].data, gguf.GGMLQuantizationType.Q8_0).reshape(64, 64)
    step = np.abs(perm).reshape(64, 2, 32).max(-1, keepdims=True) / 127
    # q = round(x / d) with d in float32, then d stored as float16: |error| ≤ d/2 + 127·|d − fp16(d)| ≤ 0.57 d
    assert (np.abs(deq - perm).reshape(64, 2, 32) <= 0.57 * step).all()
    # a row permutation keeps the singular values; quantization moves each by at most ‖error‖₂ (Weyl)
    sv_deq, sv_q = np.linalg.svd(deq, compute_uv=False), np.linalg.svd(q, compute_uv=False)
    assert np.abs(sv_deq - sv_q).max() <= np.linalg.norm(deq - perm, 2) + 1e-6
    assert r.fields["llama.block_count"].parts[-1][0] == 2
    # split: every tensor in exactly one part, the parts say how many there are
    parts = hubbox.write_gguf(tmp_path / "split", "m-Q8_0", state, cfg, "Q8_0", split_max_tensors=8) \
        if (tmp_path / "split").mkdir() is None else None
    assert len(parts) == 3 and parts[0].endswith("-00001-of-00003.gguf")
    names = [t.name for p in parts for t in gguf.GGUFReader(str(tmp_path / "split" / p)).tensors]
    assert sorted(names) == sorted(tensors) and len(names) == len(set(names))
    assert gguf.GGUFReader(str(tmp_path / "split" / parts[0])).fields["split.count"].parts[-1][0] == 3


@pytest.mark.parametrize("model_type", ["llama", "bert", "t5", "vit", "mixtral"])
def test_tiny_config_builds_small_models_of_the_real_class(model_type):
    import torch
    import transformers
    from transformers.models.auto import modeling_auto as ma
    cfg = hubbox.tiny_config(model_type)
    assert getattr(cfg, "hidden_size", getattr(cfg, "d_model", 64)) <= 64
    assert getattr(cfg, "num_hidden_layers", getattr(cfg, "num_layers", 2)) <= 2
    assert cfg.vocab_size <= 1000 if hasattr(cfg, "vocab_size") and cfg.vocab_size else True
    name = ma.MODEL_MAPPING_NAMES[model_type]
    with torch.device("meta"):
        model = getattr(transformers, name if isinstance(name, str) else name[0])._from_config(cfg)
    assert 0 < sum(p.numel() for p in model.parameters()) <= hubbox.MAX_TF_PARAMS


def test_weight_files_a_complete_analysis_reads(tmp_path):
    for name in ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "config.json",
                 "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                 "old/pytorch_model.bin", "m-00001-of-00002.gguf", "m-00002-of-00002.gguf"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert hubbox.weight_files(tmp_path) == ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf", "model.safetensors",
                                             "old/pytorch_model.bin", "unet/diffusion_pytorch_model.safetensors"]
    only_variant = tmp_path / "v"
    (only_variant / "unet").mkdir(parents=True)
    (only_variant / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
    assert hubbox.weight_files(only_variant) == ["unet/diffusion_pytorch_model.fp16.safetensors"]


def test_layout_notes_expect_alpha_null_when_no_eigenvalue_can_pass_the_threshold(tmp_path):
    import hubscan
    import torch
    from safetensors.torch import save_file
    rng = torch.Generator().manual_seed(0)
    tiny = {"a.weight": 1e-5 * torch.randn(64, 32, generator=rng), "b.weight": torch.zeros(16, 16)}
    save_file(tiny, str(tmp_path / "model.safetensors"))
    # Σ eigenvalues of WᵀW = ‖W‖²_F < 1e-5: none can exceed WeightWatcher's 1e-5 threshold
    assert all(float(torch.linalg.eigvalsh(w.double().T @ w.double()).max()) < 1e-5 for w in tiny.values())
    status, why = hubbox._layout_notes(tmp_path)
    assert status == "success" and "alpha null" in why
    res = hubscan.analyze(tmp_path)  # what the expectation says: measured, no alpha, no mean
    assert res.summary["status"] == status and math.isnan(res.summary["alpha"])
    assert [(r["status"], math.isnan(r["alpha"])) for r in res.rows] == [("success", True)] * 2
    save_file({**tiny, "c.weight": torch.randn(8, 8, generator=rng), "moe.experts.w": torch.randn(4, 8, 8, generator=rng),
               "conv.parametrizations.weight.original1": torch.randn(8, 4, 3, generator=rng)},
              str(tmp_path / "model.safetensors"))
    status, why = hubbox._layout_notes(tmp_path)
    assert status == "success" and "moe.experts.w" in why and "weight-norm" in why


# ------------------------------------------------------------------------------------ the quick box (slow)
@pytest.fixture(scope="module")
def box(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubbox")
    m = hubbox.generate(root, quick=True)
    return root, m


@pytest.mark.slow
def test_quick_box_every_kind_served_as_the_hub_serves_it(box, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from hub_server import isolated_hf_client, serve

    root, m = box
    assert set(m["counts"]) == {"transformers", "timm", "diffusers", "sentence-transformers", "derived", "reupload"}
    assert m["repos_total"] == len(m["repos"]) >= 25
    by = {r["repo_id"]: r for r in m["repos"]}
    # made by the libraries: layouts on disk
    assert (root / by["tinyfam/llama-lora"]["folder"] / "adapter_model.safetensors").is_file()
    assert json.loads((root / by["tinyfam/llama-W4A16"]["folder"] / "config.json").read_text())[
        "quantization_config"]["format"] == "pack-quantized"
    assert json.loads((root / by["mlx-community/llama-base-4bit"]["folder"] / "config.json").read_text())[
        "quantization"] == {"group_size": 64, "bits": 4}
    assert len(list((root / by["tinyfam/llama-base-GGUF-split"]["folder"]).glob("*-of-*.gguf"))) >= 2
    assert (root / by["tinydiff/tiny-sd"]["folder"] / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (root / by["tinysent/tiny-mean"]["folder"] / "modules.json").is_file()
    re_up = [r for r in m["repos"] if r["kind"] == "reupload"]
    for r in re_up:  # byte-identical weights
        for f in (root / by[r["same_as"]]["folder"]).rglob("*"):
            if f.is_file() and f.name != "README.md":
                assert (root / r["folder"] / f.relative_to(root / by[r["same_as"]]["folder"])).read_bytes() == f.read_bytes()
    gated = [r["repo_id"] for r in m["repos"] if r["hub"]["gated"]]
    gone = [r["repo_id"] for r in m["repos"] if r["hub"]["delete_after_listing"]]
    assert len(gated) == 1 and len(gone) == 1
    with isolated_hf_client(tmp_path / "cache"), serve() as hub:
        hub.add_hubbox(root)
        api = HfApi(endpoint=hub.endpoint, token=False)
        listed = list(api.list_models(sort="downloads", full=True, cardData=True))
        assert {x.id for x in listed} == set(by)
        dls = [x.downloads for x in listed]
        assert dls == sorted(dls, reverse=True) and dls[0] > 10 * dls[len(dls) // 2]  # Zipf: a heavy head
        info = {x.id: x for x in listed}
        assert "base_model:merge:tinyfam/llama-ft-a" in info["tinyfam/llama-merge"].tags
        assert "base_model:adapter:tinyfam/llama-base" in info["tinyfam/llama-lora"].tags
        ev = info["timm/test_vit.hubbox_in1k"].card_data.eval_results  # the card's model-index, parsed by the client
        assert ev and ev[0].metric_type == "top1" and ev[0].dataset_type == "imagenet-1k" and 45 <= ev[0].metric_value <= 85
        assert info["tinyfam/llama-lora"].library_name == "peft"
        with pytest.raises(GatedRepoError):
            hf_hub_download(gated[0], "config.json", endpoint=hub.endpoint, cache_dir=tmp_path / "c", token=False)
        with pytest.raises(RepositoryNotFoundError):  # listed above, deleted since
            api.model_info(gone[0])
    # week 2: revisions, new, deleted, gated — served as new commits / removals
    w2 = hubbox.mutate(root)
    c = w2["changes_count"]
    assert c["revision"] == max(1, round(0.1 * len(m["repos"]))) and c["deleted"] == 2 and c["gated"] == 1
    assert c.get("new", 0) >= 1
    with isolated_hf_client(tmp_path / "cache2"), serve() as hub:
        hub.add_hubbox(root, week=2)
        api = HfApi(endpoint=hub.endpoint, token=False)
        ids = {x.id for x in api.list_models()}
        for ch in w2["changes"]:
            if ch["change"] == "deleted":
                assert ch["repo_id"] not in ids
            elif ch["change"] == "new":
                assert ch["repo_id"] in ids
            elif ch["change"] == "revision":
                assert len(api.list_repo_commits(ch["repo_id"])) == 2
                old = (root / by[ch["repo_id"]]["folder"] / ch["files"][0]).read_bytes()
                assert hub.file_bytes(ch["repo_id"], ch["files"][0]) != old
            elif ch["change"] == "gated":
                assert api.model_info(ch["repo_id"]).gated == "manual"


@pytest.mark.slow
def test_rehearsal_on_the_quick_box_accounts_for_every_repository(box, tmp_path):
    """benchmarks/bench_rehearsal.py end to end (two Ray surveys): every repository of the box gets a verdict,
    the gated and the deleted one as the manifest expects, and the models read through the fake Hub have the
    layer rows of a local analysis of the same files."""
    import importlib.util
    from pathlib import Path
    root, m = box
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rehearsal.py"
    spec = importlib.util.spec_from_file_location("bench_rehearsal", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--box", str(root), "--work", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")])
    assert res["steps"]["survey_hub"]["rc"] == 0 and res["steps"]["survey_local"]["rc"] == 0
    assert res["survey"]["models"] == m["repos_total"]
    assert sum(res["outcomes"]["verdicts"].values()) == m["repos_total"]
    expected = {(f["status"], f["verdict"]) for f in res["outcomes"]["failures"]}
    assert ("skipped", "as expected") in expected and ("failed", "as expected") in expected  # gated, deleted
    rows = res["rows"]
    lora = sum(r["library"] == "peft" for r in m["repos"])  # the local source reads adapters as plain tensors
    split = sum(r["expect"]["needs"] == "gguf-split" for r in m["repos"])  # a folder of parts: several local models
    assert rows["models_compared"] >= res["survey"]["analyzed"] - split
    assert rows["models_equal"] >= rows["models_compared"] - lora and rows["max_abs_dalpha"] == 0.0
    assert res["requests"]["list"] == 1 and res["bytes"]["ratio"] >= 1.0
    assert json.loads((tmp_path / "r.json").read_text())["box"]["repos"] == m["repos_total"]
