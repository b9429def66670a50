"""The LLM-era layouts corpus (``tests/data/cases/llm/EXPECTED.md``): each case as its EXPECTED says, through
the library API, the CLI (``hubscan analyze --out``) and the hub source (the loopback fake Hub); the
invariant over every case of both corpora; dequantization checked against installable reference
implementations (bitsandbytes, compressed-tensors); variants, components and sub-folder shard indexes
identical online, offline and local."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import hubscan
from hub_server import FakeHub, isolated_hf_client
from hubscan.cli import main as cli_main
from hubscan.errors import HubscanError
from hubscan.hub import HubClient

LLM = Path(__file__).parent / "data" / "cases" / "llm"
OLD = Path(__file__).parent / "data" / "cases"
MODES = ("api", "cli", "hub")
REFERENCES = {"moe_experts_8x64x32_unstacked_ref.safetensors", "fp8_block_scaled_dequant_reference.safetensors",
              "complex64_reference_realified.safetensors"}


def key(r) -> str:
    return r["name"] + (f":{r['part']}" if r["part"] else "")


# --- the three ways in -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Every case of both corpora served by the loopback Hub as its own repository ``cases/<name>``."""
    with isolated_hf_client(tmp_path_factory.mktemp("hfcache")), FakeHub() as h:
        for p in _all_cases():
            files = {p.name: p} if p.is_file() else {c.name: c for c in p.iterdir() if c.is_file()}
            if files:
                h.add_model(_repo(p), files)
        yield h


def _repo(p: Path) -> str:
    return "cases/" + p.name.replace(".", "-")


def _all_cases() -> list[Path]:
    old = [p for p in sorted(OLD.iterdir()) if p.name not in ("EXPECTED.md", "SOURCE.md", "llm")]
    new = [p for p in sorted(LLM.iterdir()) if p.suffix != ".md" and p.name not in REFERENCES]
    return old + new


def analyze_via(mode: str, path: Path, hub=None, tmp_path: Path | None = None):
    """(rows as dicts, summary status or None) through the API, the CLI (Parquet rows) or the fake Hub."""
    if mode == "api":
        res = hubscan.analyze(path)
        return res.rows, res.summary
    if mode == "hub":
        client = HubClient(endpoint=hub.endpoint, max_retries=1, backoff=0.05, cache_dir=None)
        res = hubscan.analyze(f"hf:{_repo(path)}", client=client)
        return res.rows, res.summary
    import pyarrow.parquet as pq
    out = tmp_path / (path.name + ".parquet")
    code = cli_main(["analyze", str(path), "--out", str(out), "-q"])
    if code != 0:
        raise HubscanError(str(path), f"CLI exit {code}")
    return pq.read_table(out).to_pylist(), None


def rows_of(mode, path, hub, tmp_path):
    rows, summary = analyze_via(mode, path, hub, tmp_path)
    return {key(r): r for r in rows}, summary


# --- each case as EXPECTED.md says ------------------------------------------------------------------------

def ref_alphas(name: str) -> dict:
    return {key(r): r["alpha"] for r in hubscan.analyze(LLM / name).rows if r["status"] == "success"}


@pytest.mark.parametrize("mode", MODES)
def test_moe_experts_one_row_per_expert_equal_to_unstacked(mode, hub, tmp_path):
    rows, _ = rows_of(mode, LLM / "moe_experts_8x64x32.safetensors", hub, tmp_path)
    ref = ref_alphas("moe_experts_8x64x32_unstacked_ref.safetensors")
    assert len(rows) == 8 and len(ref) == 8
    for e in range(8):
        r = rows[f"model.layers.0.mlp.experts.down_proj:{e}"]
        assert (r["N"], r["M"], r["rf"], r["layer_type"]) == (64, 32, 1, "dense")
        assert r["alpha"] == pytest.approx(ref[f"model.layers.0.mlp.experts.{e}.down_proj.weight"], abs=1e-6)
    two, _ = rows_of(mode, LLM / "moe_experts_2x64x32.safetensors", hub, tmp_path)
    assert sorted(two) == ["model.layers.0.mlp.experts.gate_up_proj:0", "model.layers.0.mlp.experts.gate_up_proj:1"]
    assert all(r["rf"] == 1 and r["M"] == 32 for r in two.values())


@pytest.mark.parametrize("mode", MODES)
def test_fp8_block_scaled_dequantized(mode, hub, tmp_path):
    rows, _ = rows_of(mode, LLM / "fp8_block_scaled.safetensors", hub, tmp_path)
    ref = ref_alphas("fp8_block_scaled_dequant_reference.safetensors")
    assert list(rows) == ["model.layers.0.mlp.down_proj.weight"]  # the scale grid is no row of its own
    r = rows["model.layers.0.mlp.down_proj.weight"]
    assert r["alpha"] == pytest.approx(ref["model.layers.0.mlp.down_proj.weight"], abs=1e-6)
    assert r["companions"] == ["model.layers.0.mlp.down_proj.weight_scale_inv"]
    assert r["dtype"] == "float8_e4m3fn" and "fp8 block-scaled" in r["reason"]


def test_fp8_block_partial_edge_blocks_and_per_channel():
    from hubscan.weights.quantized import dequantize_fp8_block, dequantize_scaled
    torch.manual_seed(0)
    W = torch.randn(300, 200)
    s = torch.rand(3, 2) + 0.5  # 128-blocks: the last row block holds 44 rows, the last column block 72
    codes = (W / s.repeat_interleave(128, 0)[:300].repeat_interleave(128, 1)[:, :200]).to(torch.float8_e4m3fn)
    got = dequantize_fp8_block(codes, s)
    expect = np.empty((300, 200), np.float32)
    for i in range(300):
        for j in range(0, 200, 50):
            expect[i, j:j + 50] = codes[i, j:j + 50].float().numpy() * s[i // 128, np.arange(j, j + 50) // 128].numpy()
    np.testing.assert_array_equal(got.numpy(), expect)
    ch = torch.rand(300, 1)
    np.testing.assert_allclose(dequantize_scaled(codes, ch).numpy(), codes.float().numpy() * ch.numpy())
    np.testing.assert_allclose(dequantize_scaled(codes, torch.tensor(0.25)).numpy(), codes.float().numpy() * 0.25)


@pytest.mark.parametrize("mode", MODES)
def test_gptq_and_awq_dequantized_companions_never_rows(mode, hub, tmp_path):
    for case, stem, n_in in (("gptq_layer", "model.layers.0.self_attn.q_proj.", 2048),
                             ("awq_layer", "model.layers.0.mlp.up_proj.", 2048)):
        rows, summary = rows_of(mode, LLM / f"{case}.safetensors", hub, tmp_path)
        assert list(rows) == [stem + "qweight"], rows.keys()
        r = rows[stem + "qweight"]
        assert r["status"] == "success" and (r["N"], r["M"]) == (n_in, 512)
        assert set(r["companions"]) >= {stem + "scales", stem + "qzeros"}
        if summary is not None:
            assert summary["alpha"] == pytest.approx(r["alpha"])  # never the alpha of the scales


def test_awq_matches_compressed_tensors_converter():
    """compressed-tensors (vLLM project) converts AutoAWQ GEMM tensors to its own packed format; unpacking
    that with its own helpers gives the reference dequantized weight."""
    ct = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.autoawq")
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from hubscan.weights.quantized import dequantize_awq
    d = load_file(LLM / "awq_layer.safetensors")
    p = "model.layers.0.mlp.up_proj."
    tensors = ct.AutoAWQConverter(bits=4, group_size=128).process(
        {p + k: d[p + k].clone() for k in ("qweight", "qzeros", "scales")})
    shape = tuple(tensors[p + "weight_shape"].tolist())
    q = unpack_from_int32(tensors[p + "weight_packed"], 4, torch.Size(shape)).float()       # (out, in), signed
    z = unpack_from_int32(tensors[p + "weight_zero_point"], 4, torch.Size((shape[0], shape[1] // 128)),
                          packed_dim=0).float()
    s = tensors[p + "weight_scale"].float()
    ref = (q - z.repeat_interleave(128, 1)) * s.repeat_interleave(128, 1)
    got = dequantize_awq(d[p + "qweight"], d[p + "qzeros"], d[p + "scales"])  # (in, out)
    np.testing.assert_allclose(got.T.numpy(), ref.numpy(), rtol=0, atol=1e-6)


def test_gptq_packing_matches_compressed_tensors_unpacking():
    """GPTQ packs 8 codes per int32 along the input axis (qweight) and the output axis (qzeros), code k in
    bits [4k, 4k+4): compressed-tensors' ``unpack_from_int32`` reads that packing (it returns signed codes,
    offset by 8); the v1 zero point is stored minus one (GPTQ / GPTQModel's v1 → v2 conversion adds it)."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from hubscan.weights.quantized import dequantize_gptq
    d = load_file(LLM / "gptq_layer.safetensors")
    p = "model.layers.0.self_attn.q_proj."
    qw, qz, s, g = (d[p + k] for k in ("qweight", "qzeros", "scales", "g_idx"))
    q = unpack_from_int32(qw, 4, torch.Size((qw.shape[0] * 8, qw.shape[1])), packed_dim=0).float() + 8
    z = unpack_from_int32(qz, 4, torch.Size((qz.shape[0], qz.shape[1] * 8)), packed_dim=1).float() + 8
    ref = s.float()[g.long()] * (q - (z[g.long()] + 1))
    np.testing.assert_allclose(dequantize_gptq(qw, qz, s, g, 4).numpy(), ref.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_bnb_cases(mode, hub, tmp_path):
    rows, summary = rows_of(mode, LLM / "bnb_int8.safetensors", hub, tmp_path)
    r = rows["model.layers.0.mlp.down_proj.weight"]
    assert list(rows) == ["model.layers.0.mlp.down_proj.weight"] and r["status"] == "success"
    assert r["companions"] == ["model.layers.0.mlp.down_proj.SCB", "model.layers.0.mlp.down_proj.weight_format"]
    rows, summary = rows_of(mode, LLM / "bnb_4bit.safetensors", hub, tmp_path)
    assert set(rows) == {"model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"}
    r = rows["model.layers.0.mlp.down_proj.weight"]  # its quant_state holds no readable shape: skipped
    assert r["status"] == "skipped" and r["reason"].startswith("quantized (bnb 4-bit nf4")
    assert len(r["companions"]) == 3
    if summary is not None:
        assert summary["status"] == "incomplete"


def test_bnb_dequantization_matches_bitsandbytes(tmp_path):
    bnb = pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(3)
    W = torch.randn(96, 64)
    C, stats = bnb.int8_vectorwise_quant(W)[:2]
    from hubscan.weights.quantized import _bnb_int8
    np.testing.assert_allclose(_bnb_int8(C, stats).numpy(), bnb.int8_vectorwise_dequant(C, stats).numpy(), atol=1e-6)
    for quant_type in ("nf4", "fp4"):
        for nested in (False, True):
            q, st = bnb.quantize_4bit(W, quant_type=quant_type, compress_statistics=nested, blocksize=64)
            sd = {"l.weight": q, **{f"l.weight.{k}": v for k, v in st.as_dict(packed=True).items()}}
            save_file(sd, str(tmp_path / "m.safetensors"))
            res = hubscan.analyze(tmp_path / "m.safetensors", keep_evals=True)
            (row,) = res.rows
            assert row["status"] == "success" and row["shape"] == [96, 64], row
            ref = bnb.dequantize_4bit(q, st).double()
            expect = np.sort(np.linalg.eigvalsh((ref.T @ ref).numpy()))
            np.testing.assert_allclose(res.evals["l.weight"], expect, rtol=1e-4, atol=1e-6)


def test_mxfp4_decoded_per_expert():
    from hubscan.weights.quantized import FP4_E2M1, dequantize_mxfp4
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (2, 40, 2, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(120, 130, (2, 40, 2), dtype=torch.uint8, generator=g)
    W = dequantize_mxfp4(blocks, scales)
    assert W.shape == (2, 40, 64)
    b = int(blocks[1, 3, 1, 5])
    assert W[1, 3, 32 + 10].item() == FP4_E2M1[b & 15] * 2.0 ** (int(scales[1, 3, 1]) - 127)
    assert W[1, 3, 32 + 11].item() == FP4_E2M1[b >> 4] * 2.0 ** (int(scales[1, 3, 1]) - 127)


@pytest.mark.parametrize("mode", MODES)
def test_tied_lm_head_same_summary_in_every_format(mode, hub, tmp_path):
    once, s1 = rows_of(mode, LLM / "tied_lm_head_once.safetensors", hub, tmp_path)
    twice, s2 = rows_of(mode, LLM / "tied_lm_head_twice.safetensors", hub, tmp_path)
    assert twice["lm_head.weight"]["status"] == "skipped"
    assert twice["lm_head.weight"]["reason"] == "tied to model.embed_tokens.weight"
    ok = lambda rows: {k: r["alpha"] for k, r in rows.items() if r["status"] == "success"}  # noqa: E731
    assert ok(once) == ok(twice)
    if s1 is not None:
        assert s1["alpha"] == s2["alpha"]


def test_tied_shared_storage_in_torch_files(tmp_path):
    sd = load_file(LLM / "tied_lm_head_once.safetensors")
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # one storage, two names (transformers' .bin)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    sd2 = {k: v.clone() for k, v in sd.items()}  # equal content, separate storages
    torch.save(sd2, tmp_path / "copy.pt")
    once = hubscan.analyze(LLM / "tied_lm_head_once.safetensors").summary["alpha"]
    for f in ("pytorch_model.bin", "copy.pt"):
        res = hubscan.analyze(tmp_path / f)
        rows = {key(r): r for r in res.rows}
        assert rows["lm_head.weight"]["reason"] == "tied to model.embed_tokens.weight", f
        assert res.summary["alpha"] == once


@pytest.mark.parametrize("mode", MODES)
def test_lora_factors_warned_and_zero_b(mode, hub, tmp_path):
    rows, _ = rows_of(mode, LLM / "adapter_model.safetensors", hub, tmp_path)
    assert len(rows) == 2
    for r in rows.values():
        assert r["status"] == "success" and r["num_evals"] == 8 and "few eigenvalues" in r["reason"]
    rows, _ = rows_of(mode, LLM / "lora_init_B_zero.safetensors", hub, tmp_path)
    b = next(r for k, r in rows.items() if "lora_B" in k)
    a = next(r for k, r in rows.items() if "lora_A" in k)
    assert b["status"] == "success" and "rank collapse: 0 nonzero eigenvalues" in b["reason"]  # B = 0: measured
    assert b["alpha"] is None or math.isnan(b["alpha"])
    assert a["status"] == "success" and "few eigenvalues" in a["reason"]


@pytest.mark.parametrize("mode", MODES)
def test_complex_weight_hermitian_gram(mode, hub, tmp_path):
    rows, _ = rows_of(mode, LLM / "complex64_weight.safetensors", hub, tmp_path)
    ref = ref_alphas("complex64_reference_realified.safetensors")
    r = rows["spectral.weight"]
    assert r["status"] == "success" and r["alpha"] == pytest.approx(ref["spectral.weight_realified"], abs=1e-6)
    assert abs(r["alpha"] - 2.688) > 0.1  # never the real part alone
    # the eigenvalues are WᴴW's, each twice
    W = load_file(LLM / "complex64_weight.safetensors")["spectral.weight"].to(torch.complex128)
    lam = np.linalg.eigvalsh((W.conj().T @ W).numpy())
    got = hubscan.analyze(LLM / "complex64_weight.safetensors", keep_evals=True).evals["spectral.weight"]
    np.testing.assert_allclose(got, np.sort(np.repeat(lam, 2)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
def test_sparse_torch_and_onnx_densified(mode, hub, tmp_path):
    rows, _ = rows_of(mode, LLM / "pt_sparse_weights.pt", hub, tmp_path)
    assert sorted(rows) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert all(r["status"] == "success" for r in rows.values())
    sd = torch.load(LLM / "pt_sparse_weights.pt", weights_only=True)
    dense = {k: v.to_dense().double() for k, v in sd.items()}
    for k, W in dense.items():
        lam = np.linalg.eigvalsh((W.T @ W).numpy())
        assert rows[k]["lambda_max"] == pytest.approx(lam.max(), rel=1e-9)
    rows, _ = rows_of(mode, LLM / "onnx_sparse_initializer.onnx", hub, tmp_path)
    assert [r["status"] for r in rows.values()] == ["success"]


def test_onnx_sparse_initializer_equals_dense(tmp_path):
    import onnx
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(0)
    W = rng.standard_t(3, (48, 40)).astype(np.float32)
    W[rng.random(W.shape) < 0.5] = 0
    idx = np.flatnonzero(W)
    coo = np.stack(np.unravel_index(idx, W.shape), 1)
    for indices in (idx, coo):
        sparse = helper.make_sparse_tensor(numpy_helper.from_array(W.reshape(-1)[idx], "w"),
                                           numpy_helper.from_array(indices.astype(np.int64), "w_idx"), W.shape)
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
                                  sparse_initializer=[sparse])
        onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
        save_file({"w": torch.from_numpy(W)}, str(tmp_path / "m.safetensors"))
        a, b = hubscan.analyze(tmp_path / "m.onnx").rows[0], hubscan.analyze(tmp_path / "m.safetensors").rows[0]
        assert a["alpha"] == b["alpha"] and a["lambda_max"] == b["lambda_max"]


@pytest.mark.parametrize("mode", MODES)
def test_dtensor_and_nested_tensors(mode, hub, tmp_path):
    rows, summary = rows_of(mode, LLM / "pt_dtensor.pt", hub, tmp_path)
    assert rows["fc.weight"]["status"] == "success"
    for case, kind in (("pt_njt_beside_weights.pt", "jagged nested tensor"),
                       ("pt_nested_strided_beside_weights.pt", "strided nested tensor")):
        rows, summary = rows_of(mode, LLM / case, hub, tmp_path)
        assert rows["fc.weight"]["status"] == "success"
        (nested,) = [r for k, r in rows.items() if k != "fc.weight"]
        assert nested["status"] == "skipped" and kind in nested["reason"]


@pytest.mark.parametrize("mode", MODES)
def test_not_weight_matrices_and_depthwise(mode, hub, tmp_path):
    rows, _ = rows_of(mode, LLM / "mamba_block.safetensors", hub, tmp_path)
    p = "backbone.layers.0.mixer."
    assert rows[p + "A_log"]["status"] == "skipped" and "not a weight matrix" in rows[p + "A_log"]["reason"]
    assert rows[p + "conv1d.weight"]["status"] == "skipped" and "M = 1" in rows[p + "conv1d.weight"]["reason"]
    assert all(rows[p + n]["status"] == "success" for n in ("in_proj.weight", "out_proj.weight", "x_proj.weight"))
    rows, _ = rows_of(mode, LLM / "timm_vit_oddities.safetensors", hub, tmp_path)
    for n in ("cls_token", "reg_token", "pos_embed", "pos_embed_196"):
        assert rows[n]["status"] == "skipped" and "not a weight matrix" in rows[n]["reason"], n
    assert rows["blocks.0.attn.qkv.weight"]["status"] == rows["patch_embed.proj.weight"]["status"] == "success"
    rows, _ = rows_of(mode, LLM / "depthwise_conv.safetensors", hub, tmp_path)
    dw = rows["blocks.0.conv_dw.weight"]
    assert dw["status"] == "skipped" and "depthwise" in dw["reason"]
    assert rows["blocks.0.conv_pw.weight"]["status"] == "success"


@pytest.mark.parametrize("mode", MODES)
def test_unknown_dtype_skipped_rest_analyzed(mode, hub, tmp_path):
    rows, summary = rows_of(mode, LLM / "st_unknown_dtype.safetensors", hub, tmp_path)
    assert rows["w"]["status"] == "success"
    assert rows["x"]["status"] == "skipped" and "F6_E3M2" in rows["x"]["reason"]
    if summary is not None:
        assert summary["status"] == "incomplete"


def test_real_cli_entry_point_on_llm_cases(tmp_path):
    """The console entry point in a fresh process: experts and FP8 rows as the API gives them."""
    import pyarrow.parquet as pq
    for case in ("moe_experts_8x64x32.safetensors", "fp8_block_scaled.safetensors"):
        out = tmp_path / (case + ".parquet")
        proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(LLM / case), "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        api = {key(r): r["alpha"] for r in hubscan.analyze(LLM / case).rows}
        assert {key(r): r["alpha"] for r in pq.read_table(out).to_pylist()} == api


# --- the invariant, every case of both corpora, three ways in --------------------------------------------

def stored_tensors(path: Path) -> dict[str, tuple]:
    """name → shape of every stored tensor, read without hubscan where a library reads the format."""
    files = [path] if path.is_file() else sorted(path.iterdir())
    out = {}
    for f in files:
        if f.suffix == ".safetensors":
            raw = f.read_bytes()
            (n,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8:8 + n])
            out.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
        elif f.suffix == ".onnx":
            import onnx
            g = onnx.load(f).graph
            out.update({t.name: tuple(t.dims) for t in g.initializer})
            out.update({t.values.name: tuple(t.dims) for t in g.sparse_initializer})
        elif f.suffix in (".pt", ".bin"):
            from hubscan.weights import open_weights  # the torch walk is the naming rule; pickles need it
            with open_weights(f) as ws:
                out.update({e.name: tuple(e.shape) if e.shape else (0, 0) for e in ws.entries()})
    return out


def check_invariant(path: Path, rows: list, summary, missing: list | None):
    names = [r["name"] for r in rows]
    covered: dict[str, int] = {}
    for r in rows:
        if not r["part"] or r["part"] in ("0", "q", "i", "r", "0,0"):
            covered[r["name"]] = covered.get(r["name"], 0) + 1
        assert r["status"] in ("success", "skipped", "failed")
        assert r["status"] == "success" or r["reason"], r
        for c in r["companions"] or []:
            covered[c] = covered.get(c, 0) + 1
    for name, _ in missing or []:
        covered[name] = covered.get(name, 0) + 1
    stored = stored_tensors(path)
    for name, shape in stored.items():
        if len(shape) >= 2:
            assert covered.get(name) == 1, (path.name, name, covered.get(name))
    assert set(names) <= set(stored) | {n for n, _ in missing or []}, (path.name, set(names) - set(stored))
    unread = [r for r in rows if r["status"] == "skipped" and r["reason"].startswith(("quantized", "unknown dtype"))]
    if summary is not None and unread:
        assert summary["status"] == "incomplete", (path.name, summary["status"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [p.relative_to(OLD).as_posix() for p in _all_cases()])
def test_invariant_every_case(case, mode, hub, tmp_path):
    path = OLD / case
    try:
        if mode == "cli":
            rows, summary = analyze_via("cli", path, hub, tmp_path)
            res = hubscan.analyze(path)
            missing = res.missing
        else:
            client = HubClient(endpoint=hub.endpoint, max_retries=1, backoff=0.05, cache_dir=None) if mode == "hub" else None
            res = hubscan.analyze(path if mode == "api" else f"hf:{_repo(path)}", client=client)
            rows, summary, missing = res.rows, res.summary, res.missing
    except HubscanError as e:  # an error case: one line naming what is wrong, no rows at all
        assert "\n" not in str(e) and e.reason
        with pytest.raises(HubscanError):
            hubscan.analyze(path)
        return
    check_invariant(path, rows, summary, missing)
    api = {key(r): (r["status"], r["alpha"]) for r in hubscan.analyze(path).rows}
    got = {key(r): (r["status"], r["alpha"]) for r in rows}
    same = lambda a, b: a[0] == b[0] and (a[1] == b[1] or (a[1] != a[1] and b[1] != b[1]) or  # noqa: E731
                                         (a[1] is None and b[1] != b[1]) or (b[1] is None and a[1] != a[1]))
    assert got.keys() == api.keys() and all(same(got[k], api[k]) for k in got), case


# --- variants, components, sub-folder shards: same rows online, offline and local ---------------------------

def _diffusers_repo(root: Path) -> dict[str, Path]:
    g = torch.Generator().manual_seed(0)
    t = lambda *s: torch.from_numpy(np.random.default_rng(len(s) + s[0]).standard_t(3, s).astype(np.float32))  # noqa: E731
    parts = {"unet": {"conv_in.weight": t(64, 4, 3, 3), "proj.weight": t(96, 64)},
             "text_encoder": {"embeddings.token_embedding.weight": t(300, 32), "fc.weight": t(64, 32)}}
    files = {}
    for folder, sd in parts.items():
        (root / folder).mkdir(parents=True)
        stem = "model" if folder == "text_encoder" else "diffusion_pytorch_model"
        save_file(sd, str(root / folder / f"{stem}.safetensors"))
        save_file({k: v.half() for k, v in sd.items()}, str(root / folder / f"{stem}.fp16.safetensors"))
        files[f"{folder}/{stem}.safetensors"] = root / folder / f"{stem}.safetensors"
        files[f"{folder}/{stem}.fp16.safetensors"] = root / folder / f"{stem}.fp16.safetensors"
    (root / "model_index.json").write_text("{}")
    files["model_index.json"] = root / "model_index.json"
    del g
    return files


def _subfolder_index_repo(root: Path) -> dict[str, Path]:
    (root / "weights").mkdir(parents=True)
    rng = np.random.default_rng(1)
    a = {"a.weight": torch.from_numpy(rng.standard_t(3, (80, 40)).astype(np.float32))}
    b = {"b.weight": torch.from_numpy(rng.standard_t(3, (70, 50)).astype(np.float32))}
    save_file(a, str(root / "weights" / "m-1.safetensors"))
    save_file(b, str(root / "weights" / "m-2.safetensors"))
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a.weight": "weights/m-1.safetensors", "b.weight": "weights/m-2.safetensors"}}))
    return {"model.safetensors.index.json": root / "model.safetensors.index.json",
            "weights/m-1.safetensors": root / "weights/m-1.safetensors",
            "weights/m-2.safetensors": root / "weights/m-2.safetensors"}


@pytest.mark.parametrize("build,expect", [
    (_diffusers_repo, {"unet/conv_in.weight", "unet/proj.weight", "text_encoder/embeddings.token_embedding.weight",
                       "text_encoder/fc.weight"}),
    (_subfolder_index_repo, {"a.weight", "b.weight"}),
])
def test_same_rows_local_online_offline(build, expect, tmp_path, monkeypatch):
    files = build(tmp_path / "local")
    local = hubscan.analyze(tmp_path / "local")
    rows = {key(r): (r["status"], r["alpha"], r["dtype"]) for r in local.rows}
    assert set(rows) == expect and all(v[0] == "success" and v[2] == "float32" for v in rows.values())
    cache = tmp_path / "cache"
    with isolated_hf_client(cache), FakeHub() as h:
        h.add_model("org/m", files)
        online = hubscan.analyze("hf:org/m", client=HubClient(endpoint=h.endpoint, cache_dir=str(cache)))
        assert {key(r): (r["status"], r["alpha"], r["dtype"]) for r in online.rows} == rows
        keep = HubClient(endpoint=h.endpoint, cache_dir=str(cache), keep_cache=True)
        from hubscan.weights.remote import _open_downloaded  # the whole-file path: into the cache, then read
        downloaded = hubscan.analyze(_open_downloaded(online.ref, keep))
        assert {key(r): (r["status"], r["alpha"], r["dtype"]) for r in downloaded.rows} == rows
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # now from the cache only
        offline = hubscan.analyze(online.ref, client=HubClient(endpoint=h.endpoint, cache_dir=str(cache),
                                                               keep_cache=True, offline=True))
        assert {key(r): (r["status"], r["alpha"], r["dtype"]) for r in offline.rows} == rows


def test_choose_weight_files_rules():
    from hubscan.weights.files import choose_weight_files
    assert choose_weight_files(["unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                                "vae/diffusion_pytorch_model.fp16.safetensors", "model_index.json"]) == (
        ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"), "safetensors")
    assert choose_weight_files(["model.fp16.safetensors", "model.bf16.safetensors"]) == (("model.bf16.safetensors",), "safetensors")
    assert choose_weight_files(["model.safetensors", "model.fp16.safetensors"]) == (("model.safetensors",), "safetensors")
    assert choose_weight_files(["traced.jit", "README.md"]) == (("traced.jit",), "torch")
    from hubscan.sources.local import _is_weight_file
    assert _is_weight_file.__module__  # local.py asks the readers' registry (.jit included)
    from hubscan.weights import weight_suffixes
    assert ".jit" in weight_suffixes() and ".gguf" in weight_suffixes()


@pytest.mark.parametrize("symmetric,strategy", [(True, "channel"), (False, "group")])
def test_compressed_tensors_pack_quantized_matches_its_decompressor(symmetric, strategy, tmp_path):
    """A weight packed by compressed-tensors' own compressor, dequantized by hubscan and by its decompressor."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    args = QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy=strategy,
                            group_size=32 if strategy == "group" else None)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    rng = np.random.default_rng(5)
    out_f, in_f = 72, 96
    groups = in_f // 32 if strategy == "group" else 1
    scale = torch.from_numpy(rng.uniform(0.01, 0.1, (out_f, groups)).astype(np.float32))
    q = torch.from_numpy(rng.integers(-8, 8, (out_f, in_f)).astype(np.int8))
    sd = {"weight": q, "weight_scale": scale}
    if not symmetric:
        sd["weight_zero_point"] = torch.from_numpy(rng.integers(-8, 8, (out_f, groups)).astype(np.int8))
    packed = PackedQuantizationCompressor.compress(dict(sd), scheme) if hasattr(PackedQuantizationCompressor, "compress") else None
    assert packed is not None and "weight_packed" in packed
    ref = PackedQuantizationCompressor.decompress(dict(packed), scheme)["weight"].float()
    save_file({f"l.{k}": v.contiguous() for k, v in packed.items()}, str(tmp_path / "m.safetensors"))
    res = hubscan.analyze(tmp_path / "m.safetensors", keep_evals=True)
    (row,) = res.rows
    assert row["name"] == "l.weight_packed" and row["status"] == "success" and row["shape"] == [out_f, in_f]
    expect = np.sort(np.linalg.svd(ref.double().numpy(), compute_uv=False) ** 2)
    np.testing.assert_allclose(res.evals["l.weight_packed"], expect, rtol=1e-9, atol=1e-9)


# --- reader messages (issue 9 item 8) ----------------------------------------------------------------------

def test_reader_messages_say_what_is_wrong(tmp_path, capsys):
    torch.save({"w": torch.randn(64, 32)}, tmp_path / "full.pt")
    blob = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "notes.safetensors").write_text("This is a README saved under the wrong name.\n" * 20)
    (tmp_path / "notes.pt").write_text("hello, not a checkpoint\n")
    for name, frag in (("cut.pt", "truncated"), ("notes.safetensors", "not a safetensors file"),
                       ("notes.pt", "neither a zip archive nor a pickle")):
        with pytest.raises(HubscanError) as info:
            hubscan.analyze(tmp_path / name)
        msg = str(info.value)
        assert frag in msg and name in msg and "Errno" not in msg and "exceeds" not in msg, msg
        assert not any(cls in msg for cls in ("Error:", "Exception", "RuntimeError", "OSError")), msg
        code = cli_main(["analyze", str(tmp_path / name), "-q"])
        err = capsys.readouterr().err.strip()
        assert code != 0 and err.count("\n") == 0 and frag in err


def test_renamed_weight_files_say_what_they_are(tmp_path, hub):
    """A weight file under another format's suffix: the message says what its bytes are (zip / pickle /
    safetensors / GGUF magic), not a header length or an opcode error — locally and through the Hub."""
    import shutil
    st, legacy = OLD / "ok_small.safetensors", OLD / "legacy_format.pt"
    zipped = tmp_path / "zipped.pt"
    torch.save({"w": torch.randn(64, 32)}, zipped)
    for src, name, frag in ((st, "a.pt", "not a readable torch checkpoint: its first bytes are those of a safetensors"),
                            (legacy, "b.safetensors", "not a safetensors file: its first bytes are those of a pickle"),
                            (zipped, "c.safetensors", "not a safetensors file: its first bytes are those of a zip"),
                            (st, "d.gguf", "not a GGUF file: its first bytes are those of a safetensors file"),
                            (legacy, "e.onnx", "not an ONNX model: its first bytes are those of a pickle")):
        shutil.copy(src, tmp_path / name)
        with pytest.raises(HubscanError) as info:
            hubscan.analyze(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: ") and frag in str(info.value), str(info.value)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(HubscanError, match="file is 0 bytes"):
        hubscan.analyze(tmp_path / "empty.pt")
    # the same bytes served by the Hub as model.safetensors (read by ranges: 8 bytes sniffed)
    repo = "org/renamed"
    hub.add_model(repo, {"model.safetensors": legacy.read_bytes()})
    with pytest.raises(HubscanError) as info:
        hubscan.analyze(f"hf:{repo}", client=HubClient(endpoint=hub.endpoint, max_retries=1, backoff=0.05,
                                                       cache_dir=None))
    assert "not a safetensors file: its first bytes are those of a pickle" in str(info.value), str(info.value)


def test_diffusers_folder_is_one_local_model(tmp_path):
    from hubscan.sources.local import list_local
    _diffusers_repo(tmp_path / "pipe")
    _diffusers_repo(tmp_path / "models" / "pipe2")
    # ids relative to the surveyed folder (a folder that is itself one model: its name)
    assert [r.path for r, _ in list_local(tmp_path / "pipe")] == [str(tmp_path / "pipe")]
    assert [r.id for r, _ in list_local(tmp_path / "pipe")] == ["pipe"]
    assert [r.id for r, _ in list_local(tmp_path / "models")] == ["pipe2"]


def test_gguf_stacked_experts_per_expert(tmp_path):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(2)
    experts = rng.standard_t(3, (4, 48, 32)).astype(np.float32)
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_tensor("blk.0.ffn_down_exps.weight", experts)
    w.add_tensor("blk.0.conv.weight", rng.standard_t(3, (48, 32, 3)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rows = {key(r): r for r in hubscan.analyze(tmp_path / "m.gguf").rows}
    assert sorted(k for k in rows if "exps" in k) == [f"blk.0.ffn_down_exps.weight:{e}" for e in range(4)]
    for e in range(4):
        lam = np.linalg.svd(experts[e].astype(np.float64), compute_uv=False) ** 2
        r = rows[f"blk.0.ffn_down_exps.weight:{e}"]
        assert (r["rf"], r["lambda_max"]) == (1, pytest.approx(lam.max(), rel=1e-9))
    assert rows["blk.0.conv.weight"]["layer_type"] == "conv1d"  # not named as experts: a convolution


def test_fp8_per_channel_file_names_all_companions(tmp_path):
    rng = np.random.default_rng(4)
    W = torch.from_numpy(rng.standard_t(3, (64, 48)).astype(np.float32))
    s = W.abs().amax(1, keepdim=True) / 448.0
    save_file({"l.weight": (W / s).to(torch.float8_e4m3fn), "l.weight_scale": s, "l.input_scale": torch.tensor([0.5])},
              str(tmp_path / "m.safetensors"))
    (row,) = hubscan.analyze(tmp_path / "m.safetensors", keep_evals=True).rows
    assert row["companions"] == ["l.weight_scale", "l.input_scale"] and row["dtype"] == "float8_e4m3fn"
    ref = ((W / s).to(torch.float8_e4m3fn).float() * s).double()  # dequantized in float32, as stored scales are
    assert row["lambda_max"] == pytest.approx(np.linalg.svd(ref.numpy(), compute_uv=False)[0] ** 2, rel=1e-9)


def test_unnamed_stack_is_not_read_as_a_convolution(tmp_path):
    """(8, 64, 200) not named as experts: 200 "taps" wider than 8 output channels is no Conv1d kernel."""
    rng = np.random.default_rng(6)
    save_file({"blocks.stack": torch.from_numpy(rng.standard_t(3, (8, 64, 200)).astype(np.float32)),
               "conv.weight": torch.from_numpy(rng.standard_t(3, (128, 64, 7)).astype(np.float32)),
               "pos_conv.weight": torch.from_numpy(rng.standard_t(3, (768, 48, 128)).astype(np.float32))},
              str(tmp_path / "m.safetensors"))
    res = hubscan.analyze(tmp_path / "m.safetensors")
    rows = {key(r): r for r in res.rows}
    assert rows["blocks.stack"]["status"] == "skipped" and "not recognised" in rows["blocks.stack"]["reason"]
    assert rows["conv.weight"]["layer_type"] == rows["pos_conv.weight"]["layer_type"] == "conv1d"
    assert res.summary["status"] == "incomplete" and "blocks.stack" in res.summary["reason"]


def test_gguf_unknown_tensor_type_skipped_rest_analyzed(tmp_path):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_tensor("good.weight", rng.standard_t(3, (64, 32)).astype(np.float32))
    w.add_tensor("future.weight", rng.standard_t(3, (64, 32)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    blob = bytearray((tmp_path / "m.gguf").read_bytes())
    at = blob.index(b"future.weight") + len(b"future.weight")
    (n_dims,) = struct.unpack_from("<I", blob, at)
    struct.pack_into("<I", blob, at + 4 + 8 * n_dims, 250)  # a ggml type id no gguf release knows
    (tmp_path / "m.gguf").write_bytes(bytes(blob))
    res = hubscan.analyze(tmp_path / "m.gguf")
    rows = {key(r): r for r in res.rows}
    assert rows["good.weight"]["status"] == "success"
    assert rows["future.weight"]["status"] == "skipped" and "unknown GGUF tensor type 250" in rows["future.weight"]["reason"]
    assert res.summary["status"] == "incomplete"
