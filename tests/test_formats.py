"""Tests of the ONNX and GGUF readers, and of the same weights read from different formats.

Real weights: silero-vad (PyPI package ``silero-vad``) ships one model as TorchScript (``silero_vad.jit``), as
several ONNX exports and as ``silero_vad_16k.safetensors``. Tensor names differ across formats, so matrices are
matched by content (same shape or transposed shape, equal values), and the matched matrices must give the same
eigenvalues through ``hubscan.esd.eigen.compute_esd``. GGUF files are written in the tests with
``gguf.GGUFWriter`` (no real GGUF file is available offline); ONNX models are built with ``onnx.helper``.
Every test runs in its own tmp_path as cwd.
"""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from conftest import read  # noqa: E402  (shared reader check)
import torch

import hubscan
from hubscan.errors import CorruptFileError, NoWeightsError
from hubscan.esd.eigen import compute_esd
from hubscan.esd.matrices import plan_matrices
from hubscan.weights import open_weights, readers

from conftest import package_dir

onnx = pytest.importorskip("onnx")
gguf = pytest.importorskip("gguf")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

Q = gguf.GGMLQuantizationType
EIG_RTOL = 1e-10


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)




def assert_one_line(excinfo, where, reason_part: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{where}: "), message
    assert reason_part in message, message
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", message), f"exception class name in: {message}"


def evals(t: torch.Tensor) -> np.ndarray:
    """Eigenvalues as hubscan's analysis gets them: the planner's matrices, else the tensor as one matrix.

    The fallback (layers the planner skips: a conv with one input channel, an ONNX LSTM weight with its leading
    direction axis) squeezes unit axes and flattens all but the first remaining one.
    """
    plan = plan_matrices("w", tuple(t.shape), str(t.dtype).removeprefix("torch."))[0]
    if plan.skip_reason is None:
        return compute_esd(plan.extract(t), plan.eig_scale).evals
    m = t.squeeze() if t.squeeze().dim() >= 2 else t.reshape(t.shape[0], -1)
    return compute_esd(m.reshape(m.shape[0], -1)).evals


def assert_same_evals(a: torch.Tensor, b: torch.Tensor) -> float:
    ea, eb = evals(a), evals(b)
    assert ea.shape == eb.shape
    rel = float(np.max(np.abs(ea - eb)) / max(np.max(np.abs(ea)), 1e-300))
    assert rel <= EIG_RTOL, rel
    return rel


def same_content(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same matrix up to storage orientation: equal shape or (2-D) transposed shape, and allclose values."""
    def close(x, y):
        return x.shape == y.shape and x.dtype == y.dtype and torch.allclose(x, y, rtol=1e-6, atol=0)
    return close(a, b) or (a.dim() == 2 and close(a.T, b))


def float_matrices(path) -> dict[str, torch.Tensor]:
    return {n: t for n, (shape, dtype, t) in read(path).items() if len(shape) >= 2 and t.is_floating_point()}


def lstm_gates_onnx_to_torch(w: torch.Tensor) -> torch.Tensor:
    """ONNX LSTM weight (1, 4H, in), gates i, o, f, c -> torch's (4H, in), gates i, f, g(=c), o."""
    i, o, f, c = w[0].chunk(4)
    return torch.cat([i, f, c, o])


# ---------------------------------------------------------------------------------------------------------------
# silero-vad: the same weights in TorchScript, ONNX and safetensors


@pytest.fixture(scope="session")
def silero_dir() -> Path:
    return package_dir("silero_vad") / "data"


@pytest.fixture(scope="session")
def silero_jit(silero_dir) -> dict[str, torch.Tensor]:
    """The 16 matrices of silero_vad.jit: ``_model.*`` (16 kHz) and ``_model_8k.*`` (8 kHz), 8 each."""
    return float_matrices(silero_dir / "silero_vad.jit")


# file -> how many of its >= 2-D float tensors equal a tensor of silero_vad.jit (silero-vad 6.2.3):
#  silero_vad.onnx              16 of 16: all weights are Constant nodes inside the two branches of an If
#                                         (then = 16 kHz model, else = 8 kHz), found by the subgraph walk
#  silero_vad_16k_op15.onnx      8 of 8:  graph initializers
#  silero_vad_openvino_16k.onnx  8 of 8:  Constant nodes of the main graph
#  silero_vad_16k_sequence.onnx  8 of 9:  6 equal as stored (stft basis, 4 convs, output conv) + the 2 LSTM
#                                         weights (1, 512, 128) after undoing ONNX's gate order (i, o, f, c);
#                                         the 9th is the LSTM bias (1, 1024), whose jit counterparts are 1-D
#  silero_vad_op18_ifless.onnx   9 of 16: the 16 kHz model and both stft bases; its 7 learned 8 kHz tensors are
#                                         a different checkpoint (correlation ~0.99 with the jit's, not equal)
SILERO_ONNX = {"silero_vad.onnx": 16, "silero_vad_16k_op15.onnx": 8, "silero_vad_openvino_16k.onnx": 8,
               "silero_vad_16k_sequence.onnx": 8, "silero_vad_op18_ifless.onnx": 9}


@pytest.mark.parametrize("onnx_file", sorted(SILERO_ONNX))
def test_silero_onnx_matches_jit(silero_dir, silero_jit, onnx_file):
    matched, worst = {}, 0.0
    for name, t in float_matrices(silero_dir / onnx_file).items():
        candidates = [t]
        if t.dim() == 3 and t.shape[0] == 1 and t.shape[1] % 4 == 0 and "LSTM" in name:
            candidates.append(lstm_gates_onnx_to_torch(t))
        for ref_name, ref in silero_jit.items():
            hit = next((c for c in candidates if same_content(c, ref)), None)
            if hit is not None:
                assert name not in matched, f"{name} matches {matched[name]} and {ref_name}"
                matched[name] = ref_name
                worst = max(worst, assert_same_evals(hit, ref))
                if hit is not t:  # gate-permuted LSTM: the stored tensor, as one matrix, has the same spectrum
                    worst = max(worst, assert_same_evals(t[0], ref))
    assert len(matched) == SILERO_ONNX[onnx_file], matched
    assert len(set(matched.values())) == len(matched)
    assert worst <= EIG_RTOL


def test_silero_onnx_subgraph_weights_analyze_like_jit(silero_dir, silero_jit):
    """End to end: hubscan.analyze on the ONNX (weights in If branches) and on the jit gives the same spectra."""
    onnx_res = hubscan.analyze(silero_dir / "silero_vad.onnx", keep_evals=True)
    jit_res = hubscan.analyze(silero_dir / "silero_vad.jit", keep_evals=True)
    assert onnx_res.format == "onnx" and jit_res.format == "torch"
    onnx_tensors = float_matrices(silero_dir / "silero_vad.onnx")
    pairs = {o: j for o, ot in onnx_tensors.items() for j, jt in silero_jit.items() if same_content(ot, jt)}
    assert len(pairs) == 16
    assert {r["name"] for r in onnx_res.rows if r["status"] == "success"} == {
        o for o, j in pairs.items() if j in jit_res.evals}
    compared = 0
    for o, j in pairs.items():
        if o in onnx_res.evals:
            a, b = onnx_res.evals[o], jit_res.evals[j]
            assert np.max(np.abs(a - b)) <= EIG_RTOL * np.max(a)
            ra = next(r for r in onnx_res.rows if r["name"] == o)
            rb = next(r for r in jit_res.rows if r["name"] == j)
            assert ra["alpha"] == pytest.approx(rb["alpha"], rel=1e-9)
            compared += 1
    # 12 analyzed: 4 convs + 2 LSTM matrices per model; the stft bases and the (1, 128, 1) output conv have
    # one input channel (M = 1) and are skipped by the planner in both formats
    assert compared == 12


def test_silero_safetensors_vs_onnx_and_jit(silero_dir, silero_jit):
    """silero_vad_16k.safetensors against the 16 kHz model of silero_vad.onnx and silero_vad.jit, by content.

    Matched (silero-vad 6.2.3): only ``stft_conv.weight`` (258, 1, 256), the fixed STFT basis, equal to
    ``If_0_then_branch__Inline_0__stft.forward_basis_buffer`` (ONNX) and ``_model.stft.forward_basis_buffer``
    (jit); eigenvalues identical (relative difference 0). The 7 learned tensors (conv1-4, lstm_cell.weight_ih/hh,
    final_conv) have the same shapes but are a different checkpoint: no ONNX or jit tensor equals them (their
    correlation with the jit's is ~0.9 and their singular values differ by 1-23 %), so there is nothing to
    compare for them; the ONNX and jit files agree with each other exactly (test above).
    """
    st = float_matrices(silero_dir / "silero_vad_16k.safetensors")
    assert len(st) == 8
    onnx_tensors = float_matrices(silero_dir / "silero_vad.onnx")
    matched = {}
    for name, t in st.items():
        in_onnx = [n for n, u in onnx_tensors.items() if same_content(u, t)]
        in_jit = [n for n, u in silero_jit.items() if same_content(u, t)]
        assert len(in_onnx) <= 1 and len(in_jit) <= 1
        if in_onnx or in_jit:
            assert in_onnx and in_jit, (name, in_onnx, in_jit)
            assert_same_evals(t, onnx_tensors[in_onnx[0]])
            assert_same_evals(t, silero_jit[in_jit[0]])
            matched[name] = (in_onnx[0], in_jit[0])
    assert matched == {"stft_conv.weight": ("If_0_then_branch__Inline_0__stft.forward_basis_buffer",
                                            "_model.stft.forward_basis_buffer")}


# ---------------------------------------------------------------------------------------------------------------
# ONNX, built here


def _tensor(name: str, a: np.ndarray, data_type: int | None = None) -> TensorProto:
    if data_type is None:
        return numpy_helper.from_array(a, name)
    return helper.make_tensor(name, data_type, a.shape, a.tobytes(), raw=True)


def _tiny_model(rng) -> tuple[onnx.ModelProto, dict]:
    """Y = If(cond, X @ W1 + b, X @ W1 @ C) with weights as initializers, a Constant, and inside both branches."""
    w = {"onnx::MatMul_1": rng.standard_normal((16, 8)).astype(np.float32),  # (in, out): transposed Linear
         "fc.bias": rng.standard_normal(8).astype(np.float32),
         "const_w": rng.standard_normal((8, 4)).astype(np.float32),
         "then_w": rng.standard_normal((8, 4)).astype(np.float32),
         "else_w": rng.standard_normal((8, 4)).astype(np.float32),
         "half_w": rng.standard_normal((6, 5)).astype(np.float16),
         "int_w": rng.integers(-128, 127, (4, 4)).astype(np.int8)}
    bf16 = torch.from_numpy(rng.standard_normal((3, 4)).astype(np.float32)).to(torch.bfloat16)
    then = helper.make_graph(
        [helper.make_node("MatMul", ["h", "dup"], ["y_then"])], "then", [],
        [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, None)], [_tensor("dup", w["then_w"])])
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["dup"], value=_tensor("dup_value", w["else_w"])),
         helper.make_node("MatMul", ["h", "dup"], ["y_else"])], "else", [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["mm"]),
        helper.make_node("Add", ["mm", "fc.bias"], ["h0"]),
        helper.make_node("Constant", [], ["const_w"], value=_tensor("v", w["const_w"])),
        helper.make_node("Constant", [], ["shape"], value=_tensor("s", np.array([[1, 8]], dtype=np.int64))),
        helper.make_node("Constant", [], ["scale"], value=_tensor("k", np.array([2.0], dtype=np.float32))),
        helper.make_node("Reshape", ["h0", "shape"], ["h"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="If_0"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_tensor("onnx::MatMul_1", w["onnx::MatMul_1"]), _tensor("fc.bias", w["fc.bias"]),
         _tensor("half_w", w["half_w"]), _tensor("int_w", w["int_w"]),
         _tensor("bf16_w", bf16.view(torch.int16).numpy(), TensorProto.BFLOAT16)])
    w["bf16_w"] = bf16
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_onnx_initializers_constants_and_subgraphs(tmp_path):
    model, w = _tiny_model(np.random.default_rng(0))
    path = tmp_path / "tiny.onnx"
    onnx.save_model(model, path)
    got = read(path)
    assert readers()[".onnx"].name == "onnx"
    # names as stored; "dup" occurs in both branches (an initializer in one, a Constant in the other), so both
    # get their subgraph path (in attribute order: onnx.helper sorts them); the int64 shape and the 1-D float
    # Constant are not weights
    assert list(got) == ["onnx::MatMul_1", "fc.bias", "half_w", "int_w", "bf16_w", "const_w",
                         "If_0/else_branch/dup", "If_0/then_branch/dup"]
    expect = {"onnx::MatMul_1": ("float32", w["onnx::MatMul_1"]), "fc.bias": ("float32", w["fc.bias"]),
              "half_w": ("float16", w["half_w"]), "int_w": ("int8", w["int_w"]),
              "const_w": ("float32", w["const_w"]), "If_0/then_branch/dup": ("float32", w["then_w"]),
              "If_0/else_branch/dup": ("float32", w["else_w"])}
    for name, (dtype, a) in expect.items():
        shape, got_dtype, t = got[name]
        assert got_dtype == dtype and shape == a.shape and np.array_equal(t.numpy(), a), name
    assert got["bf16_w"][:2] == ((3, 4), "bfloat16") and torch.equal(got["bf16_w"][2], w["bf16_w"])
    # a MatMul weight is stored (in, out): the transpose of torch's Linear (out, in), same eigenvalues of WᵀW
    linear = torch.from_numpy(w["onnx::MatMul_1"].T.copy())
    assert got["onnx::MatMul_1"][0] == (16, 8)
    assert_same_evals(got["onnx::MatMul_1"][2], linear)


def test_onnx_analyze_skips_integer_and_reads_float16(tmp_path):
    model, _ = _tiny_model(np.random.default_rng(1))
    onnx.save_model(model, tmp_path / "tiny.onnx")
    rows = {r["name"]: r for r in hubscan.analyze(tmp_path / "tiny.onnx", min_evals=2).rows}
    assert rows["int_w"]["status"] == "skipped" and rows["int_w"]["reason"] == "quantized (int8)"
    assert rows["half_w"]["status"] == "success" and rows["half_w"]["dtype"] == "float16"
    assert rows["onnx::MatMul_1"]["status"] == "success" and rows["onnx::MatMul_1"]["M"] == 8


def _external_model(tmp_path, rng, n: int = 4, size: int = 256) -> tuple[Path, dict[str, np.ndarray]]:
    w = {f"w{i}": rng.standard_normal((size, size)).astype(np.float32) for i in range(n)}
    nodes, prev = [], "x"
    for name in w:
        nodes.append(helper.make_node("MatMul", [prev, name], [f"{name}_out"]))
        prev = f"{name}_out"
    graph = helper.make_graph(nodes, "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)],
                              [_tensor(k, v) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return folder / "model.onnx", w


def test_onnx_external_data_read_one_tensor_at_a_time(tmp_path):
    path, w = _external_model(tmp_path, np.random.default_rng(2))
    assert path.stat().st_size < 10_000  # the weights are in model.onnx.data, not in the protobuf
    one = w["w0"].nbytes  # 256 KiB; the four together 1 MiB
    tracemalloc.start()
    try:
        weights = open_weights(path)
        _, peak_open = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        entries = list(weights.entries())
        t = entries[2].load()
        _, peak_load = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert weights.files == [str(path), str(path.parent / "model.onnx.data")]
    assert peak_open < one  # opening reads no tensor data
    assert peak_load < 2.5 * one  # loading reads that tensor alone (its bytes + the returned copy)
    assert entries[2].name == "w2" and np.array_equal(t.numpy(), w["w2"])
    assert {e.name: np.array_equal(e.load().numpy(), w[e.name]) for e in entries} == dict.fromkeys(w, True)
    weights.close()
    # and through the analysis
    res = hubscan.analyze(path)
    assert [r["status"] for r in res.rows] == ["success"] * 4 and res.files == weights.files


def test_onnx_external_data_absent_is_missing(tmp_path):
    path, w = _external_model(tmp_path, np.random.default_rng(3), n=2, size=16)
    (path.parent / "model.onnx.data").unlink()
    with pytest.raises(NoWeightsError) as excinfo:
        open_weights(path)
    assert_one_line(excinfo, path, "no weight tensors; the 2 tensors its index names are missing")
    # with one tensor embedded, the set opens and the other is listed as missing
    model = onnx.load(path, load_external_data=False)
    model.graph.initializer.append(_tensor("embedded", np.eye(4, dtype=np.float32)))
    onnx.save_model(model, path)
    with open_weights(path) as weights:
        assert [e.name for e in weights.entries()] == ["embedded"]
        assert weights.missing == [(n, "its external data file model.onnx.data is absent") for n in w]


@pytest.mark.parametrize("location, reason", [
    ("../outside.bin", "external data location '../outside.bin' is not a file inside the model folder"),
    ("/etc/passwd", "external data location '/etc/passwd' is not a file inside the model folder"),
])
def test_onnx_external_location_outside_folder_is_refused(tmp_path, location, reason):
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    for key, value in [("location", location), ("offset", "0"), ("length", "64")]:
        t.external_data.add(key=key, value=value)
    graph = helper.make_graph([], "g", [], [], [t])
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save_model(helper.make_model(graph), folder / "m.onnx")
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(folder / "m.onnx")
    assert_one_line(excinfo, folder / "m.onnx", reason)


def test_onnx_external_data_truncated(tmp_path):
    path, _ = _external_model(tmp_path, np.random.default_rng(4), n=2, size=16)
    data = path.parent / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1500])  # the 2nd tensor is bytes [1024, 2048)
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(path)
    assert_one_line(excinfo, data, "tensor 'w1' needs bytes [1024, 2048) but the file holds 1500 (truncated?)")


@pytest.mark.parametrize("content, reason", [
    (b"this is not an ONNX protobuf \xff\xfe\x00 at all", "not a valid ONNX model (its protobuf cannot be parsed"),
    (b"", "not a valid ONNX model (no graph)"),
    ("truncated", "not a valid ONNX model (its protobuf cannot be parsed"),
])
def test_onnx_corrupt_file(tmp_path, content, reason):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        model, _ = _tiny_model(np.random.default_rng(5))
        raw = model.SerializeToString()
        content = raw[: len(raw) - 100]
    path.write_bytes(content)
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(path)
    assert_one_line(excinfo, path, reason)


def test_onnx_tensor_with_wrong_data_size_fails_that_layer_only(tmp_path):
    bad = TensorProto(name="bad", data_type=TensorProto.FLOAT, dims=[8, 8], raw_data=np.zeros(10, "f4").tobytes())
    good = _tensor("good", np.random.default_rng(6).standard_normal((16, 8)).astype(np.float32))
    onnx.save_model(helper.make_model(helper.make_graph([], "g", [], [], [bad, good])), tmp_path / "m.onnx")
    with open_weights(tmp_path / "m.onnx") as weights:
        entry = next(e for e in weights.entries() if e.name == "bad")
        with pytest.raises(CorruptFileError) as excinfo:
            entry.load()
    assert_one_line(excinfo, tmp_path / "m.onnx", "tensor 'bad' is unreadable")
    rows = {r["name"]: r for r in hubscan.analyze(tmp_path / "m.onnx").rows}
    assert rows["bad"]["status"] == "failed" and "tensor 'bad' is unreadable" in rows["bad"]["reason"]
    assert rows["good"]["status"] == "success"


# ---------------------------------------------------------------------------------------------------------------
# GGUF, written here with gguf.GGUFWriter


def _write_gguf(path, tensors: dict[str, tuple[np.ndarray, object]], split: int = 0) -> None:
    """tensors: name -> (array as numpy/torch order, ggml type or None for the array's own dtype); ``split``:
    at most that many tensors per file (gguf-split's ``-0000k-of-0000n.gguf`` parts)."""
    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split)
    for name, (a, qtype) in tensors.items():
        if qtype is None:
            writer.add_tensor(name, a)
        elif qtype in (Q.Q8_1,):  # raw blocks given as bytes: gguf cannot quantize to it
            writer.add_tensor(name, a, raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def gguf_model(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    w = {"token_embd.weight": rng.standard_normal((40, 64)).astype(np.float32),  # (vocab, dim)
         "blk.0.attn_q.weight": rng.standard_normal((48, 64)).astype(np.float32),  # (out, in), F16
         "blk.0.ffn_up.weight": rng.standard_normal((96, 64)).astype(np.float32),  # Q8_0
         "blk.0.ffn_down.weight": rng.standard_normal((64, 96)).astype(np.float32),  # Q4_0
         "blk.0.attn_k.weight": rng.standard_normal((16, 64)).astype(np.float32),  # BF16
         "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float32),
         "conv.weight": rng.standard_normal((8, 4, 3)).astype(np.float32),  # 3-D, F32
         "blk.0.ids": np.arange(12, dtype=np.int32).reshape(3, 4)}
    path = tmp_path / "tiny.gguf"
    _write_gguf(path, {"token_embd.weight": (w["token_embd.weight"], None),
                       "blk.0.attn_q.weight": (w["blk.0.attn_q.weight"].astype(np.float16), None),
                       "blk.0.ffn_up.weight": (w["blk.0.ffn_up.weight"], Q.Q8_0),
                       "blk.0.ffn_down.weight": (w["blk.0.ffn_down.weight"], Q.Q4_0),
                       "blk.0.attn_k.weight": (w["blk.0.attn_k.weight"], Q.BF16),
                       "blk.0.attn_norm.weight": (w["blk.0.attn_norm.weight"], None),
                       "conv.weight": (w["conv.weight"], None),
                       "blk.0.ids": (w["blk.0.ids"], None)})
    return path, w


def _block_max(a: np.ndarray, block: int = 32) -> np.ndarray:
    """max |a| of each row's block of `block` values, broadcast back to a's shape."""
    blocks = np.abs(a).reshape(a.shape[0], -1, block).max(axis=-1, keepdims=True)
    return np.broadcast_to(blocks, (a.shape[0], a.shape[1] // block, block)).reshape(a.shape)


def test_gguf_shapes_dtypes_and_values(gguf_model):
    path, w = gguf_model
    reader = gguf.GGUFReader(str(path))
    # gguf 0.19: ReaderTensor.shape is ggml order (reversed), .data is numpy order (bytes on the last axis
    # for quantized types); hubscan reports numpy/torch order, the original PyTorch orientation
    raw = {t.name: t for t in reader.tensors}
    assert tuple(raw["blk.0.attn_q.weight"].shape.tolist()) == (64, 48)
    assert raw["blk.0.attn_q.weight"].data.shape == (48, 64)
    assert raw["blk.0.ffn_up.weight"].data.shape == (96, 64 // 32 * 34)  # Q8_0: 34-byte blocks of 32
    del reader, raw
    got = read(path)
    assert {n: (s, d) for n, (s, d, _) in got.items()} == {
        "token_embd.weight": ((40, 64), "float32"), "blk.0.attn_q.weight": ((48, 64), "float16"),
        "blk.0.ffn_up.weight": ((96, 64), "float32"), "blk.0.ffn_down.weight": ((64, 96), "float32"),
        "blk.0.attn_k.weight": ((16, 64), "bfloat16"), "blk.0.attn_norm.weight": ((64,), "float32"),
        "conv.weight": ((8, 4, 3), "float32"), "blk.0.ids": ((3, 4), "int32")}
    t = {n: v[2] for n, v in got.items()}
    for name in ("token_embd.weight", "blk.0.attn_norm.weight", "conv.weight", "blk.0.ids"):
        assert np.array_equal(t[name].numpy(), w[name]), name
    assert np.array_equal(t["blk.0.attn_q.weight"].numpy(), w["blk.0.attn_q.weight"].astype(np.float16))
    bf = t["blk.0.attn_k.weight"].float().numpy()
    assert np.all(np.abs(bf - w["blk.0.attn_k.weight"]) <= np.abs(w["blk.0.attn_k.weight"]) * 2.0 ** -8)
    # dequantized: exactly gguf's own round trip, and within each format's quantization error of the original
    for name, qtype in (("blk.0.ffn_up.weight", Q.Q8_0), ("blk.0.ffn_down.weight", Q.Q4_0)):
        a = w[name]
        assert np.array_equal(t[name].numpy(), gguf.quants.dequantize(gguf.quants.quantize(a, qtype), qtype))
    a, d = w["blk.0.ffn_up.weight"], t["blk.0.ffn_up.weight"].numpy()
    amax = _block_max(a)  # Q8_0: scale amax/127 (fp16), round to nearest
    assert np.all(np.abs(d - a) <= amax / 127 * 0.5 + amax * 2.0 ** -10)
    assert 0 < np.abs(d - a).max()
    a, d = w["blk.0.ffn_down.weight"], t["blk.0.ffn_down.weight"].numpy()
    amax = _block_max(a)  # Q4_0: scale amax/8 (fp16), the side opposite the max clips at +7
    assert np.all(np.abs(d - a) <= amax / 8 + amax * 2.0 ** -9)
    # orientation: the spectrum of the F32 tensor is that of the original (out, in) matrix, stored as is
    assert_same_evals(t["token_embd.weight"], torch.from_numpy(w["token_embd.weight"]))


def test_gguf_dequantized_are_recorded_and_analyzed(gguf_model):
    path, _ = gguf_model
    with open_weights(path) as weights:
        assert weights.format == "gguf"
        assert weights.stats["dequantized"] == {"blk.0.ffn_up.weight": "Q8_0", "blk.0.ffn_down.weight": "Q4_0"}
    res = hubscan.analyze(path)
    rows = {r["name"]: r for r in res.rows}
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight",
                 "blk.0.attn_k.weight", "conv.weight"):
        assert rows[name]["status"] == "success", rows[name]
    assert rows["blk.0.ffn_up.weight"]["dtype"] == "float32" and rows["blk.0.ffn_up.weight"]["N"] == 96
    assert rows["blk.0.ids"]["status"] == "skipped" and rows["blk.0.ids"]["reason"] == "quantized (int32)"


def test_gguf_type_gguf_cannot_dequantize_is_skipped_as_quantized(tmp_path, caplog):
    rng = np.random.default_rng(8)
    good = rng.standard_normal((32, 64)).astype(np.float32)
    blocks = rng.integers(0, 256, (16, 64 // 32 * 40), dtype=np.uint8)  # Q8_1: 40-byte blocks of 32 values
    path = tmp_path / "q81.gguf"
    _write_gguf(path, {"good.weight": (good, Q.Q8_0), "q81.weight": (blocks, Q.Q8_1)})
    with caplog.at_level("INFO", logger="hubscan.weights.gguf"), open_weights(path) as weights:
        entries = {e.name: e for e in weights.entries()}
        assert weights.stats["dequantized"] == {"good.weight": "Q8_0"}
    assert "cannot dequantize are skipped as quantized (1 Q8_1)" in caplog.text
    assert (entries["q81.weight"].shape, entries["q81.weight"].dtype) == ((16, 64), "q8_1")
    assert torch.equal(entries["q81.weight"].load(), torch.from_numpy(blocks))  # the raw blocks
    rows = {r["name"]: r for r in hubscan.analyze(path).rows}
    assert rows["q81.weight"]["status"] == "skipped" and rows["q81.weight"]["reason"] == "quantized (q8_1)"
    assert rows["good.weight"]["status"] == "success"


@pytest.mark.parametrize("damage, reason", [
    ("magic", "not a GGUF file (starts with b'GGUX', not b'GGUF')"),
    ("short", "file is 10 bytes, too short for a GGUF header (24 bytes)"),
    ("truncated", "(truncated?)"),
    ("version", "not a readable GGUF file: version 99 (hubscan reads GGUF versions 2 and 3)"),
])
def test_gguf_corrupt_file(gguf_model, damage, reason):
    path, _ = gguf_model
    raw = path.read_bytes()
    raw = {"magic": lambda: b"GGUX" + raw[4:], "short": lambda: raw[:10], "truncated": lambda: raw[:len(raw) - 700],
           "version": lambda: raw[:4] + (99).to_bytes(4, "little") + raw[8:]}[damage]()
    path.write_bytes(raw)
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(path)
    assert_one_line(excinfo, path, reason)


def test_bare_tensor_is_named_after_its_file(tmp_path):
    """torch.save(tensor): no container, so no key to name it; the row is named after the file, and its
    alpha is the one of the same matrix in a state dict."""
    import torch

    import hubscan
    w = torch.from_numpy(np.random.default_rng(5).standard_t(3, (120, 60)).astype(np.float32))
    torch.save(w, tmp_path / "bare.pt")
    torch.save({"w": w}, tmp_path / "dict.pt")
    bare, ref = hubscan.analyze(tmp_path / "bare.pt").to_pandas(), hubscan.analyze(tmp_path / "dict.pt").to_pandas()
    assert list(bare["name"]) == ["bare"] and bare["status"][0] == "success"
    assert bare["alpha"][0] == ref["alpha"][0]
