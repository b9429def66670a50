"""The command line through its real entry point (``python -m hubscan.cli`` in a subprocess):
terminal table width, option validation, output files by suffix, one-line errors, help, -q."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import data_dir

CASES = data_dir() / "cases"


def run_cli(*args, columns: int | None = None, cwd=None, timeout=300):
    """Run ``python -m hubscan.cli ARGS`` with COLUMNS set (rich's console width); (rc, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    p = subprocess.run([sys.executable, "-m", "hubscan.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def _table_lines(out: str) -> list[str]:
    """The body lines of the per-layer table (between the header rule and the first note)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    body = []
    for line in lines[start + 1:]:
        if not re.match(r"^\s*\d+\s", line):
            break
        body.append(line)
    return body


# -- the analyze table ---------------------------------------------------------------------------

@pytest.mark.parametrize("width", [80, 200])
def test_analyze_table_fits_and_shows_numbers(width):
    import hubscan
    folder = CASES / "gpt2_like"
    result = hubscan.analyze(str(folder), split_fused=True)
    rc, out, err = run_cli("analyze", folder, "--split-fused", columns=width)
    assert rc == 0, err
    body = _table_lines(out)
    rows = result.rows
    assert len(body) == len(rows)  # one line per row: no cell wrapped onto a second line
    assert all(len(line) <= width for line in out.splitlines()[:len(body) + 3])
    for line, r in zip(body, rows):
        # the numbers are visible and equal to the API's, to the printed 3 decimals
        assert f"{r['alpha']:.3f}" in line and f"{r['D']:.3f}" in line
        assert f"{r['N']}×{r['M']}" in line
        full = r["name"] + (f":{r['part']}" if r["part"] else "")
        shown = line.split()[1]
        if width == 200:
            assert shown == full
        else:
            # shortened by abbreviating leading words: each shown word begins the full name's word at the
            # same place from the right, the last word is whole, and the layer index is never lost
            sp, fp = shown.lstrip("…").split("."), full.split(".")
            assert len(sp) <= len(fp) and len(shown) >= 16
            assert all(fp[len(fp) - len(sp) + i].startswith(w) for i, w in enumerate(sp) if w), (shown, full)
            assert sp[-1] == fp[-1]
            numbers = [w for w in fp if w.isdigit()]
            assert not numbers or numbers[-1] in sp, (shown, full)


def test_analyze_table_status_and_reasons_at_80():
    rc, out, err = run_cli("analyze", CASES / "degenerate_and_good.safetensors", columns=80)
    assert rc == 0, err
    body = _table_lines(out)
    assert len(body) == 3 and all(len(line) <= 80 for line in body)
    # degenerate spectra are measured (rank collapse: no alpha, no phase), the good one fitted
    assert [line.split()[1:] for line in body[:2]] == [["a.zero.weight", "128×64"], ["b.rank1.weight", "128×64"]]
    assert body[2].split()[-1] == "heavy-tailed"
    assert "a.zero.weight: success: rank collapse: 0 nonzero eigenvalues" in out


def test_analyze_notes_wrap_indented_at_50():
    """Below the table every note and summary line fits the width; a wrapped note continues indented
    (never back at column 0, where it would read as a new line of output)."""
    rc, out, err = run_cli("analyze", CASES / "degenerate_and_good.safetensors", columns=50)
    assert rc == 0, err
    after = out.splitlines()[out.splitlines().index(_table_lines(out)[-1]) + 1:]
    assert after and all(len(line) <= 50 for line in after), after
    assert [line for line in after if not line.startswith("  ")] == ["summary status=success"], after
    text = " ".join(line.strip() for line in after)
    assert "a.zero.weight: success: rank collapse: 0 nonzero eigenvalues (above 1e-05)" in text
    assert "layers: 3 analyzed, 0 failed, 0 skipped" in text


def test_analyze_folder_of_several_models_is_refused(tmp_path):
    """A folder that a survey would enumerate as several models is not analyzed as one (their layers would
    share one summary): one line naming the models and the survey command; paths as typed (relative)."""
    folder = tmp_path / "folds"
    folder.mkdir()
    for name in ("fold0.safetensors", "fold1.safetensors", "fold2.safetensors"):
        shutil.copy(CASES / "ok_small.safetensors", folder / name)
    rc, out, err = run_cli("analyze", "folds", cwd=tmp_path)
    assert rc == 1 and out == "" and err.count("\n") == 1, (out, err)
    assert err.strip() == ("hubscan: error: folds: a folder of 3 models (fold0.safetensors, fold1.safetensors, "
                           "fold2.safetensors): analyze one of them, or survey the folder "
                           "(hubscan survey --source local:folds --out DATASET)")
    rc, out, err = run_cli("analyze", "folds/fold1.safetensors", cwd=tmp_path)
    assert rc == 0, err
    rc, out, err = run_cli("analyze", "nope", cwd=tmp_path)
    assert rc == 1 and err.strip() == "hubscan: error: nope: no such file or folder"  # not /abs/path/nope
    # a dangling link (an HF cache snapshot whose blob is gone): where it points, not "no weight files found"
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "model.safetensors").symlink_to(tmp_path / "blobs" / "9f2c")
    (tmp_path / "gone").symlink_to(tmp_path / "elsewhere")
    for ref, link in (("snap", "snap/model.safetensors"), ("snap/model.safetensors", "snap/model.safetensors"),
                      ("gone", "gone")):
        rc, out, err = run_cli("analyze", ref, cwd=tmp_path)
        target = "elsewhere" if ref == "gone" else "blobs/9f2c"  # (paths under the working folder: relative)
        assert rc == 1 and err.strip() == f"hubscan: error: {link}: a link to {target}, which does not exist", err
    (tmp_path / "loopa").symlink_to("loopb")
    (tmp_path / "loopb").symlink_to("loopa")
    rc, out, err = run_cli("analyze", "loopa", cwd=tmp_path)
    assert rc == 1 and err.strip() == "hubscan: error: loopa: a link to loopb: a loop of symbolic links", err
    (tmp_path / "piped").mkdir()
    os.mkfifo(tmp_path / "piped" / "model.safetensors")  # in a folder: named, not "no weight files found"
    rc, out, err = run_cli("analyze", "piped", cwd=tmp_path)
    assert rc == 1 and err.strip() == ("hubscan: error: piped/model.safetensors: is a named pipe (FIFO), not a "
                                       "file or folder hubscan reads"), err
    os.mkfifo(tmp_path / "pipe.safetensors")  # there, but nothing to read: not "no such file"
    rc, out, err = run_cli("analyze", "pipe.safetensors", cwd=tmp_path)
    assert rc == 1 and err.strip() == ("hubscan: error: pipe.safetensors: is a named pipe (FIFO), not a file or "
                                       "folder hubscan reads"), err
    rc, out, err = run_cli("analyze", "hff:org/model", cwd=tmp_path)  # a typo of a scheme: the schemes named
    assert rc == 1 and err.strip() == ("hubscan: error: hff:org/model: no such file or folder, and hff: is not a "
                                       "model reference scheme (hf:, list:, local:, timm:)")
    # option errors: the same one-line form, pointing to the command's own help (an unknown option too)
    for argv, line in ((["analyze", "nope", "--bogus"],
                        "hubscan: error: unrecognized arguments: --bogus (see hubscan analyze --help)"),
                       (["survey", "--source", "local:x", "--out", "d", "--actors", "x"],
                        "hubscan: error: argument --actors: 'x' is not an integer (see hubscan survey --help)")):
        rc, out, err = run_cli(*argv, cwd=tmp_path)
        assert rc == 2 and err.strip() == line, err


def test_analyze_heading_wraps_a_long_path_between_names(tmp_path):
    deep = tmp_path / "a-rather-long-folder-name-for-testing" / "and-another-long-subfolder-name-here"
    deep.mkdir(parents=True)
    shutil.copy(CASES / "ok_small.safetensors", deep / "model-with-a-long-name.safetensors")
    rel = "a-rather-long-folder-name-for-testing/and-another-long-subfolder-name-here/model-with-a-long-name.safetensors"
    rc, out, err = run_cli("analyze", rel, cwd=tmp_path, columns=80)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["a-rather-long-folder-name-for-testing/and-another-long-subfolder-name-here/",
                         "  model-with-a-long-name.safetensors (safetensors)"], lines[:3]
    assert all(len(line) <= 80 for line in lines)


def test_analyze_columns_option():
    rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--columns", "name,alpha,log_norm,num_spikes",
                           columns=80)
    assert rc == 0, err
    header = [line for line in out.splitlines() if "log_norm" in line][0]
    assert header.split() == ["name", "alpha", "log_norm", "num_spikes"]
    rc, _, err = run_cli("analyze", CASES / "ok_small.safetensors", "--columns", "name,bogus")
    assert rc == 2 and "bogus" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("analyze", CASES / "ok_small.safetensors", "--columns", " ,")
    assert rc == 2 and "no column named" in err and "(none)" not in err and len(err.strip().splitlines()) == 1
    rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--columns", "name,alpha,name", columns=80)
    assert rc == 0 and [ln for ln in out.splitlines() if "alpha" in ln][0].split() == ["name", "alpha"], out
    # more chosen columns than 80 columns hold: those that fit, left to right, and one line naming the rest
    many = "name,alpha,alpha_weighted,log_alpha_norm,stable_rank,lambda_max,lambda_plus,num_spikes,xmin,xmax,D"
    rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--columns", many, columns=80)
    assert rc == 0, err
    assert all(len(line) <= 80 for line in out.splitlines())
    header = next(line for line in out.splitlines() if line.split()[:2] == ["name", "alpha"]).split()
    chosen = many.split(",")
    assert header == chosen[:len(header)] and 3 <= len(header) < len(chosen)
    text, dropped = " ".join(out.split()), chosen[len(header):]  # the note may wrap at 80 columns
    assert f"{len(dropped)} chosen column(s) do not fit 80 columns: {', '.join(dropped)} (all are in --out)" in text


# -- --out by suffix, provenance, no folders created ---------------------------------------------

@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_out_records_the_cpu_library(tmp_path, monkeypatch, lib):
    """``HUBSCAN_CPU_LINALG`` fixes the library; the --out file's provenance names it, and the alphas of the
    two agree to rounding (the reference: the other library's run, float64 SVD-checked in test_eigen)."""
    case = CASES / "degenerate_and_good.safetensors"
    monkeypatch.setenv("HUBSCAN_CPU_LINALG", lib)
    rc, _, err = run_cli("analyze", case, "--out", tmp_path / "l.parquet", "-q")
    assert rc == 0, err
    t = pq.read_table(tmp_path / "l.parquet")
    provenance = json.loads(t.schema.metadata[b"hubscan.provenance"])
    assert provenance["cpu_linalg"] == lib and provenance["cpu_threads"] == 1  # run_cli: OMP_NUM_THREADS=1
    import hubscan
    from hubscan.esd import eigen
    monkeypatch.setitem(eigen._cpu_choice, "setting", "numpy" if lib == "torch" else "torch")
    import math
    other = {r.name: r.metrics.get("alpha") for r in hubscan.analyze(str(case)).rows}
    other = {k: None if v is None or math.isnan(v) else v for k, v in other.items()}  # null in the file
    got = {r["name"]: r["alpha"] for r in t.to_pylist()}
    assert got.keys() == other.keys() and sum(v is not None for v in got.values()) >= 1
    for name, a in got.items():
        assert (a is None and other[name] is None) or a == pytest.approx(other[name], rel=1e-10), name


def test_analyze_out_by_suffix(tmp_path):
    import hubscan
    case = CASES / "degenerate_and_good.safetensors"
    result = hubscan.analyze(str(case))
    for suffix in (".parquet", ".csv", ".json"):
        out = tmp_path / f"layers{suffix}"
        rc, stdout, err = run_cli("analyze", case, "--out", out, "-q")
        assert rc == 0 and stdout == "" and err == "", (stdout, err)
        if suffix == ".parquet":
            t = pq.read_table(out)
            rows = t.to_pylist()
            prov = json.loads(t.schema.metadata[b"hubscan.provenance"])
            assert prov["model"] == str(case) and prov["source"] == "local" and prov["revision"]
            assert prov["options"]["min_evals"] == 8 and prov["hubscan_version"] == hubscan.__version__
            assert prov["cpu_linalg"] in ("torch", "numpy")  # the library of its eigenvalues (measured)
        elif suffix == ".csv":
            with open(out, newline="") as fh:
                rows = list(csv.DictReader(fh))
            assert out.read_bytes()[:4] != b"PAR1"
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["name"] for r in rows] == [r["name"] for r in result.rows]
        good = [r for r in rows if r["name"] == "c.good.weight"][0]
        assert float(good["alpha"]) == pytest.approx(result.rows[2]["alpha"], rel=1e-12)


@pytest.mark.parametrize("args", [
    ["analyze", CASES / "ok_small.safetensors", "--out", "{tmp}/no/such/dir/x.parquet"],
    ["analyze", CASES / "ok_small.safetensors", "--out", "{tmp}/x.txt"],
])
def test_analyze_out_refused(tmp_path, args):
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    rc, out, err = run_cli(*args)  # an option value refused before anything runs: exit 2, as every refusal
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Error" not in err
    assert not (tmp_path / "no").exists() and not (tmp_path / "x.txt").exists()


def test_analyze_out_that_cannot_be_written_names_the_output(tmp_path):
    """The output cannot be written (here: a file-size limit, as a full disk): one line naming --out's file and
    the system's reason, exit 1 — before, the line named the model analyzed and quoted pyarrow's text."""
    import resource
    import signal

    def limit():  # writes past 4 kB fail with EFBIG instead of killing the process (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = tmp_path / "layers.parquet"
    p = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(CASES / "degenerate_and_good.safetensors"),
                        "--out", str(out), "-q"], capture_output=True, text=True, preexec_fn=limit, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    assert p.returncode == 1 and p.stderr.splitlines() == [f"hubscan: error: {out}: cannot be written (file too large)"]
    assert os.listdir(tmp_path) == []  # no partial file, no temporary left


def test_analyze_out_that_is_not_a_file_is_refused_before_anything_runs(tmp_path):
    """--out naming (or linking to) a FIFO, a folder, or only a suffix: exit 2 before the analysis, nothing
    replaced (a symbolic link's target was renamed over: /dev/null became a plain file)."""
    import stat
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "link.csv").symlink_to(fifo)
    (tmp_path / "d.csv").mkdir()
    for out, why in (("link.csv", "is a FIFO, not a file hubscan can write"),
                     ("d.csv", "is a folder, not a file hubscan can write"), (".csv", "unknown file type")):
        rc, stdout, err = run_cli("analyze", CASES / "ok_small.safetensors", "--out", out, cwd=tmp_path)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and why in err and stdout == "", (out, err)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and (tmp_path / "link.csv").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "link.csv", "pipe"] and os.listdir(tmp_path / "d.csv") == []


def test_analyze_out_through_a_symbolic_link_writes_its_target(tmp_path):
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("old")
    target.chmod(0o600)
    link.symlink_to(target)
    rc, out, err = run_cli("analyze", CASES / "degenerate_and_good.safetensors", "--out", link, "-q")
    assert rc == 0 and err == ""
    import hubscan
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link kept (before: replaced by a file)
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)  # the file's permissions kept
    with open(target, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [r["name"] for r in hubscan.analyze(CASES / "degenerate_and_good.safetensors").rows]
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "real.csv"]


def test_warnings_name_layers_as_the_table_shows_them(tmp_path):
    """The warnings line lists layers by id when the table shows ids, by name when --columns leaves the id out
    (ids the table does not show named nothing)."""
    import torch
    from safetensors.torch import save_file

    import hubscan
    g = torch.Generator().manual_seed(0)
    save_file({"ok.weight": torch.randn(8, 8, generator=g), "gauss.weight": torch.randn(1000, 500, generator=g)},
              str(tmp_path / "m.safetensors"))
    rows = {r["name"]: r for r in hubscan.analyze(tmp_path / "m.safetensors").rows}
    assert rows["gauss.weight"]["warning"] == "under-trained" and rows["gauss.weight"]["alpha"] > 6
    lid = rows["gauss.weight"]["layer_id"]
    rc, out, _ = run_cli("analyze", tmp_path / "m.safetensors", columns=80)
    assert rc == 0 and f"warnings (layer ids): {lid} (under-trained)" in out, out
    rc, out, _ = run_cli("analyze", tmp_path / "m.safetensors", "--columns", "name,alpha", columns=80)
    assert rc == 0 and "warnings (layer names): gauss.weight (under-trained)" in out, out


# -- option validation: one line, exit 2 ---------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["survey", "--source", "local:x", "--out", "o", "--actors", "0"], "--actors"),
    (["survey", "--source", "local:x", "--out", "o", "--actors", "-2"], "--actors"),
    (["survey", "--source", "local:x", "--out", "o", "--max-in-flight", "0"], "--max-in-flight"),
    (["survey", "--source", "local:x", "--out", "o", "--limit", "-1"], "--limit"),
    (["correlate", "--dataset", "d", "--bootstrap", "-5"], "--bootstrap"),
    (["analyze", "m", "--min-evals", "-5"], "--min-evals"),
    (["analyze", "m", "--min-evals", "1e9"], "--min-evals"),
    (["analyze", "m", "--max-evals", "0"], "--max-evals"),
    (["analyze", "m", "--min-evals", "50", "--max-evals", "10"], "--max-evals"),
    (["analyze", "m", "--evals-thresh", "-1"], "--evals-thresh"),
    (["analyze", "m", "--evals-thresh", "nan"], "--evals-thresh"),
    (["analyze", "m", "--timeout", "-1"], "--timeout"),
    (["analyze", "m", "--max-retries", "-3"], "--max-retries"),
    (["analyze", "m", "--device", "tpu"], "--device"),
    (["survey", "--source", "local:x", "--out", "o", "--storage-options", "{bad"], "--storage-options"),
])
def test_bad_options_one_line(tmp_path, args, needle):
    rc, out, err = run_cli(*args, cwd=tmp_path)
    assert rc == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and needle in err and "Error" not in err
    assert os.listdir(tmp_path) == []  # nothing created


def test_cuda_without_gpu_refused(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for cmd in (["survey", "--source", f"local:{CASES}", "--out", tmp_path / "ds"],
                ["analyze", CASES / "ok_small.safetensors"]):
        rc, out, err = run_cli(*cmd, "--device", "cuda")
        assert rc == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()


def test_help_has_examples_and_no_empty_choice():
    rc, out, _ = run_cli("analyze", "--help", columns=200)
    assert rc == 0 and "examples:" in out and "{none,xmin_peak,clip_xmax}" in out and "{," not in out
    for cmd in ("survey", "sql", "compact", "migrate", "accuracy", "correlate", "report"):
        rc, out, _ = run_cli(cmd, "--help", columns=200)
        assert rc == 0 and re.search(r"^examples?:\n  hubscan " + cmd, out, re.M), cmd
        if cmd in ("accuracy", "correlate", "report"):
            assert re.search(r"--dataset DIR_OR_URL\s+\S", out) and "--storage-options" in out, cmd
    rc, out, _ = run_cli("report", "--help", columns=200)
    for opt in ("--metric", "--benchmark", "--group-by"):
        assert re.search(opt + r" \S+\s+\w", out), opt


def test_debug_after_subcommand_shows_traceback(tmp_path):
    missing = tmp_path / "missing.safetensors"
    rc, _, err = run_cli("analyze", missing)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and str(missing) in err
    rc, _, err = run_cli("analyze", missing, "--debug")
    assert rc == 1 and "Traceback" in err


# -- accuracy: no dataset from a typo, matches reported ------------------------------------------

@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    """A real survey (CLI, embedded Ray) of a small local hub: two models under hub/net/."""
    root = tmp_path_factory.mktemp("cli")
    hub = root / "out" / "hub" / "net"
    hub.mkdir(parents=True)
    shutil.copy(CASES / "ok_small.safetensors", hub / "a.safetensors")
    shutil.copy(CASES / "degenerate_and_good.safetensors", hub / "b.safetensors")
    rc, out, err = run_cli("survey", "--source", "local:out/hub", "--out", "ds", "--actors", "1", "--no-progress",
                           cwd=root, timeout=600)
    assert rc == 0, err
    rc, out, err = run_cli("sql", "--dataset", "ds", "--format", "json", "SELECT model_id FROM models ORDER BY 1",
                           cwd=root)
    assert rc == 0, err
    return root, [r["model_id"] for r in json.loads(out)]


def test_accuracy_refuses_missing_dataset(tmp_path):
    (tmp_path / "acc.csv").write_text("model_id,metric,value\nx,top1,1\n")
    rc, out, err = run_cli("accuracy", "--dataset", "typo/ds", "--csv", "acc.csv", cwd=tmp_path)
    assert rc == 1 and "typo/ds" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "typo").exists()


def test_accuracy_reports_matches_and_stores_local(local_dataset):
    root, ids = local_dataset
    assert len(ids) == 2
    # the ids the user sees: the path under the surveyed folder, as typed from the checkout
    shown = [mid if mid.startswith("/") else f"out/hub/{mid}" for mid in ids]
    lines = ["model_id,metric,value", f"{shown[0]},top1,71.5", f"{shown[1]},top1,64.0", "elsewhere/c.pt,top1,1"]
    (root / "acc.csv").write_text("\n".join(lines) + "\n")
    rc, out, err = run_cli("accuracy", "--dataset", "ds", "--csv", "acc.csv", cwd=root, columns=200)
    assert rc == 0, err
    assert "3 accuracy rows for 3 models" in out and "2 of them match a surveyed model" in out
    assert "  not in the dataset: elsewhere/c.pt" in out.splitlines(), out  # the row that found no model, named
    rc, out, err = run_cli("sql", "--dataset", "ds", "--format", "json",
                           "SELECT source, model_id, value FROM accuracy ORDER BY value DESC", cwd=root)
    got = json.loads(out)
    assert [g["source"] for g in got] == ["local"] * 3
    assert [g["model_id"] for g in got[:2]] == ids
    # nothing matches: a warning, still exit 0
    (root / "none.csv").write_text("model_id,metric,value\nnot/a/model.pt,top1,3\n")
    rc, out, err = run_cli("accuracy", "--dataset", "ds", "--csv", "none.csv", cwd=root, columns=200)
    assert rc == 0 and "0 of them match" in out and "warning" in err and "no row names a model" in err
    # correlate on a metric the dataset lacks: one line naming the metrics it has
    rc, out, err = run_cli("correlate", "--dataset", "ds", "--metric", "accuracy", cwd=root, columns=80)
    assert rc == 1 and out == "" and err.count("\n") == 1, err
    assert "no model has both HTSR metrics and a 'accuracy' accuracy (the accuracy table holds: top1 (custom); choose with --metric/--benchmark)" in err


def test_sql_table_and_errors_at_80_columns(local_dataset):
    """The table keeps ids whole at 80 columns (the other columns give way); a bad query is one line with
    DuckDB's reason and the views the dataset has, no DuckDB error class, no internal scan names."""
    root, ids = local_dataset
    rc, out, err = run_cli("sql", "--dataset", "ds", "SELECT model_key, model_id, revision, alpha, alpha_weighted "
                           "FROM models ORDER BY model_id", cwd=root, columns=80)
    assert rc == 0, err
    assert all(len(line) <= 80 for line in out.splitlines())
    rc2, js, _ = run_cli("sql", "--dataset", "ds", "--format", "json", "SELECT model_key, model_id FROM models "
                         "ORDER BY model_id", cwd=root)
    for r in json.loads(js):
        assert r["model_key"] in out and r["model_id"] in out, out
    rc, out, err = run_cli("sql", "--dataset", "ds", "SELECT * FROM modles", cwd=root, columns=80)
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert 'modles does not exist! Did you mean "models"?' in err and "(views: accuracy, esd, latest_layers, latest_models, layers, models, surveys)" in err
    assert "Catalog Error" not in err and "_arrow" not in err and "LINE 1" not in err
    # every column of models: those that fit, whole ids first, and one note naming the rest
    rc, out, err = run_cli("sql", "--dataset", "ds", "SELECT * FROM models", cwd=root, columns=80)
    assert rc == 0, err
    assert all(len(line) <= 80 for line in out.splitlines()) and all(i in out for i in ids)
    assert "column(s) do not fit 80 columns: " in " ".join(out.split())
    # long ids and names give way before a number does: the alpha of the ORDER BY stays whole
    long_id, long_name = "org-with-a-long-name/model-" + "x" * 40, "encoder.layer.11." + "attention." * 6 + "weight"
    rc, out, err = run_cli("sql", "--dataset", "ds", f"SELECT '{long_id}' AS model_id, '{long_name}' AS name, "
                           "3.14159 AS alpha, 'why ' || repeat('and ', 20) AS reason ORDER BY alpha", cwd=root, columns=80)
    assert rc == 0 and all(len(line) <= 80 for line in out.splitlines()) and "do not fit" not in out, out
    # an id cut in the middle (its head and distinguishing tail stay); a layer name shortened as analyze does
    assert "3.14159" in out and re.search(r"│ org-with-…x{12,} │ (e\.|…)l\.11\.a\.[a-z.]*weight", out), out
    assert ("name shortened to fit 80 columns (encoder.layer.0. → e.l.0.; --format csv or json shows whole names)"
            in " ".join(out.split())), out  # pasted into a WHERE clause, a shortened name matches nothing
    # layer names that differ by an index keep it (a middle cut made MiniLM's layers 4 and 5 look alike)
    rc, out, err = run_cli("sql", "--dataset", "ds", f"SELECT * FROM (VALUES ('{long_id}', 'encoder.layer.4.attention."
                           f"self.value.weight', 8.44), ('{long_id}', 'encoder.layer.5.attention.self.value.weight', 7.84))"
                           " t(model_id, name, alpha)", cwd=root, columns=60)
    names = [line.split("│")[2].strip() for line in out.splitlines() if line.startswith("│ org")]
    assert rc == 0 and len(names) == 2 and names[0] != names[1], out
    assert all(re.fullmatch(rf"(…|e\.l\.){i}\..*value\.weight", n) for i, n in zip((4, 5), names)), names
    # a list is cut between its elements, a timestamp never
    elems = [f"{k}.{k}5" for k in range(1, 13)]
    rc, out, err = run_cli("sql", "--dataset", "ds", f"SELECT [{', '.join(elems)}]::DOUBLE[] AS q, TIMESTAMPTZ '2026-12-07 "
                           "07:36:12.345+00' AS analyzed_at, 'x' || repeat('y', 90) AS reason", cwd=root, columns=80)
    assert rc == 0 and "2026-12-07 07:36:12 " in out, out
    cell = re.search(r"\[([^\]]*)…\]", out).group(1)
    assert cell and all(e in elems for e in cell.rstrip(", ").split(", ")), out
    # small floats keep their digits (not 0.0000)
    rc, out, err = run_cli("sql", "--dataset", "ds", "SELECT 1.63e-05 AS x, 2.625 AS y", cwd=root, columns=80)
    assert "1.63e-05" in out and "2.625" in out and "2.6250" not in out
    rc, out, err = run_cli("sql", "--dataset", "ds", "SELECT 'NaN'::double AS n, NULL AS z", cwd=root, columns=80)
    assert rc == 0 and "│ nan │" in out  # NaN is not shown as the blank of a NULL
    rc, out, err = run_cli("sql", "--dataset", "ds", "SELECT model_id FROM models WHERE false", cwd=root, columns=80)
    assert rc == 0 and "model_id" in out and out.splitlines()[-1] == "(no rows)", out  # not an empty-looking table
    # several statements: each result in turn, as DuckDB's shell shows them (SET, CREATE … run, unshown)
    rc, out, err = run_cli("sql", "--dataset", "ds", "SET threads = 1; CREATE TEMP TABLE n AS SELECT count(*) AS "
                           "n_models FROM models; SELECT n_models FROM n; SELECT 'second' AS which", cwd=root, columns=80)
    assert rc == 0, err
    assert out.index("n_models") < out.index(f"│ {len(ids):>8} │") < out.index("which") < out.index("second"), out
    assert "Count" not in out and "Success" not in out, out
    rc, out, err = run_cli("sql", "--dataset", "ds", "--format", "json", "SET threads = 1; SELECT 7 AS x", cwd=root)
    assert rc == 0 and json.loads(out) == [{"x": 7}], (out, err)
    rc, out, err = run_cli("sql", "--dataset", "ds", "--format", "csv", "SELECT 1; SELECT 2", cwd=root)
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "--format csv takes a query with one statement that returns rows; this one has 2" in err, err
    # statements without rows just run (DuckDB's COPY writes its file); JSON stays JSON (no NaN / Infinity)
    rc, out, err = run_cli("sql", "--dataset", "ds", "COPY (SELECT 42 AS answer) TO 'answer.parquet'", cwd=root)
    assert rc == 0 and out == "" and err == "", (out, err)
    assert pq.read_table(root / "answer.parquet").column("answer").to_pylist() == [42]
    rc, out, err = run_cli("sql", "--dataset", "ds", "--format", "json", "SELECT 'NaN'::double AS n, 'inf'::double AS i, "
                           "'x\\x00y'::blob AS b, 1.5::decimal(4,2) AS d, [1.0, 'nan'::double] AS l", cwd=root)
    assert rc == 0 and json.loads(out) == [{"n": None, "i": None, "b": "x\\x00y", "d": 1.5, "l": [1.0, None]}], out
    for q, why in (("", "empty query"), ("-- nothing", "the query holds no statement (only comments)")):
        rc, out, err = run_cli("sql", "--dataset", "ds", q, cwd=root)
        assert rc == 1 and why in err and len(err.strip().splitlines()) == 1 and "NoneType" not in err


def test_quiet_prints_nothing(local_dataset, tmp_path):
    root, _ = local_dataset
    (root / "q.csv").write_text("model_id,metric,value\nnot/a/model2.pt,top1,3\n")
    rc, out, err = run_cli("-q", "accuracy", "--dataset", "ds", "--csv", "q.csv", cwd=root)
    assert rc == 0 and out == "" and err == ""
    rc, out, err = run_cli("report", "--dataset", "ds", "--out", tmp_path / "r.html", "-q", cwd=root)
    assert rc == 0 and out == "" and err == "" and (tmp_path / "r.html").exists()
    rc, out, err = run_cli("survey", "--source", "local:out/hub", "--out", tmp_path / "ds2", "--actors", "1", "-q",
                           cwd=root, timeout=600)
    assert rc == 0 and out == "" and err == "", (out, err)  # not even Ray's start-up line


def test_missing_input_file_one_line_without_class_name(local_dataset):
    root, _ = local_dataset
    rc, out, err = run_cli("accuracy", "--dataset", "ds", "--csv", "missing.csv", cwd=root)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "missing.csv" in err and "no such file" in err and "Error" not in err


def test_report_out_folder_not_created(local_dataset, tmp_path):
    root, _ = local_dataset
    rc, out, err = run_cli("report", "--dataset", "ds", "--out", tmp_path / "no" / "r.html", cwd=root)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "no").exists()
    rc, out, err = run_cli("report", "--dataset", "ds", "--out", tmp_path / "r.pdf", cwd=root)
    assert rc == 2 and "unknown file type (use .html / .htm)" in err and len(err.strip().splitlines()) == 1


def test_plot_says_what_it_does(tmp_path):
    rc, out, err = run_cli("analyze", CASES / "degenerate_and_good.safetensors", "--plot", tmp_path / "plots",
                           columns=120)
    assert rc == 0, err
    lines = out.splitlines()
    n = int(re.match(r"plotting (\d+) layer ESDs to", lines[0]).group(1))
    assert f"wrote {n + 1} plots to" in out
    files = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert len(files) == n + 1 and "alpha_depth.png" in files and "esd_002_c.good.weight.png" in files


def test_fit_on_few_eigenvalues_is_shown_on_the_terminal():
    """A LoRA factor (rank 8) is fitted on 8 eigenvalues: the terminal says so, not only --out."""
    rc, out, err = run_cli("analyze", CASES / "llm" / "adapter_model.safetensors", columns=80)
    assert rc == 0, err
    caveats = [ln for ln in out.splitlines() if "few eigenvalues: fit on 8 (< 20)" in ln]
    assert len(caveats) == 2, out  # lora_A and lora_B


def test_plot_folder_parent_must_exist(tmp_path):
    target = tmp_path / "typo" / "plots"
    rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--plot", target, columns=80)
    assert rc != 0 and not (tmp_path / "typo").exists()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0] and "Error" not in lines[0], err
    rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--plot", tmp_path / "plots", columns=80)
    assert rc == 0 and any((tmp_path / "plots").iterdir()), err  # the plot folder itself is created


def test_survey_summary_fits_80_columns(tmp_path):
    """The end-of-survey summary (this run's table, the dataset's totals, per-family lines) fits 80 columns."""
    import shutil
    hub = tmp_path / "hub"
    hub.mkdir()
    for name in ("ok_small.safetensors", "degenerate_and_good.safetensors"):
        shutil.copy(CASES / name, hub / name)
    rc, out, err = run_cli("survey", "--source", f"local:{hub}", "--out", tmp_path / "ds", "--actors", "1",
                           "--no-progress", columns=80, timeout=600)
    assert rc == 0, err
    lines = out.splitlines()
    assert all(len(ln) <= 80 for ln in lines), "\n".join(ln for ln in lines if len(ln) > 80)
    body = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("models"))
    assert lines[body].split()[:4] == ["models", "done", "success", "incompl."]
    assert lines[body + 2].split()[:3] == ["2", "0", "2"], out  # 2 models, none already done, 2 succeeded
    assert any("the whole dataset (latest revision of each model), models by status" in ln for ln in lines) and "success: 2" in out


def test_shortened_names_stay_distinct():
    """Names whose one-letter abbreviations collide (query_projection / qk_norm_projection) keep more
    letters; every shortened name fits the width and keeps the layer index."""
    from hubscan.cli import _short_names

    stem = "transformer.encoder.layers.10.self_attn."
    names = [stem + w + ".weight" for w in ("query_projection", "qk_norm_projection", "key_projection")]
    names.append("transformer.encoder.layers.10.mlp.fc1.weight")
    for width in (20, 24, 30):
        short = _short_names(names, width)
        assert len(set(short)) == len(names) and all(len(s) <= width and "10" in s for s in short), short
    assert _short_names(["a.b", "a.b"], 2) == ["…b", "…b"]  # equal names may stay equal
    # cut at a dot, keeping as many trailing indices as the width holds (not only the last one)
    deep = ".".join("abcdefghij") + "." + ".".join(str(i) for i in range(16)) + ".weight"
    assert _short_names([deep], 35) == ["…5.6.7.8.9.10.11.12.13.14.15.weight"]
    # LoRA matrices whose abbreviations collide only in lora_A / lora_B: that word stays whole and no layer
    # index is given up for it (the names of layers 3 and 17 had become the same '…k_proj.lora_A.default.weight')
    lora = [f"base_model.model.model.language_model.decoder.layers.{i}.self_attention_module.{p}_proj.lora_{ab}."
            "default.weight" for i in (3, 17) for p in "qk" for ab in "AB"]
    for width in (24, 30, 38, 44):
        short = _short_names(lora, width)
        assert len(set(short)) == len(lora) and all(len(t) <= width for t in short), short
        assert all(re.search(rf"(^|[.…]){n.split('.')[6]}\.", t) and f"lora_{n.split('lora_')[1][0]}" in t
                   for n, t in zip(lora, short)), short


def test_fitted_table_with_long_group_names_cuts_no_number():
    """correlate's table with 65-character group names at 80 columns: the group names give way (cut in the
    middle), optional columns go and are named, every number stays whole (before: rho cut to 3 characters
    under a header cut to 'r', n / tau / p(tau) gone unnamed)."""
    import io

    from rich.console import Console

    from hubscan.cli import _fitted_table
    titles = ["group", "metric", "n", "rho", "p(rho)", "tau", "p(tau)", "r", "rmse", "r2"]
    group = "a_really_quite_long_organisation_name_used_as_a_family_for_testing_width"
    cells = [[group + str(k), m, "7", "0.107", "0.840", "0.048", "1.000", "0.321", "1.234", "0.103"]
             for k in range(2) for m in ("alpha", "log_spectral_norm", "log_alpha_norm")]
    for width in (80, 60):
        dropped: list = []
        table = _fitted_table("t", titles, [list(r) for r in cells], left=("group", "metric"), flexible="metric",
                              min_flexible=10, want_flexible=17, optional=("p(rho)", "r", "rmse", "r2"),
                              width=width, dropped=dropped, shrinkable=("group",))
        out = io.StringIO()
        Console(file=out, width=width).print(table)
        lines = out.getvalue().splitlines()
        assert all(len(line) <= width for line in lines)
        header = lines[1].split()
        assert set(header) | set(dropped) == set(titles) and not set(header) & set(dropped), (header, dropped)
        body = [line.split() for line in lines[3:] if line.strip()]
        for row in body:  # every shown number whole
            for t, v in zip(header[2:], row[2:]):
                assert v == cells[0][titles.index(t)], (t, v)
        assert len({row[0] for row in body}) == 2 and len({tuple(row[:2]) for row in body}) == len(cells)
    assert dropped[:4] == ["p(rho)", "r", "rmse", "r2"]  # the optional ones first, then from the right


def test_sql_and_changes_on_a_dataset_with_one_interrupted_survey_and_no_model(tmp_path):
    """A first survey stopped before its first model commit leaves only a ``surveys`` row: ``hubscan sql``
    reads the survey's tables as empty views with their columns (no DuckDB "does not exist"), and
    ``hubscan changes`` says in one line that there is nothing to compare yet (exit 0)."""
    import datetime as dt

    from hubscan.schema import TABLES, rows_to_table
    from hubscan.store import Dataset
    ds = tmp_path / "ds"
    now = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)
    Dataset(str(ds)).write("surveys", rows_to_table([{"survey_id": "s1", "started_at": now, "finished_at": now,
                                                      "source": "local:x", "interrupted": True}], "surveys"))
    rc, out, err = run_cli("sql", "--dataset", ds, "--format", "json",
                           "SELECT (SELECT count(*) FROM models) AS m, (SELECT count(*) FROM layers) AS l, "
                           "(SELECT count(*) FROM esd) AS e, (SELECT count(*) FROM surveys WHERE interrupted) AS s")
    assert rc == 0 and err == "", err
    assert json.loads(out) == [{"m": 0, "l": 0, "e": 0, "s": 1}]
    rc, out, err = run_cli("sql", "--dataset", ds, "--format", "csv", "SELECT * FROM models")
    assert rc == 0 and out.splitlines() == [",".join(TABLES["models"].names)], err
    rc, out, err = run_cli("sql", "--dataset", ds, "--format", "csv",  # lists and structs as JSON a reader parses
                           "SELECT ['a/b.pt', 'c'] AS files, [1.5, 2.0] AS x, {'k': 1} AS s")
    import csv
    (row,) = list(csv.DictReader(out.splitlines()))
    assert rc == 0 and json.loads(row["files"]) == ["a/b.pt", "c"] and json.loads(row["x"]) == [1.5, 2.0] \
        and json.loads(row["s"]) == {"k": 1}, out
    rc, out, err = run_cli("sql", "--dataset", ds, "SELECT * FROM lineage")  # not a survey table: still no view
    assert rc == 1 and "(views: accuracy, esd, latest_layers, latest_models, layers, models, surveys)" in err
    rc, out, err = run_cli("changes", "--dataset", ds)
    assert (rc, err) == (0, "") and out.splitlines() == [
        f"{ds}: one survey so far (s1): nothing to compare yet (changes need two surveys)"]
    rc, out, err = run_cli("changes", "--dataset", ds, "--json")
    c = json.loads(out)
    assert rc == 0 and c["older"] is None and c["newer"]["survey_id"] == "s1" and c["new"] == c["status"] == []
    rc, out, err = run_cli("changes", "--dataset", ds, "--survey", "s9")
    assert rc == 1 and err.startswith("hubscan: error: ") and "no survey 's9'" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="readiness read from /proc (Linux)")
def test_sigterm_to_analyze_is_one_line_and_exit_143(tmp_path):
    """SIGTERM to a command without Ray (``hubscan analyze`` busy with its eigenvalues): ``hubscan:
    interrupted (SIGTERM)`` in one line, exit 143 = 128 + 15, no traceback."""
    import signal
    import time

    import numpy as np
    import torch
    from safetensors.torch import save_file
    rng = np.random.default_rng(0)
    f = tmp_path / "big.safetensors"
    save_file({f"l{i}.weight": torch.from_numpy(rng.standard_t(3, size=(3000, 3000)).astype(np.float32))
               for i in range(8)}, str(f))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "hubscan.cli", "analyze", str(f)], env=env, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def reading():  # ready: the weight file is open (the analysis of 8 matrices follows)
            fd = f"/proc/{p.pid}/fd"
            try:
                return str(f) in [os.readlink(os.path.join(fd, x)) for x in os.listdir(fd)]
            except OSError:
                return False
        t0 = time.monotonic()
        while not reading():
            assert p.poll() is None and time.monotonic() - t0 < 120
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143 and err.strip().splitlines() == ["hubscan: interrupted (SIGTERM)"], err


def test_help_fits_80_columns(monkeypatch):
    """Every --help at 80 columns: prose wrapped, example commands continued with a backslash that a shell
    joins back into the same words; only a single unbreakable token (a URL) may be longer."""
    import shlex

    from hubscan.cli import _continued, build_parser

    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    texts = [parser.format_help()] + [p.format_help() for p in subs.choices.values()]
    assert len(texts) == 12
    for text in texts:
        for line in text.splitlines():
            assert len(line) <= 80 or len(line.split()) == 1, line
    cmd = ("hubscan survey --source hf --author google --filter safetensors --limit 100 --out s3://bucket/htsr "
           "--storage-options '{\"region\": \"eu-west-1\"}'")
    lines = _continued(cmd, 80, "  ")
    assert len(lines) > 1 and all(len(ln) <= 80 for ln in lines)
    assert shlex.split(" ".join(ln.removesuffix("\\") for ln in lines)) == shlex.split(cmd)


def test_family_lines_align():
    """The survey summary's per-family lines keep their columns for alpha ≥ 10, negative alpha_weighted,
    a null mean and a long family name, within 80 columns."""
    from hubscan.query import family_line

    lines = [family_line("resnet", 12, 3.14, -1.5, 0, 2), family_line("bert-base-uncased-finetuned-x", 3, 12.5, 20.25, 7, 0),
             family_line("vit", 1, None, None, None, None)]
    assert all(len("  " + ln) <= 80 for ln in lines), lines  # printed indented by 2
    for word in (" alpha ", " alpha_w ", " under ", " over "):
        assert len({ln.index(word) for ln in lines}) == 1, (word, lines)
    assert "12.50" in lines[1] and "-1.50" in lines[0] and "–" in lines[2] and "bert-base-uncased-f…" in lines[1]
    # a wider terminal shows the whole name; the summary's lines fit the terminal they are printed on
    from hubscan.query import family_width
    names = ["resnet", "bert-base-uncased-finetuned-x", "vit"]
    assert family_width(names, 80) == 23 and family_width(names, 60) == 20 and family_width(names, 120) == len(names[1]) and family_width(["vit"]) == 6
    for cols in (80, 100, 120, 200):
        w = family_width(names, cols)
        assert all(len("  " + family_line(n, 3, 12.5, -20.25, 7, 999, width=w)) <= cols for n in names)
    assert "bert-base-uncased-finetuned-x " in family_line(names[1], 3, 1.0, 1.0, 0, 0, width=family_width(names, 120))


def test_long_report_lines_wrap_at_the_terminal_width():
    """doctor's findings: wrapped at the width, indentation kept, continuations indented, no word split."""
    from hubscan.cli import _wrapped

    line = ("  models: commit 00000000000000000007.json is damaged (truncated JSON); the table is readable up to "
            "version 6 — --repair rolls it back there and moves s3://bucket/a-very-long/prefix/_delta_log/x aside")
    out = _wrapped(line, 80).splitlines()
    assert len(out) > 1 and all(len(ln) <= 80 for ln in out if " " in ln.strip())
    assert out[0].startswith("  models:") and all(ln.startswith("    ") for ln in out[1:])
    assert " ".join(ln.strip() for ln in out) == line.strip()
    assert _wrapped("short", 80) == "short" and _wrapped("", 80) == ""


def test_reader_gone_ends_quietly_like_sigpipe(local_dataset):
    """`hubscan … | head -1`: the reader closes the pipe after its first line. The table (rich) and csv
    outputs alike stop quietly with 141 (128 + SIGPIPE, as a process the signal ended) — not rich's exit 1,
    which reads as "the analysis failed"."""
    root, _ = local_dataset
    env = {**os.environ, "COLUMNS": "80", "RAY_AUTH_MODE": "disabled"}
    env.pop("PYTHONUNBUFFERED", None)  # unbuffered, CPython drops the rest of a partial pipe write: no error to see
    for args in (["sql", "--dataset", "ds", "SELECT * FROM range(100000)"],
                 ["sql", "--dataset", "ds", "--format", "csv", "SELECT * FROM range(100000)"],
                 ["analyze", str(CASES / "ok_small.safetensors"), "--columns", "all"]):
        p = subprocess.Popen([sys.executable, "-m", "hubscan.cli", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=root, env=env)
        assert p.stdout.readline()  # the first line arrived: the reader leaves
        p.stdout.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 141 and err == "", (args, err)


def test_survey_refuses_a_filter_its_source_does_not_take(tmp_path):
    """``--filter`` with ``--source local:DIR`` (which enumerates a folder and takes no filter) is refused before
    anything starts — a survey of every model in the folder is not what the user asked for; a filter the
    source takes passes the check (timm's ``--exclude``)."""
    rc, out, err = run_cli("survey", "--source", f"local:{tmp_path}", "--out", tmp_path / "ds", "--filter", "bert*",
                           "--author", "me", columns=80)
    assert rc == 2 and "Traceback" not in err, err
    assert f"--source local:{tmp_path} takes no --filter, --author (its filters: none)" in " ".join(err.split()), err
    assert not (tmp_path / "ds").exists()
    rc, out, err = run_cli("survey", "--source", "timm", "--out", tmp_path / "ds", "--author", "me", columns=80)
    assert rc == 2 and "takes no --author (its filters: --filter, --exclude)" in " ".join(err.split()), err


def test_ctrl_c_before_the_command_runs_is_one_line(monkeypatch, capsys):
    """Ctrl-C while the options are checked (they import torch: seconds on a cold start) ends as Ctrl-C
    during the command does — "hubscan: interrupted", exit 130 — not a traceback through torch's imports."""
    from hubscan import cli

    def checked(parser, args):
        raise KeyboardInterrupt  # where the signal lands when it comes during `import torch`
    real = cli.build_parser

    def parser_with_interrupted_check():
        p = real()
        for action in p._subparsers._group_actions[0].choices.values():
            action.set_defaults(check=checked)
        return p
    monkeypatch.setattr(cli, "build_parser", parser_with_interrupted_check)
    try:
        rc = cli.main(["analyze", "nope"])
    except KeyboardInterrupt:  # (escaping, it would stop the whole test session)
        pytest.fail("the interrupt escaped hubscan.cli.main")
    assert rc == 130
    assert capsys.readouterr().err == "hubscan: interrupted\n"


def test_python_dash_m_hubscan_is_the_command():
    p = subprocess.run([sys.executable, "-m", "hubscan", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("hubscan "), (p.stdout, p.stderr)


def test_debug_shows_hubscans_lines_not_numbas(tmp_path):
    """``--debug`` while the MP search compiles (a fresh numba cache): numba's own debug loggers printed tens of
    thousands of compiler lines, burying hubscan's."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "nb")}
    p = subprocess.run([sys.executable, "-m", "hubscan", "--debug", "analyze", str(CASES / "ok_small.safetensors")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not [ln for ln in p.stderr.splitlines() if " numba" in ln], p.stderr[:2000]
    assert "DEBUG hubscan" in p.stderr
