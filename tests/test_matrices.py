"""Layer planning rules (hubscan.esd.matrices): types, N/M orientation, conv slices, splits, skips."""

import pytest
import torch

from hubscan.esd.matrices import CONV_NORM, plan_matrices


def one(name, shape, dtype="float32", **kw):
    plans = plan_matrices(name, shape, dtype, **kw)
    assert len(plans) == 1
    return plans[0]


def test_dense_and_embedding_orientation():
    p = one("h.0.mlp.c_fc.weight", (64, 256))  # GPT-2 Conv1D stored (in, out)
    assert (p.layer_type, p.N, p.M, p.rf, p.Q) == ("dense", 256, 64, 1, 4.0)
    e = one("model.embed_tokens.weight", (128256, 4096))
    assert (e.layer_type, e.N, e.M, e.skip_reason) == ("embedding", 128256, 4096, None)  # not skipped


def test_conv2d_slices_oriented_and_normalised():
    W = torch.randn(64, 32, 2, 2)
    p = one("conv.weight", W.shape)
    assert (p.layer_type, p.N, p.M, p.rf, p.eig_scale) == ("conv2d", 64, 32, 4, CONV_NORM)  # WW reports N=32, M=64 here
    S = p.extract(W)
    assert S.shape == (4, 64, 32)
    assert torch.equal(S[1], W[:, :, 0, 1])


def test_conv2d_channels_last_detected():
    W = torch.randn(3, 3, 16, 64)  # (kh, kw, in, out) Keras layout
    p = one("conv.kernel", W.shape)
    assert (p.N, p.M, p.rf) == (64, 16, 9)
    assert torch.equal(p.extract(W)[4], W[1, 1])


def test_conv1d_per_tap():
    W = torch.randn(128, 32, 5)
    p = one("conv1d.weight", W.shape)
    assert (p.layer_type, p.N, p.M, p.rf) == ("conv1d", 128, 32, 5)
    assert torch.equal(p.extract(W)[2], W[:, :, 2])


def test_conv_slices_option_keeps_one_plan_per_slice():
    plans = plan_matrices("conv.weight", (64, 32, 3, 3), "float32", conv_slices=True)
    assert [p.part for p in plans] == [f"{i},{j}" for i in range(3) for j in range(3)]
    W = torch.randn(64, 32, 3, 3)
    assert torch.equal(plans[5].extract(W)[0], W[:, :, 1, 2])


@pytest.mark.parametrize("name,shape,parts,block", [
    ("encoder.layers.0.self_attn.in_proj_weight", (96, 32), "qkv", (32, 32)),
    ("blocks.0.attn.qkv.weight", (576, 192), "qkv", (192, 192)),
    ("h.0.attn.c_attn.weight", (64, 192), "qkv", (64, 64)),
])
def test_split_fused_attention(name, shape, parts, block):
    plans = plan_matrices(name, shape, "float32", split_fused=True)
    assert "".join(p.part for p in plans) == parts
    W = torch.randn(*shape)
    blocks = [p.extract(W)[0] for p in plans]
    assert all(tuple(b.shape) == block for b in blocks)
    axis = 1 if name.endswith("c_attn.weight") else 0
    assert torch.equal(torch.cat(blocks, dim=axis), W)
    assert len(plan_matrices(name, shape, "float32")) == 1  # default: analyzed as stored


def test_split_rnn_gates_lstm_and_gru():
    lstm = {"rnn.weight_ih_l0": (256, 40), "rnn.weight_hh_l0": (256, 64)}
    plans = plan_matrices("rnn.weight_ih_l0", lstm["rnn.weight_ih_l0"], "float32", split_fused=True, sibling_shapes=lstm)
    assert [p.part for p in plans] == list("ifgo") and plans[0].N == 64 and plans[0].M == 40
    gru = {"gru.weight_ih_l0": (192, 40), "gru.weight_hh_l0": (192, 64)}
    plans = plan_matrices("gru.weight_hh_l0", gru["gru.weight_hh_l0"], "float32", split_fused=True, sibling_shapes=gru)
    assert [p.part for p in plans] == list("rzn")


@pytest.mark.parametrize("shape,dtype,reason", [
    ((128,), "float32", "1-D"),
    ((0, 128), "float32", "empty"),
    ((1, 512), "int64", "integer buffer"),
    ((32, 256), "int32", "quantized"),
    ((256, 128), "int8", "quantized"),
    ((2, 384), "float32", "too few eigenvalues"),
    ((512, 1, 10), "float32", "too few eigenvalues"),
])
def test_skips(shape, dtype, reason):
    p = plan_matrices("x.weight", shape, dtype)[0]
    assert p.skip_reason is not None and reason in p.skip_reason


def test_max_evals_option():
    assert "too many" in one("w", (20000, 16000), max_evals=15000).skip_reason
    assert one("w", (20000, 16000)).skip_reason is None


def test_conv3d_kernel_positions_pooled():
    W = torch.randn(16, 3, 2, 4, 4)  # Conv3d (out, in, kt, kh, kw), a video patch embedding
    p = one("patch_embed.proj.weight", W.shape)
    assert (p.layer_type, p.N, p.M, p.rf, p.eig_scale) == ("conv3d", 16, 3, 32, CONV_NORM)
    S = p.extract(W)
    assert S.shape == (32, 16, 3) and torch.equal(S[1 * 16 + 2 * 4 + 3], W[:, :, 1, 2, 3])
    parts = plan_matrices("patch_embed.proj.weight", W.shape, "float32", conv_slices=True)
    assert parts[27].part == "1,2,3" and torch.equal(parts[27].extract(W)[0], W[:, :, 1, 2, 3])
    six = one("x", (2, 2, 2, 2, 2, 2))
    assert "unsupported 6-D" in six.skip_reason and not six.understood


@pytest.mark.parametrize("kind,role,shape,expect", [
    ("linear", "", (64, 256), ("dense", 256, 64, 1, None)),
    ("embedding", "", (1000, 64), ("embedding", 1000, 64, 1, None)),
    ("conv2d", "", (4, 2, 7, 7), ("conv2d", 4, 2, 49, None)),  # the name rule would read it channels-last
    ("per_head", "", (64, 4, 16), ("dense", 64, 64, 1, None)),
    ("experts", "", (3, 8, 16), ("dense", 16, 8, 1, None)),
    ("not_a_weight", "position table", (1, 197, 768), ("skipped", 0, 0, 1, "not a weight matrix (position table)")),
])
def test_the_module_kind_decides(kind, role, shape, expect):
    plans = plan_matrices("blk.t", shape, "float32", kind=kind, role=role)
    p = plans[0]
    assert (p.layer_type, p.N, p.M, p.rf, p.skip_reason) == expect and p.typed_by == "module"
    assert len(plans) == (shape[0] if kind == "experts" else 1)
    W = torch.randn(*shape)
    if kind == "per_head":
        assert torch.equal(p.extract(W)[0], W.reshape(64, 64))
    if kind == "conv2d":
        assert torch.equal(p.extract(W)[8], W[:, :, 1, 1])
    # a rank the kind does not have: the name/shape rules decide
    assert plan_matrices("blk.t", (8, 8, 3), "float32", kind="linear")[0].typed_by == "name"


@pytest.mark.parametrize("name,shape,decision", [
    ("lm_head.weight", (1000, 64), "dense"),
    ("gpt_neox.embed_out.weight", (1000, 64), "dense"),
    ("vision_model.embeddings.patch_embedding.weight", (64, 192), "dense"),
    ("transformer.wte.weight", (1000, 64), "embedding"),
    ("bert.embeddings.token_type_embeddings.weight", (16, 64), "embedding"),
    ("embeddings.position_embeddings.weight", (512, 64), "embedding"),  # an nn.Embedding: analyzed
    ("vit.embeddings.position_embeddings", (1, 197, 768), "position table"),
    ("vision_model.gated_positional_embedding.embedding", (1025, 1280), "position table"),
    ("embeddings.position_embeddings.weights.1", (1, 64, 192), "position table"),
    ("sam.layers.0.attn.rel_pos_h", (27, 64), "position table"),
    ("blip2.query_tokens", (1, 32, 768), "learned tokens"),
    ("tvp.text_prompt", (1, 10, 768), "learned tokens"),
    ("layer.0.rel_attn.r_w_bias", (16, 64), "bias"),
    ("pos_conv_embed.conv.weight_g", (1, 1, 128), "weight-norm magnitude"),
    ("layers.0.self_attn.diagonal_decay", (1, 32, 256, 256), "decay mask"),
    ("model.layers.0.block_sparse_moe.input_linear.weight", (8, 22016, 4096), "experts"),
    ("layers.1.feed_forward.down_proj", (256, 4096, 8192), "experts"),
    ("layers.0.temporal_block.rg_lru.input_gate_weight", (10, 256, 256), "experts"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", (64, 4, 128), "conv1d"),
])
def test_name_rules(name, shape, decision):
    plans = plan_matrices(name, shape, "float32")
    p = plans[0]
    if decision == "experts":
        assert len(plans) == shape[0] and p.layer_type == "dense" and p.typed_by == "name"
    elif decision in ("dense", "embedding", "conv1d"):
        assert (p.layer_type, p.skip_reason) == (decision, None)
    else:
        assert p.skip_reason.startswith(f"not a weight matrix ({decision})") and p.understood
