"""Every input of the shared bad-input corpus (``tests/data/cases/EXPECTED.md``) through the library API
and the CLI: the expected rows, statuses and reasons, or a one-line error naming the file and a
non-zero exit. (``tests/test_weights.py`` checks the readers below this level.)"""

from __future__ import annotations

import re
import math
import os
import subprocess
import sys

import pytest

import hubscan
from hubscan.cli import main as cli_main
from hubscan.errors import HubscanError

GOOD = ("c.good.weight", "b.good.weight", "layer.good.weight", "fc.weight", "enc.weight", "l0.weight")


def rows_by_name(result):
    return {r["name"] + (f":{r['part']}" if r["part"] else ""): r for r in result.rows}


def run_cli(capsys, *args):
    code = cli_main(["analyze", *map(str, args), "-q"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(capsys, path, *fragments):
    code, out, err = run_cli(capsys, path)
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hubscan: error: ") and os.path.basename(str(path)) in lines[0], lines[0]
    assert "Traceback" not in err
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", lines[0]), f"exception class name in: {lines[0]}"
    for frag in fragments:
        assert frag.lower() in lines[0].lower(), lines[0]
    return lines[0]


# --- inputs that must end in a one-line error -------------------------------------------------------

ERRORS = {
    "truncated.safetensors": ["shorter"],
    "header_length_huge.safetensors": ["header"],
    "header_not_json.safetensors": ["json"],
    "offsets_out_of_range.safetensors": ["outside"],
    "malicious_pickle.pt": ["unsafe"],
    "empty_model_dir": ["no weight files"],
    "metadata_only_broken_header.safetensors": ["json"],
    "metadata_only_no_tensors.safetensors": ["no weight tensors"],
    "shape_larger_than_data.safetensors": ["needs"],
    "offsets_overlap.safetensors": ["overlap"],
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_cases_api(cases_dir, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubscanError) as info:
        hubscan.analyze(cases_dir / case)
    msg = str(info.value)
    assert "\n" not in msg and case in msg
    for frag in ERRORS[case]:
        assert frag in msg.lower()


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_cases_cli(cases_dir, case, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, cases_dir / case, *ERRORS[case])


def test_malicious_pickle_never_executes(cases_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubscanError):
        hubscan.analyze(cases_dir / "malicious_pickle.pt")
    for where in (tmp_path, cases_dir, "/tmp"):
        assert not os.path.exists(os.path.join(where, "hubscan_pickle_was_executed"))


def test_cli_entry_point_one_line_error(cases_dir, tmp_path):
    """The installed console script, in a fresh process: exit 1, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(cases_dir / "truncated.safetensors")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "truncated.safetensors" in proc.stderr


# --- inputs that analyze ----------------------------------------------------------------------------

def test_ok_small(cases_dir, capsys):
    res = hubscan.analyze(cases_dir / "ok_small.safetensors")
    rows = rows_by_name(res)
    assert list(rows) == ["layer.good.weight"]  # the bias is 1-D: not a matrix row
    r = rows["layer.good.weight"]
    assert (r["status"], r["N"], r["M"], r["layer_type"]) == ("success", 256, 128, "dense")
    assert r["alpha"] < 6  # Student-t entries: heavy tailed, not random-like
    code, out, err = run_cli(capsys, cases_dir / "ok_small.safetensors")
    assert code == 0 and err == ""


def test_nonfinite_and_good(cases_dir):
    res = hubscan.analyze(cases_dir / "nonfinite_and_good.safetensors")
    rows = rows_by_name(res)
    assert rows["a.nan.weight"]["status"] == "failed"
    assert "non-finite" in rows["a.nan.weight"]["reason"]
    assert rows["b.good.weight"]["status"] == "success"
    # a layer hubscan could not measure: the model is incomplete, never a quiet success
    assert res.summary["status"] == "incomplete" and "a.nan.weight (non-finite" in res.summary["reason"]


def test_degenerate_and_good(cases_dir):
    res = hubscan.analyze(cases_dir / "degenerate_and_good.safetensors")
    rows = rows_by_name(res)
    for name, k in (("a.zero.weight", "0 nonzero eigenvalues"), ("b.rank1.weight", "1 nonzero eigenvalue ")):
        assert rows[name]["status"] == "success"  # measured: a degenerate spectrum, not a failure
        assert f"rank collapse: {k}" in rows[name]["reason"]
        assert rows[name]["alpha"] is None or math.isnan(rows[name]["alpha"])
    assert res.summary["status"] == "success"
    good = rows["c.good.weight"]
    assert good["status"] == "success"
    # the summary averages the successful fit only: never a NaN or a -1 counted in
    assert res.summary["alpha"] == pytest.approx(good["alpha"], rel=1e-12)
    table = res.to_arrow()
    assert table.column("alpha").null_count == 2


def test_low_precision_alphas_agree(cases_dir):
    rows = rows_by_name(hubscan.analyze(cases_dir / "low_precision.safetensors"))
    ref = rows["x.fp32.weight"]
    assert {r["dtype"] for r in rows.values()} == {"float32", "bfloat16", "float16", "float8_e4m3fn"}
    assert all(r["status"] == "success" for r in rows.values())
    # rounding of the format: fp16 (11-bit mantissa) and bf16 (8-bit) perturb the entries by
    # ≤ 2^-11 and ≤ 2^-8 relative; fp8 e4m3 (4-bit) by ≤ 2^-4, enough to move xmin by a few
    # eigenvalues — bounded by alpha's own standard error sigma.
    assert abs(rows["x.fp16.weight"]["alpha"] - ref["alpha"]) < 0.01
    assert abs(rows["x.bf16.weight"]["alpha"] - ref["alpha"]) < 0.05
    assert abs(rows["x.fp8.weight"]["alpha"] - ref["alpha"]) < 2 * ref["sigma"]
    for name, rel in (("x.fp16.weight", 2 ** -10), ("x.bf16.weight", 2 ** -7), ("x.fp8.weight", 2 ** -3)):
        assert rows[name]["lambda_max"] == pytest.approx(ref["lambda_max"], rel=2 * rel)


def test_quantized_and_good(cases_dir):
    rows = rows_by_name(hubscan.analyze(cases_dir / "quantized_and_good.safetensors"))
    assert rows["q.qweight"]["status"] == "skipped" and rows["q.qweight"]["reason"].startswith("quantized")
    assert rows["q.int8.weight"]["status"] == "skipped" and rows["q.int8.weight"]["reason"].startswith("quantized")
    assert rows["c.good.weight"]["status"] == "success"


@pytest.mark.parametrize("case", ["nested_checkpoint.pt", "legacy_format.pt"])
def test_torch_checkpoints(cases_dir, case):
    rows = rows_by_name(hubscan.analyze(cases_dir / case))
    assert rows["enc.weight"]["status"] == "success"


@pytest.mark.parametrize("case,names", [
    ("args_namespace_checkpoint.pt", ["fc.weight"]),
    ("numpy_arrays_checkpoint.pt", ["fc.weight", "fc2.weight"]),
    ("path_and_numpy_checkpoint.pt", ["fc.weight"]),
    ("pickle_protocol4.pt", ["fc.weight"]),
])
def test_allow_listed_checkpoints(cases_dir, case, names, capsys):
    rows = rows_by_name(hubscan.analyze(cases_dir / case))
    for name in names:
        assert rows[name]["status"] == "success", rows[name]
    code, _, err = run_cli(capsys, cases_dir / case)
    assert code == 0 and err == ""


def test_gpt2_like(cases_dir):
    rows = rows_by_name(hubscan.analyze(cases_dir / "gpt2_like"))
    c_attn = rows["transformer.h.0.attn.c_attn.weight"]
    c_fc = rows["transformer.h.0.mlp.c_fc.weight"]
    wte = rows["transformer.wte.weight"]
    assert (c_attn["N"], c_attn["M"]) == (192, 64)
    assert (c_fc["N"], c_fc["M"]) == (256, 64)
    assert (wte["status"], wte["N"], wte["M"], wte["layer_type"]) == ("success", 60000, 64, "embedding")
    # split option: c_attn stored (in, out) → three 64×64 blocks
    split = rows_by_name(hubscan.analyze(cases_dir / "gpt2_like", split_fused=True))
    assert {k for k in split if "c_attn" in k} == {f"transformer.h.0.attn.c_attn.weight:{p}" for p in "qkv"}
    assert all(split[f"transformer.h.0.attn.c_attn.weight:{p}"]["M"] == 64 for p in "qkv")


@pytest.mark.parametrize("case,present,missing", [
    ("sharded_missing_shard", ["l0.weight"], ["l1.weight"]),
    ("sharded_index_mismatch", ["x.weight", "y.weight"], ["z.weight", "w.weight"]),
])
def test_sharded_incomplete(cases_dir, case, present, missing, capsys):
    res = hubscan.analyze(cases_dir / case)
    rows = rows_by_name(res)
    for name in present:
        assert rows[name]["status"] == "success"
    assert sorted(n for n, _ in res.missing) == sorted(missing)
    assert all(reason for _, reason in res.missing)
    assert res.summary["status"] == "incomplete"
    code, out, err = run_cli(capsys, cases_dir / case)
    assert code == 0


def test_empty_tensor_and_good(cases_dir):
    rows = rows_by_name(hubscan.analyze(cases_dir / "empty_tensor_and_good.safetensors"))
    assert rows["empty.weight"]["status"] == "skipped" and "empty" in rows["empty.weight"]["reason"]
    assert rows["c.good.weight"]["status"] == "success"


def test_conv1d_single_input_channel(cases_dir):
    rows = rows_by_name(hubscan.analyze(cases_dir / "conv1d_single_input_channel.safetensors"))
    conv = rows["feature_extractor.conv0.weight"]
    assert conv["status"] == "skipped" and "too few eigenvalues" in conv["reason"]
    assert rows["c.good.weight"]["status"] == "success"


def test_cli_writes_parquet(cases_dir, tmp_path, capsys):
    import pyarrow.parquet as pq
    out = tmp_path / "layers.parquet"  # its folder must exist: --out creates none
    code = cli_main(["analyze", str(cases_dir / "degenerate_and_good.safetensors"), "--out", str(out)])
    printed, _ = capsys.readouterr()
    assert code == 0 and "c.good.weight" in printed
    table = pq.read_table(out)
    assert table.num_rows == 3
    assert table.schema.metadata[b"hubscan.schema_version"]
    api = hubscan.analyze(cases_dir / "degenerate_and_good.safetensors").to_arrow()
    assert table.column("alpha").to_pylist() == api.column("alpha").to_pylist()
