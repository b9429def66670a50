"""Hostile inputs (issue 21): every reader bounded in time and memory, odd folders, terminal escaping.

The rule, for every hostile file (``tests/data/cases/hub-r3/3_hostile/``, the older bad-input corpus in
``tests/data/cases/``, and variants built here): ``hubscan analyze FILE`` exits 1 with one line
``hubscan: error: <file>: <reason>``, within 5 s, its resident set growing by at most 2 × the file's size
+ 256 MB. Time and memory are measured around the command, in a child process (``tests/bounded_cli.py``:
peak RSS from the kernel, psutil for the start), not timed in this one; the 5 s are CPU seconds (on a
machine running other work, wall time measures that work too), and a command with no end is killed at
60 s. Odd folders go through ``hubscan survey --source local:DIR`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, REPO

HOSTILE = DATA / "cases" / "hub-r3" / "3_hostile"
MB = 1 << 20
GOOD = DATA / "cases" / "ok_small.safetensors"  # one 256×128 Student-t matrix and a bias


def bounded(cases: list[list], tmp_path: Path) -> list[dict]:
    """Run CLI commands through tests/bounded_cli.py: one result per command (code, stdout, stderr, seconds,
    growth in bytes)."""
    todo, done = tmp_path / "cases.json", tmp_path / "results.json"
    todo.write_text(json.dumps([[str(a) for a in argv] for argv in cases]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(REPO / "tests" / "bounded_cli.py"), str(todo), str(done)], check=True,
                   env=env, cwd=tmp_path, timeout=60 * (len(cases) + 2))
    return json.loads(done.read_text())


def assert_bounded_error(result: dict, path: Path, cwd: Path, *fragments: str) -> str:
    """Exit 1, one line ``hubscan: error: <file>: <reason>`` (no exception class; the file as the CLI
    shows it, relative to ``cwd`` below it), within 5 s and 2 × size + 256 MB."""
    assert not result["timed_out"], f"{path.name}: no end in 60 s"
    lines = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    assert result["code"] == 1 and len(lines) == 1, result
    shown = str(path).removeprefix(os.path.join(str(cwd), ""))
    assert lines[0].startswith(f"hubscan: error: {shown}: "), lines[0]
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b|Traceback", lines[0]), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    assert result["cpu_seconds"] < 5, f"{path.name}: {result['cpu_seconds']:.1f} s"  # wall time: no end in 60 s
    assert result["growth"] <= 2 * size + 256 * MB, f"{path.name}: +{result['growth'] / MB:.0f} MB for {size} bytes"
    return lines[0]


# --- building hostile files ---------------------------------------------------------------------------

def op(value) -> bytes:
    """The pickle opcodes of a plain value (protocol 2, no PROTO/STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def glob(path: str) -> bytes:
    module, name = path.rsplit(".", 1)
    return f"c{module}\n{name}\n".encode()


def call(func: str, *args: bytes) -> bytes:
    return glob(func) + b"(" + b"".join(args) + b"tR"


def pkl(*body: bytes) -> bytes:
    return b"\x80\x02" + b"".join(body) + b"."


def state_dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(op(k) + v for k, v in items.items()) + b"u"


def storage_ref(numel: int, *legacy_view) -> bytes:
    """A persistent id of storage '0' (zip: 5 fields; legacy: a 6th, the view)."""
    return b"(" + op("storage") + glob("torch.FloatStorage") + op("0") + op("cpu") + op(numel) \
        + b"".join(op(v) for v in legacy_view) + b"tQ"


def tensor(numel: int) -> bytes:
    return call("torch._utils._rebuild_tensor_v2", storage_ref(numel), op(0), op((numel,)), op((1,)), op(False),
                call("collections.OrderedDict"))


def torch_zip(path: Path, data_pkl: bytes, storages: dict | None = None, deflated: tuple = ()) -> Path:
    """A torch zip archive by hand (torch.save's layout), entries named in ``deflated`` compressed."""
    def kind(name):
        return zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl, compress_type=kind("data.pkl"))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, (nbytes, fill) in (storages or {}).items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = kind(key)
            with z.open(info, "w") as f:
                for start in range(0, nbytes, 16 * MB):
                    f.write(fill * min(16 * MB, nbytes - start))
    return path


def write_gguf(path: Path, strings: int = 0) -> Path:
    """A valid GGUF file (gguf.GGUFWriter): a vocabulary of ``strings`` tokens and one Student-t matrix."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    if strings:
        w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(strings)])
    w.add_tensor("blk.0.attn_q.weight", np.random.default_rng(0).standard_t(3, (256, 128)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_header(n_tensors: int, kvs: bytes, n_kv: int, tensors: bytes = b"", pad: int = 4096) -> bytes:
    """A GGUF v3 header by hand (magic, version, counts, key/values, tensor infos) and zero padding."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + tensors + bytes(pad)


def gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def hostile_files(tmp: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Variants built here: path -> fragments its one-line error names."""
    out = {}

    def add(name: str, data: bytes, *fragments: str) -> None:
        (tmp / name).write_bytes(data)
        out[name] = (tmp / name, fragments)

    # GGUF: counts and lengths that cannot fit in the file
    vocab = write_gguf(tmp / "vocab.gguf", strings=200_000).read_bytes()  # 3.5 MB, 3.4 of them the vocabulary
    add("gguf_vocab_cut.gguf", vocab[:len(vocab) * 4 // 5], "run past the end of the file")
    add("gguf_tensor_count_huge.gguf", vocab[:8] + struct.pack("<Q", 1 << 60) + vocab[16:], "cannot fit")
    add("gguf_kv_count_huge.gguf", vocab[:16] + struct.pack("<Q", 1 << 62) + vocab[24:], "cannot fit")
    add("gguf_key_length_huge.gguf", vocab[:24] + struct.pack("<Q", 1 << 62) + vocab[32:], "the file ends")
    nested = struct.pack("<IQ", 9, 1) * 100 + struct.pack("<IQ", 0, 0)  # arrays of arrays, 100 deep
    add("gguf_nested_arrays.gguf", gguf_header(0, gguf_string(b"k") + struct.pack("<I", 9) + nested, 1),
        "nested more than")
    dims = gguf_string(b"w") + struct.pack("<I", 1 << 31)
    add("gguf_dims_count_huge.gguf", gguf_header(1, b"", 0, dims), "dims")
    big = gguf_string(b"w") + struct.pack("<IQQIQ", 2, 1 << 31, 1 << 31, 0, 0)  # F32 2^31 × 2^31
    add("gguf_tensor_past_end.gguf", gguf_header(1, b"", 0, big), "truncated?")

    # torch: allowed callables asked for more than the file can justify
    def pt(name: str, body: bytes, *fragments: str, storages: dict | None = None) -> None:
        out[name] = (torch_zip(tmp / name, pkl(body), storages), fragments)

    pt("untyped_storage.pt", state_dict(w=call("torch.storage.UntypedStorage", op(1 << 33))),
       "torch.storage.UntypedStorage(8589934592)")
    pt("float_tensor.pt", state_dict(w=call("torch.FloatTensor", op(50_000), op(50_000))), "torch.FloatTensor(")
    pt("numpy_reconstruct.pt", state_dict(w=call("numpy._core.multiarray._reconstruct", glob("numpy.ndarray"),
                                                 op((1 << 31,)), op(b"d"))), "_reconstruct")
    pt("numpy_ndarray.pt", state_dict(w=call("numpy.ndarray", op((50_000, 50_000)), op("f8"))), "ndarray")
    pt("numpy_scalar.pt", state_dict(w=call("numpy._core.multiarray.scalar", call("numpy.dtype", op("V500000000")))),
       "scalar(")
    pt("nested_bytearray.pt", state_dict(w=call("torch._tensor._rebuild_from_type_v2", glob("builtins.bytearray"),
                                                glob("torch.Tensor"), op((1 << 31,)), op({}))), "bytearray")
    pt("qtensor.pt", state_dict(w=call("torch._utils._rebuild_qtensor", storage_ref(1), op(0), op((1 << 20, 1 << 20)),
                                       op((1 << 20, 1)), op((torch.per_tensor_affine, 1.0, 0)), op(False),
                                       call("collections.OrderedDict"))), "_rebuild_qtensor",
       storages={"0": (4, b"\0")})
    pt("list_of_bytes.pt", call("builtins.list", op(bytes(12_000_000))), "builtins.list(")
    out["empty_lists.pt"] = (torch_zip(tmp / "empty_lists.pt", b"\x80\x02(" + b"]" * 5_000_000 + b"l."),
                             ("the pickle's objects would allocate more than",))  # not the limit twice
    out["deflated_storage.pt"] = (torch_zip(tmp / "deflated_storage.pt", pkl(state_dict(w=tensor(60_000_000))),
                                            {"0": (240_000_000, b"\0")}, deflated=("0",)), ("storage 0",))
    out["deflated_pickle.pt"] = (torch_zip(tmp / "deflated_pickle.pt", b"\x80\x02" + b"N0" * 75_000_000 + b"N.",
                                           deflated=("data.pkl",)), ("data.pkl",))
    legacy = b"".join(pkl(op(v)) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    legacy += pkl(state_dict(w=call("torch._utils._rebuild_tensor", storage_ref(1 << 40, None), op(0),
                                    op((1 << 40,)), op((1,))))) + pkl(op(["0"]))
    add("legacy_numel_huge.pt", legacy, "storage 0 claims")
    return out


# --- the rule, on every hostile file ------------------------------------------------------------------

SHIPPED = {  # 3_hostile/ (EXPECTED.md)
    "gguf/array_count_huge_u8.gguf": ("metadata 'general.bomb' claims 4,611,686,018,427,387,904 items",),
    "gguf/overlapping_tensors.gguf": ("tensors 'blk.0.attn_q.weight' [160, 32928) and 'blk.0.attn_k.weight' "
                                      "[160, 32928) overlap",),
    "torch/zip_bytearray_1_5GB_bomb.pt": ("builtins.bytearray(1500000000) would allocate 1.5 GB",),
}


def test_every_hostile_file_ends_in_one_bounded_line(tmp_path):
    from test_cases import ERRORS  # the older corpus: each with the fragments its error names

    corpus = {DATA / "cases" / name: tuple(f for f in fragments) for name, fragments in ERRORS.items()}
    variants = {path: fragments for path, fragments in hostile_files(tmp_path).values()}
    cases = {**{HOSTILE / name: fragments for name, fragments in SHIPPED.items()}, **corpus, **variants}
    results = bounded([["analyze", path, "-q"] for path in cases], tmp_path)
    for (path, fragments), result in zip(cases.items(), results):
        line = assert_bounded_error(result, path, tmp_path)
        assert all(f.lower() in line.lower() for f in fragments), line


def test_large_valid_files_stay_within_the_bound(tmp_path):
    """Bounded is not refused: a GGUF whose header is mostly a 1.2M-token vocabulary (gguf.GGUFReader:
    100 s and +1.6 GB on this file), a checkpoint of a 32 GB-dense sparse matrix beside a dense one."""
    gguf_file = write_gguf(tmp_path / "vocab.gguf", strings=1_200_000)
    sparse = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0], dtype=torch.float64),
                                     (1 << 16, 1 << 16), check_invariants=True)
    dense = torch.from_numpy(np.random.default_rng(1).standard_t(3, (256, 128)).astype(np.float32))
    torch.save({"huge.weight": sparse, "good.weight": dense}, tmp_path / "sparse.pt")
    results = bounded([["analyze", gguf_file], ["analyze", tmp_path / "sparse.pt"]], tmp_path)
    for path, result in zip((gguf_file, tmp_path / "sparse.pt"), results):
        assert result["code"] == 0 and not result["stderr"], result
        assert result["growth"] <= 2 * path.stat().st_size + 256 * MB, result
    assert "summary status=success" in results[0]["stdout"]
    assert re.search(r"huge\.weight: skipped: sparse_coo tensor of 4294967296 elements: its dense form "
                     r"\(34\.4 GB\) is more than this file may use", " ".join(results[1]["stdout"].split()))


# --- readers, below the CLI ----------------------------------------------------------------------------

def test_gguf_header_matches_gguf_reader(tmp_path):
    """read_header against the gguf package's own reader on a file its writer made."""
    gguf = pytest.importorskip("gguf")
    from hubscan.weights.gguf import GGUFArray, read_header

    path = write_gguf(tmp_path / "v.gguf", strings=1000)
    ours, theirs = read_header(path), gguf.GGUFReader(str(path))
    assert [(t.name, t.dims, t.type_id, t.start, t.nbytes) for t in ours.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), t.data_offset, t.n_bytes) for t in theirs.tensors]
    assert ours.data_offset == theirs.data_offset and ours.alignment == theirs.alignment
    vocab = ours.metadata["tokenizer.ggml.tokens"]
    assert isinstance(vocab, GGUFArray) and vocab.count == len(theirs.fields["tokenizer.ggml.tokens"].data) == 1000
    assert ours.metadata["general.architecture"] == theirs.fields["general.architecture"].contents() == "llama"


def test_allowed_calls_are_charged_before_they_run():
    from hubscan.weights.torch_pickle import call_bytes

    assert call_bytes(bytearray, (1_500_000_000,)) == 1_500_000_000
    assert call_bytes(bytearray, (b"abc",)) == 3  # a copy of what the pickle holds
    assert call_bytes(torch.storage.UntypedStorage, (10,)) == 160 and call_bytes(torch.FloatTensor, (2, 3)) == 96
    assert call_bytes(np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b")) == 0  # how numpy pickles arrays
    assert call_bytes(list, (bytes(1000),)) == 16_000  # one slot per byte
    import codecs
    assert call_bytes(codecs.encode, ("é" * 10, "latin1")) == 10 and call_bytes(codecs.encode, ("é" * 10,)) == 40


def test_sparse_indices_outside_the_size_are_refused(tmp_path):
    """As torch.load validates them (weights_only): densifying would read out of bounds."""
    from hubscan.errors import CorruptFileError
    from hubscan.weights import open_weights

    bad = torch.sparse_coo_tensor(torch.tensor([[0, 1000]]), torch.tensor([1.0, 2.0]), (4,), check_invariants=False)
    torch.save({"w": bad}, tmp_path / "bad_sparse.pt")
    with pytest.raises(CorruptFileError, match="not a readable torch checkpoint"):
        open_weights(tmp_path / "bad_sparse.pt")


# --- terminal output -----------------------------------------------------------------------------------

CONTROL = ("\x1b", "\x00", "\u202e")


def test_control_characters_are_escaped_on_the_terminal_and_kept_in_the_rows(tmp_path):
    import hubscan

    path = HOSTILE / "safetensors" / "names_control_chars.safetensors"
    real = "a\nb\x1b[31mRED\x1b[0m\u202eevil\x00.weight"
    assert [r["name"] for r in hubscan.analyze(path).rows] == [real]  # the real name (dataset, API)
    (result,) = bounded([["analyze", path, "--columns", "name,alpha,status", "--out", tmp_path / "rows.csv"]],
                        tmp_path)
    assert result["code"] == 0 and not any(c in result["stdout"] + result["stderr"] for c in CONTROL)
    assert "a\\nb\\x1b[31mRED\\x1b[0m\\u202eevil\\x00.weight" in result["stdout"]


def test_printable_escapes_what_is_not_printable():
    from hubscan.cli import _printable

    assert _printable("blk.0.attn_q.weight") == "blk.0.attn_q.weight"
    assert _printable("日本語 αβγ 🙂") == "日本語 αβγ 🙂"  # printable in any script
    assert _printable("a\x1b[2Jb\rc\x00\u202e\udcff\x85\t") == "a\\x1b[2Jb\\rc\\x00\\u202e\\udcff\\x85\\t"


def test_error_lines_are_escaped(tmp_path):
    path = tmp_path / "evil\x1b[2J\u202e.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    (result,) = bounded([["analyze", path]], tmp_path)
    assert result["code"] == 1 and not any(c in result["stderr"] for c in CONTROL)
    assert "evil\\x1b[2J\\u202e.safetensors" in result["stderr"]


# --- odd folders through the survey --------------------------------------------------------------------

def odd_folder(root: Path) -> dict[str, str]:
    """A survey root with loops, aliases, a dangling link, names that are not UTF-8, an ONNX model with
    external data: model id -> the status its row must have."""
    root.mkdir()
    shutil.copy(GOOD, root / "good.safetensors")
    (root / "real_model").mkdir()
    shutil.copy(GOOD, root / "real_model" / "model.safetensors")
    (root / "real_model" / "config.json").write_text('{"model_type": "bert"}')
    (root / "group").mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        shutil.copy(GOOD, root / "group" / name)
    os.symlink(".", root / "self_loop")
    os.symlink("..", root / "group" / "loop_up")
    os.symlink("real_model", root / "alias")
    os.symlink("good.safetensors", root / "alias_file.safetensors")
    os.symlink("gone.safetensors", root / "dangling.safetensors")
    bad = os.fsencode(root) + b"/bad\xffutf8_model"
    os.mkdir(bad)
    shutil.copy(GOOD, bad + b"/model.safetensors")
    shutil.copy(GOOD, bad + b".safetensors")
    shutil.copytree(HOSTILE / "onnx" / "legit_external", root / "legit_external")
    shutil.copy(HOSTILE / "safetensors" / "names_control_chars.safetensors", root / "names_control_chars.safetensors")
    return {"good.safetensors": "success", "real_model": "success", "group/a.safetensors": "success",
            "group/b.safetensors": "success", "legit_external": "success", "names_control_chars.safetensors": "success",
            "dangling.safetensors": "failed", "bad\\xffutf8_model": "failed",
            "bad\\xffutf8_model.safetensors": "failed"}


def test_odd_folders_survey(tmp_path):
    from hubscan.query import connect

    expected = odd_folder(tmp_path / "odd")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "dataset"
    run = subprocess.run([sys.executable, "-m", "hubscan.cli", "survey", "--source", f"local:{tmp_path / 'odd'}",
                          "--out", str(out), "--no-progress", "--actors", "1"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    con = connect(str(out))
    rows = {m: (s, r) for m, s, r in con.execute("SELECT model_id, status, reason FROM models").fetchall()}
    assert {m: s for m, (s, _) in rows.items()} == expected  # aliases once, loops add nothing
    assert "a symbolic link to gone.safetensors, which does not exist" in rows["dangling.safetensors"][1]
    assert "not valid UTF-8" in rows["bad\\xffutf8_model"][1]
    assert con.execute("SELECT format FROM models WHERE model_id = 'legit_external'").fetchall() == [("onnx",)]
    names = [r[0] for r in con.execute("SELECT name FROM layers WHERE model_id = 'names_control_chars.safetensors'"
                                       ).fetchall()]
    assert names == ["a\nb\x1b[31mRED\x1b[0m\u202eevil\x00.weight"]  # the dataset keeps the real name
    assert not any(c in run.stdout + run.stderr for c in CONTROL)
    assert "failed bad\\xffutf8_model" in run.stdout
    sql = subprocess.run([sys.executable, "-m", "hubscan.cli", "sql", "--dataset", str(out),
                          "SELECT name FROM layers WHERE name LIKE 'a%'"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert sql.returncode == 0 and not any(c in sql.stdout for c in CONTROL) and "\\x1b[31mRED" in sql.stdout


def test_analyze_a_name_that_is_not_utf8(tmp_path):
    """``hubscan analyze`` of a torch or safetensors file whose name is not UTF-8 (torch's storage mapping and
    safetensors take UTF-8 paths only): the survey's one-line reason, the name escaped ``\\xff`` (never
    ``\\udcff``), from the API and the CLI; the same file under a UTF-8 name is read."""
    import hubscan
    from hubscan.errors import PathNotFoundError
    from hubscan.sources.local import list_local, resolve_local

    folder = tmp_path / "names"
    folder.mkdir()
    torch.save({"w.weight": torch.randn(64, 32)}, folder / "y.pt")
    shutil.copy(GOOD, folder / "bad.safetensors")
    names = {"y.pt": b"y\xff.pt", "bad.safetensors": b"bad\xffname.safetensors"}
    for good, bad in names.items():
        assert hubscan.analyze(folder / good).summary["status"] == "success"
        os.rename(os.fsencode(folder / good), os.path.join(os.fsencode(folder), bad))
    survey = {}
    for ref, _ in list_local(folder):  # what a survey of the folder records
        with pytest.raises(PathNotFoundError) as e:
            resolve_local(ref)
        survey[ref.id] = str(e.value)
    why = "its name is not valid UTF-8 (shown with its bytes escaped): rename it to analyze it"
    assert survey == {"y\\xff.pt": f"{folder}/y\\xff.pt: {why}",
                      "bad\\xffname.safetensors": f"{folder}/bad\\xffname.safetensors: {why}"}
    for bad in names.values():
        path = os.fsdecode(os.path.join(os.fsencode(folder), bad))
        with pytest.raises(PathNotFoundError) as e:
            hubscan.analyze(path)
        escaped = bad.decode("latin-1").replace("\xff", "\\xff")
        assert str(e.value) == survey[escaped]
        (cli,) = bounded([["analyze", path]], tmp_path)  # in tmp_path: the file shown relative to it
        assert cli["code"] == 1 and cli["stderr"] == f"hubscan: error: names/{escaped}: {why}\n", cli


def test_onnx_external_data_is_part_of_its_model(tmp_path):
    """model.onnx + weights.bin (its external data), no config.json: one model, analyzed from the graph."""
    import hubscan
    from hubscan.sources.local import list_local
    from hubscan.weights.onnx import external_data_files

    folder = HOSTILE / "onnx" / "legit_external"
    assert external_data_files(folder / "model.onnx") == [str(folder / "weights.bin")]
    assert [r.id for r, _ in list_local(folder)] == ["legit_external"]
    result = hubscan.analyze(folder)
    assert result.format == "onnx" and result.summary["status"] == "success"
    (cli,) = bounded([["analyze", folder]], tmp_path)  # was: "a folder of 2 models (model.onnx, weights.bin)"
    assert cli["code"] == 0 and "(onnx)" in cli["stdout"] and "status=success" in cli["stdout"] and not cli["stderr"]
