"""Typing tensors by the module that owns them (:mod:`hubscan.weights.modules`).

Small transformers and timm models are built here, saved as their libraries save them
(``save_pretrained``: config.json beside the weights) and read back by hubscan. The reference for each
row's type is the live model's own module tree (the class of the module that owns the parameter), for
its numbers WeightWatcher 0.7.7 on the live model (where WW analyzes the layer) or numpy on the live
tensor (fused experts, per-head projections, Conv3d, weight norm: layers WW does not see or reads as
3-D arrays).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import hubscan
from hubscan.analysis import AnalyzeOptions, analyze_together
from hubscan.esd.matrices import CONV_NORM
from hubscan.sources import open_model
from hubscan.weights.modules import ModuleMap, TensorKind, types_from_config, types_from_module

transformers = pytest.importorskip("transformers")
ww = pytest.importorskip("weightwatcher")
from torch.nn.utils import parametrize  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

#: layer_type a row gets for a weight owned by a module of this class.
EXPECTED_TYPE = {"Linear": "dense", "Conv1D": "dense", "Embedding": "embedding", "Conv1d": "conv1d",
                 "Conv2d": "conv2d", "Conv3d": "conv3d"}


def built(model_class, config, path):
    """``model_class(config)`` (seed 0) saved with ``save_pretrained`` (safetensors + config.json) and read
    back by ``hubscan.analyze``: (model, result, rows by key), every row checked typed by its module and
    the model ``success``."""
    torch.manual_seed(0)
    model = model_class(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    result = hubscan.analyze(path, keep_evals=True)
    rows = {r.key: r for r in result.rows}
    assert_typed_by_module(model, path, rows)
    assert result.summary["status"] == "success", result.summary["reason"]
    return model, result, rows


def owners(model, path) -> dict:
    """Saved name → (live parameter name, class of the module that owns it), matched by content (the
    saved names may be the library's legacy ones); a parametrized weight's owner is its host module."""
    from safetensors.torch import load_file

    live = {}
    for mname, mod in model.named_modules():
        host = mname.rsplit(".parametrizations.", 1)[0] if ".parametrizations." in mname else None
        owner = model.get_submodule(host) if host else mod
        for attr, p in mod.named_parameters(recurse=False):
            live[f"{mname}.{attr}" if mname else attr] = (p.detach(), parametrize.type_before_parametrizations(owner).__name__)
    out = {}
    for key, t in load_file(str(path / "model.safetensors")).items():
        hits = [n for n, (p, _) in live.items() if p.shape == t.shape and p.dtype == t.dtype and torch.equal(p, t)]
        if hits:
            n = max(hits, key=lambda n: sum(1 for a, b in zip(reversed(n.split(".")), reversed(key.split("."))) if a == b))
            out[key] = (n, live[n][1])
    return out


def assert_typed_by_module(model, path, rows):
    """Every row of a saved tensor the live model holds is typed by module, with the owner's class, and a
    weight of a standard module gets its layer type."""
    checked = 0
    for key, (_, cls) in owners(model, path).items():
        for r in (r for r in rows.values() if r.name == key):
            assert (r.typed_by, r.module_type) == ("module", cls), (r.name, r.typed_by, r.module_type, cls)
            if cls in EXPECTED_TYPE and r.status == "success":
                assert r.layer_type == EXPECTED_TYPE[cls], r.name
            checked += 1
    assert checked >= 3


def ww_alphas(model, path) -> dict:
    """WW's alpha per saved name (its layers' weights matched to the saved tensors by content)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = ww.WeightWatcher(model=model).analyze()
    saved_of = {n: key for key, (n, _) in owners(model, path).items()}
    return {saved_of[w["longname"] + ".weight"]: w["alpha"] for _, w in df.iterrows()
            if w["longname"] + ".weight" in saved_of}


def assert_ww_equal(model, path, rows, min_layers):
    """alpha equal to WW's (1e-8) on every 2-D and Conv2d layer both analyze (fits on fewer than 20
    eigenvalues left out: WW 0.7.7 switches to a small-sample estimator there, README)."""
    matched = 0
    for name, alpha in ww_alphas(model, path).items():
        r = rows.get(name)
        if r is None or r.status != "success" or r.layer_type not in ("dense", "embedding", "conv2d") \
                or r["num_fit_evals"] < 20:
            continue
        assert r["alpha"] == pytest.approx(alpha, abs=1e-8), name
        matched += 1
    assert matched >= min_layers


def pooled_evals(slices: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Eigenvalues of the pooled ESD of (rf, a, b) slices (numpy SVD), ascending."""
    ev = np.concatenate([np.linalg.svd(s.astype(np.float64), compute_uv=False) ** 2 for s in slices]) * scale
    return np.sort(ev)


# --------------------------------------------------------------------------------------------------
def test_vit_position_table_and_tokens_by_module(tmp_path):
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8)
    model, result, rows = built(transformers.ViTModel, cfg, tmp_path)
    pos, cls = rows["embeddings.position_embeddings"], rows["embeddings.cls_token"]
    assert (pos.status, pos.reason, pos.module_type) == ("skipped", "not a weight matrix (position table)",
                                                         "ViTEmbeddings")
    assert cls.reason == "not a weight matrix (learned tokens)"
    assert rows["embeddings.patch_embeddings.projection.weight"].layer_type == "conv2d"
    assert_ww_equal(model, tmp_path, rows, min_layers=7)


def test_gpt2_conv1d_typed_by_module_equal_to_ww(tmp_path):
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=120, n_positions=64)
    model, result, rows = built(transformers.GPT2LMHeadModel, cfg, tmp_path)
    c_attn = rows["transformer.h.0.attn.c_attn.weight"]
    assert (c_attn.module_type, c_attn.layer_type, c_attn.N, c_attn.M) == ("Conv1D", "dense", 96, 32)
    assert rows["transformer.wte.weight"].layer_type == "embedding"
    assert_ww_equal(model, tmp_path, rows, min_layers=8)


def test_lm_head_is_dense_by_module_and_by_name(tmp_path):
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=96, tie_word_embeddings=False)
    model, _, rows = built(transformers.LlamaForCausalLM, cfg, tmp_path / "m")
    assert (rows["lm_head.weight"].layer_type, rows["lm_head.weight"].module_type) == ("dense", "Linear")
    assert rows["model.embed_tokens.weight"].layer_type == "embedding"
    # a model analyzed with its base in one pass (the survey's path) is typed as when analyzed alone
    built(transformers.LlamaForCausalLM, cfg, tmp_path / "base")
    opened = open_model(tmp_path / "m", base=tmp_path / "base", own=True)
    own, delta = analyze_together(opened.own, opened.weights, AnalyzeOptions())
    assert [(r.key, r.typed_by, r.module_type) for r in own.rows] == [(k, r.typed_by, r.module_type)
                                                                     for k, r in rows.items()]
    assert {r.typed_by for r in delta.rows} == {"module"}
    tmp_path = tmp_path / "m"
    (tmp_path / "config.json").unlink()  # the names alone
    by_name = {r.key: r for r in hubscan.analyze(tmp_path).rows}
    assert by_name["lm_head.weight"].layer_type == "dense" and by_name["lm_head.weight"].typed_by == "name"
    assert by_name["model.embed_tokens.weight"].layer_type == "embedding"
    assert {r.key: r["alpha"] for r in rows.values()} == pytest.approx({k: r["alpha"] for k, r in by_name.items()},
                                                                       nan_ok=True)


def test_mixtral_experts_saved_unfused_typed_by_the_fused_container(tmp_path):
    """transformers v5 keeps Mixtral's experts fused ((E, 2I, H) gate_up_proj) and saves them unfused
    (``block_sparse_moe.experts.e.w1/w2/w3``): each piece is typed by the fused container, and its
    eigenvalues are those of the live fused slice."""
    cfg = transformers.MixtralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                     num_key_value_heads=1, vocab_size=64, num_local_experts=3, num_experts_per_tok=2)
    model, _, rows = built(transformers.MixtralForCausalLM, cfg, tmp_path)
    experts = model.model.layers[0].mlp.experts
    assert type(experts).__name__ == "MixtralExperts" and experts.gate_up_proj.shape == (3, 96, 32)
    for e in range(3):
        w1 = rows[f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight"]
        w2 = rows[f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight"]
        assert (w1.typed_by, w1.module_type, w1.layer_type) == ("module", "MixtralExperts", "dense")
        gate = experts.gate_up_proj[e, :48].detach().numpy()  # w1 is the gate half
        down = experts.down_proj[e].detach().numpy()
        assert w1["lambda_max"] == pytest.approx(np.linalg.svd(gate.astype(np.float64), compute_uv=False)[0] ** 2,
                                                 rel=1e-9)
        assert w2["lambda_max"] == pytest.approx(np.linalg.svd(down.astype(np.float64), compute_uv=False)[0] ** 2,
                                                 rel=1e-9)
    router = rows["model.layers.0.block_sparse_moe.gate.weight"]
    assert router.typed_by == "module" and router.layer_type == "dense"


def test_gpt_oss_fused_experts_one_row_per_expert_biases_not_weights(tmp_path):
    cfg = transformers.GptOssConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=1, head_dim=16, vocab_size=64, num_local_experts=3,
                                    num_experts_per_tok=2, layer_types=["full_attention"])
    model, result, rows = built(transformers.GptOssForCausalLM, cfg, tmp_path)
    stack = model.model.layers[0].mlp.experts.gate_up_proj.detach().numpy()
    for e in range(3):
        r = rows[f"model.layers.0.mlp.experts.gate_up_proj:{e}"]
        assert (r.layer_type, r.module_type, r.rf) == ("dense", "GptOssExperts", 1)
        np.testing.assert_allclose(result.evals[r.key], pooled_evals(stack[e:e + 1]), rtol=1e-9, atol=1e-12)
    bias = rows["model.layers.0.mlp.experts.gate_up_proj_bias"]
    assert (bias.status, bias.reason) == ("skipped", "not a weight matrix (bias)")


def test_wav2vec2_weight_norm_conv_is_the_effective_weight(tmp_path):
    """pos_conv_embed: a weight-normed Conv1d with a kernel (16) wider than its output channels (8) at this
    width: typed by module, analyzed as the effective weight g·v/‖v‖ the module uses."""
    cfg = transformers.Wav2Vec2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                      conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    model, result, rows = built(transformers.Wav2Vec2Model, cfg, tmp_path)
    prefix = "encoder.pos_conv_embed.conv.parametrizations.weight."
    v, g = rows[prefix + "original1"], rows[prefix + "original0"]
    assert (v.layer_type, v.module_type, v.rf, v.status) == ("conv1d", "Conv1d", 16, "success")
    assert "effective weight" in v.reason
    assert (g.status, g.reason) == ("skipped", "not a weight matrix (weight-norm magnitude)")
    W = model.encoder.pos_conv_embed.conv.weight.detach().numpy()  # the parametrization's output
    np.testing.assert_allclose(result.evals[v.key], pooled_evals(W.transpose(2, 0, 1), CONV_NORM), rtol=1e-5)


def test_videomae_conv3d_pooled_slices(tmp_path):
    cfg = transformers.VideoMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                      image_size=16, patch_size=8, num_frames=4, tubelet_size=2)
    model, result, rows = built(transformers.VideoMAEModel, cfg, tmp_path)
    r = rows["embeddings.patch_embeddings.projection.weight"]
    W = model.embeddings.patch_embeddings.projection.weight.detach().numpy()  # (32, 3, 2, 8, 8)
    assert (r.layer_type, r.module_type, r.N, r.M, r.rf) == ("conv3d", "Conv3d", 32, 3, 128)
    slices = W.transpose(2, 3, 4, 0, 1).reshape(128, 32, 3)  # W[:, :, t, i, j], t, i, j row-major
    np.testing.assert_allclose(result.evals[r.key], pooled_evals(slices, CONV_NORM), rtol=1e-9, atol=1e-14)
    assert_ww_equal(model, tmp_path, rows, min_layers=6)


def test_xlnet_per_head_projection_is_one_matrix(tmp_path):
    cfg = transformers.XLNetConfig(d_model=32, n_layer=1, n_head=2, d_inner=64, vocab_size=80)
    model, result, rows = built(transformers.XLNetModel, cfg, tmp_path)
    q = rows["layer.0.rel_attn.q"]
    W = model.layer[0].rel_attn.q.detach().numpy()  # (D, H, d_head) = (32, 2, 16)
    assert (q.layer_type, q.N, q.M, q.rf) == ("dense", 32, 32, 1)
    np.testing.assert_allclose(result.evals[q.key], pooled_evals(W.reshape(1, 32, 32)), rtol=1e-9, atol=1e-12)
    assert rows["layer.0.rel_attn.r_w_bias"].reason == "not a weight matrix (bias)"
    assert rows["layer.0.rel_attn.seg_embed"].reason == "not a weight matrix (segment table)"


# --------------------------------------------------------------------------------------------------
timm = pytest.importorskip("timm")


def test_timm_on_meta_typed_by_module():
    found = types_from_config({"architecture": "vit_tiny_patch16_224", "num_classes": 10})
    assert found is not None
    t = found.types
    assert t["pos_embed"] == TensorKind("not_a_weight", "VisionTransformer", "pos_embed", "position table",
                                        (1, 197, 192))
    assert t["cls_token"].role == "learned tokens"
    assert (t["patch_embed.proj.weight"].kind, t["patch_embed.proj.weight"].module) == ("conv2d", "Conv2d")
    assert (t["blocks.0.attn.qkv.weight"].kind, t["head.weight"].shape) == ("linear", (10, 192))
    assert types_from_config({"architecture": "no_such_model_xyz"}) is None
    # model_args that would make timm read a file (or the network) are not passed on
    shallow = types_from_config({"architecture": "vit_tiny_patch16_224", "model_args": {
        "depth": 1, "checkpoint_path": "/no/such/file.pth", "pretrained_cfg_overlay": {"file": "/no/such"}}})
    assert "blocks.0.attn.qkv.weight" in shallow.types and "blocks.1.attn.qkv.weight" not in shallow.types
    assert types_from_config({"model_type": "no_such_type", "auto_map": {"AutoModel": "x.Y"}}) is None


def test_timm_folder_typed_by_module_equal_to_ww(tmp_path):
    from safetensors.torch import save_file

    args = {"depth": 2, "img_size": 32, "patch_size": 8, "embed_dim": 48, "num_heads": 2}
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **args).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 10,
                                                      "model_args": args}))
    result = hubscan.analyze(tmp_path)
    rows = {r.key: r for r in result.rows}
    assert_typed_by_module(model, tmp_path, rows)
    assert rows["pos_embed"].reason == "not a weight matrix (position table)"
    assert_ww_equal(model, tmp_path, rows, min_layers=9)


def test_building_a_config_leaves_the_process_as_it_was():
    """The meta-device build skips torch's weight initialisation (as from_pretrained does) and silences
    transformers while it runs: afterwards a model built by the caller is initialised as before, the logger
    keeps its level, and tied weights are typed as the model ties them (Marian: decoder.embed_tokens is
    ``shared``, 1000 × 64, not a 58,101-row table of its own)."""
    import logging

    from hubscan.weights.modules import build_meta

    lg = logging.getLogger("transformers")
    before = lg.level
    kaiming = torch.nn.init.kaiming_uniform_
    cfg = transformers.MarianConfig(vocab_size=1000, decoder_vocab_size=58101, d_model=64, encoder_layers=1,
                                    decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                                    encoder_ffn_dim=64, decoder_ffn_dim=64, pad_token_id=999,
                                    max_position_embeddings=32).to_dict()
    found = types_from_config(cfg)
    assert found.types["decoder.embed_tokens.weight"].shape == (1000, 64)
    assert build_meta({"model_type": "bert", "hidden_size": "not a number"}) is None  # fails: logged, undone too
    assert torch.nn.init.kaiming_uniform_ is kaiming and lg.level == before
    torch.manual_seed(0)
    assert float(torch.nn.Linear(64, 64).weight.std()) == pytest.approx(1 / 64 ** 0.5 / 3 ** 0.5, rel=0.1)  # U(±1/√fan_in)


def test_typing_in_a_fresh_process_prints_no_transformers_warning(tmp_path):
    """A config transformers warns about (an eos_token_id outside the vocabulary) typed in a process that has
    not imported transformers yet: its first import sets its logger's level, which must not undo the
    silencing (stderr empty: ``-q`` prints nothing but errors)."""
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=50256,
                                  eos_token_id=50256)
    transformers.GPT2Model(cfg).save_pretrained(tmp_path / "g2")
    code = ("import hubscan, sys; r = hubscan.analyze(sys.argv[1]); "
            "print(r.summary['status'], sum(x.typed_by == 'module' for x in r.rows))")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g2")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    status, typed = p.stdout.split()
    assert status == "success" and int(typed) > 0, p.stdout  # typed by its modules: the config was built
    assert "transformers" not in p.stderr and "eos_token_id" not in p.stderr, p.stderr


def test_types_from_a_live_module():
    """The interface for models handed in memory: any nn.Module, parametrizations included."""
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(8, 16)
            self.attn = torch.nn.MultiheadAttention(16, 2)
            self.conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(16, 16, 3))
            self.latents = torch.nn.Parameter(torch.zeros(4, 16))
            self.proj = torch.nn.Parameter(torch.zeros(16, 32))
            self.register_buffer("mask", torch.zeros(16, 16))

    types = types_from_module(Block())
    assert types["rnn.weight_ih_l0"] == TensorKind("linear", "LSTM", "weight_ih_l0", "", (64, 8))
    assert types["attn.in_proj_weight"].kind == types["attn.out_proj.weight"].kind == "linear"
    assert (types["conv.parametrizations.weight.original1"].kind, types["conv.parametrizations.weight.original1"].module) \
        == ("conv1d", "Conv1d")
    assert types["conv.parametrizations.weight.original0"].role == "weight-norm magnitude"
    assert (types["latents"].role, types["mask"].role, types["proj"].kind) == ("learned tokens", "buffer", "parameter")
    saved_shapes = {"model.rnn.weight_ih_l0": (64, 8), "rnn.weight_hh_l0": (9, 9), "backbone.attn.out_proj.weight": (16, 16)}
    matched = ModuleMap(types, prefixes=("model",)).match(saved_shapes)
    assert set(matched) == {"model.rnn.weight_ih_l0", "backbone.attn.out_proj.weight"}  # prefix; suffix; wrong shape


def test_every_kind_is_one_the_planner_reads():
    from hubscan.esd.matrices import KINDS

    found = types_from_config({"architecture": "resnet18"}).types
    found.update(types_from_module(transformers.XLNetModel(transformers.XLNetConfig(d_model=16, n_layer=1, n_head=2,
                                                                                     d_inner=16, vocab_size=20))))
    assert {k.kind for k in found.values()} <= set(KINDS)
