"""Numerical edge matrices (``tests/data/cases/hub-r3/2_numerical``, SOURCE.md there): what a row's and a
model's status mean (README "What a status means"), each case through the library API — values against
numpy, WeightWatcher's ``WWFit`` and ``refs.json`` — and through the CLI in a subprocess (exit code and
the one summary line).

Each file holds one edge matrix and ``good.weight`` (256×128 Student-t, alpha 4.8994 in ``refs.json``).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hubscan

CASES = Path(__file__).parent / "data" / "cases" / "hub-r3" / "2_numerical"
REFS = json.loads((CASES / "refs.json").read_text())
NONFINITE = {"inf_one_entry": "x.inf.weight", "neg_inf_and_nan": "x.bad.weight", "nan_fp16": "x.nan16.weight",
             "inf_bf16": "x.infbf.weight", "conv_nan": "x.conv.weight"}
#: degenerate spectra: (name, reason); zero / constant / rank-1 are rank collapse, tiny_scale is below the fit's
#: absolute threshold 1e-5 but full rank; none has a tail, so none has a phase (issue 21: none guessed)
DEGENERATE = {"all_zero_fp16": ("x.zero.weight", "rank collapse: 0 nonzero eigenvalues"),
              "constant_matrix": ("x.const.weight", "rank collapse: 1 nonzero eigenvalue "),
              "rank1_outer": ("x.rank1.weight", "rank collapse: 1 nonzero eigenvalue "),
              "tiny_scale": ("x.tiny.weight", "all eigenvalues below the threshold 1e-05")}
TOO_FEW = {"tall_100000x2": "x.tall.weight", "wide_2x100000": "x.wide.weight", "tiny_2x2": "x.t.weight",
           "row_vector_1xN": "x.row.weight", "col_vector_Nx1": "x.col.weight"}
ALL = sorted(p.stem for p in CASES.glob("*.safetensors"))


def _analyze(case: str, **kw):
    res = hubscan.analyze(CASES / f"{case}.safetensors", **kw)
    return res, {r["name"]: r for r in res.rows}


def _W(case: str, name: str) -> np.ndarray:
    return load_file(str(CASES / f"{case}.safetensors"))[name].to(torch.float64).numpy()


def _good_only(res, rows) -> None:
    """The good matrix is analyzed and is the only layer in the model's means."""
    assert rows["good.weight"]["status"] == "success"
    assert rows["good.weight"]["alpha"] == pytest.approx(REFS["good.weight"], rel=1e-10)
    assert res.summary["alpha"] == rows["good.weight"]["alpha"]
    assert res.summary["log_norm"] == rows["good.weight"]["log_norm"]


def test_every_case_is_covered():
    assert set(ALL) == {*NONFINITE, "only_nan", *DEGENERATE, "rank2", "identity_times_3", "identity_times_3_rect",
                        "fp16_gram_overflow", "f64_gram_overflow", "f32_max_entry", "bf16_plain", "fp8_e5m2",
                        *TOO_FEW}


@pytest.mark.parametrize("case", sorted(NONFINITE))
def test_non_finite_weights_fail_the_row_and_make_the_model_incomplete(case):
    res, rows = _analyze(case)
    bad = rows[NONFINITE[case]]
    assert bad["status"] == "failed" and bad["reason"] == "non-finite values (NaN or inf) in the weights"
    assert not np.isfinite(_W(case, NONFINITE[case])).all()
    assert res.summary["status"] == "incomplete" and res.summary["num_failed"] == 1
    assert res.summary["reason"] == (f"1 layer(s) failed: {NONFINITE[case]} "
                                     "(non-finite values (NaN or inf) in the weights)")
    _good_only(res, rows)


def test_only_nan_fails_the_model():
    res, rows = _analyze("only_nan")
    assert [r["status"] for r in rows.values()] == ["failed"]
    assert res.summary["status"] == "failed"
    assert res.summary["reason"].startswith("no layer could be analyzed | 1 layer(s) failed: x.nan.weight (non-finite")


def _measured(row, W: np.ndarray) -> None:
    """Norms, rank and lambda_max of a measured row against numpy's SVD of W (float64)."""
    sv = np.linalg.svd(W, compute_uv=False)
    assert row["status"] == "success"
    assert row["lambda_max"] == pytest.approx(sv[0] ** 2, rel=1e-10, abs=1e-300)
    assert row["norm"] == pytest.approx(float(np.sum(W * W)), rel=1e-10, abs=1e-300)
    # the Gram method's documented rank (hubscan.esd.eigen.ESD): λ > λ_max·N·eps, here on numpy's σ²
    assert row["matrix_rank"] == np.count_nonzero(sv ** 2 > sv[0] ** 2 * max(W.shape) * np.finfo(np.float64).eps)
    assert row["num_evals"] == min(W.shape)


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_spectra_are_measured_without_alpha(case):
    name, why = DEGENERATE[case]
    res, rows = _analyze(case)
    r = rows[name]
    W = _W(case, name)
    _measured(r, W)
    # numpy's eigenvalues of WᵀW above the fit's threshold: fewer than 2, or all below it — no tail to fit
    ev = np.linalg.svd(W, compute_uv=False) ** 2
    assert np.count_nonzero(ev > max(1e-5, ev[0] * max(W.shape) * np.finfo(np.float64).eps)) < 2
    assert r["alpha"] is None or math.isnan(r["alpha"])
    assert why in r["reason"] and r["phase"] is None
    assert res.summary["status"] == "success" and res.summary["num_success"] == 2
    _good_only(res, rows)


def test_rank2_keeps_its_alpha_out_of_the_means():
    res, rows = _analyze("rank2")
    r = rows["x.rank2.weight"]
    W = _W("rank2", "x.rank2.weight")
    _measured(r, W)
    ev = np.linalg.svd(W, compute_uv=False) ** 2
    x = np.sort(ev[ev > 1e-5])
    assert len(x) == 2 and r["num_fit_evals"] == 2
    assert r["alpha"] == pytest.approx(1 + 2 / np.sum(np.log(x / x[0])), rel=1e-9)  # CSN eq. 3.1 at xmin = x[0]
    assert r["reason"] == "few eigenvalues: fit on 2 (< 20), alpha unreliable, not in the model's means (< 8)"
    assert res.summary["status"] == "success"
    _good_only(res, rows)


def test_identity_has_one_spectrum_and_no_phase():
    phases = set()
    for case in ("identity_times_3", "identity_times_3_rect"):
        res, rows = _analyze(case)
        r = rows["x.eye.weight"]
        _measured(r, _W(case, "x.eye.weight"))
        assert r["lambda_max"] == pytest.approx(9.0, rel=1e-12)
        assert r["alpha"] is None or math.isnan(r["alpha"])
        assert r["reason"] == "all nonzero eigenvalues are equal: no tail to fit"
        phases.add(r["phase"])
        _good_only(res, rows)
    assert phases == {None}


def test_fp16_gram_overflow():
    _, rows = _analyze("fp16_gram_overflow")
    assert rows["x.big16.weight"]["alpha"] == pytest.approx(REFS["fp16_gram_overflow"], rel=1e-10)


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_f64_gram_overflow_is_scaled(method):
    """Finite float64 weights near 1.8e160: WᵀW overflows float64. W is decomposed as W·2^−k: alpha is the
    scaled matrix's (refs: W / max|w|), the log10 norms are exact, lambda_max (about 1e321) is inf."""
    res, rows = _analyze("f64_gram_overflow", method=method)
    r = rows["x.big64.weight"]
    assert r["status"] == "success" and "beyond float64" in r["reason"]
    assert r["alpha"] == pytest.approx(REFS["f64_gram_overflow_scaled_ref"], rel=1e-12)
    W = _W("f64_gram_overflow", "x.big64.weight")
    m = np.abs(W).max()
    sv = np.linalg.svd(W / m, compute_uv=False)
    assert r["log_norm"] == pytest.approx(math.log10(np.sum((W / m) ** 2)) + 2 * math.log10(m), rel=1e-13)
    assert r["log_spectral_norm"] == pytest.approx(2 * math.log10(sv[0] * m), rel=1e-13)
    assert r["alpha_weighted"] == pytest.approx(r["alpha"] * r["log_spectral_norm"], rel=1e-13)
    assert r["sv_max"] == pytest.approx(sv[0] * m, rel=1e-12)
    assert r["lambda_max"] == math.inf and r["matrix_rank"] == 64
    assert res.summary["status"] == "success"
    assert res.summary["alpha"] == pytest.approx((REFS["good.weight"] + r["alpha"]) / 2, rel=1e-12)


@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize("factor", [2.0 ** 600, 2.0 ** -600, 2.0 ** -480])
def test_out_of_range_scaling_keeps_units(factor, method, tmp_path):
    """W·2^±600 in float64 gives W's spectrum in units of 4^±600: scale-free metrics equal W's, the log10
    ones shifted by 2·600·log10 2; the fit's 1e-5 threshold stays absolute (W·2^−600's eigenvalues are
    all below it). W·2^−480 is in range (decomposed as it is) and agrees the same way."""
    from safetensors.torch import save_file

    W = load_file(str(CASES / "rank2.safetensors"))["good.weight"].to(torch.float64)
    save_file({"w.weight": W, "s.weight": W * factor}, str(tmp_path / "m.safetensors"))
    rows = {r["name"]: r for r in hubscan.analyze(tmp_path / "m.safetensors", method=method).rows}
    w, s = rows["w.weight"], rows["s.weight"]
    assert ("beyond float64" in s["reason"]) == (abs(math.log2(factor)) == 600)
    shift = 2 * math.log2(factor) * math.log10(2)
    for col in ("log_norm", "log_spectral_norm"):
        assert s[col] == pytest.approx(w[col] + shift, rel=1e-13)
    for col in ("stable_rank", "entropy", "matrix_rank", "rank_loss", "num_spikes", "sigma_mp", "mp_softrank"):
        assert s[col] == pytest.approx(w[col], rel=1e-12)
    if factor > 1:
        assert s["alpha"] == pytest.approx(w["alpha"], rel=1e-12) and s["xmin"] == math.inf
    else:
        assert math.isnan(s["alpha"]) and "all eigenvalues below the threshold" in s["reason"]
        assert s["lambda_max"] == pytest.approx(w["lambda_max"] * factor ** 2, rel=1e-12, abs=1e-320)
        # the reason quotes W's units: the threshold as given, lambda_max = W's · factor² (before: both in
        # the scaled units, "threshold inf (lambda_max = 6.34)")
        exp10 = math.log10(w["lambda_max"]) + 2 * math.log2(factor) * math.log10(2)
        shown = f"{10 ** (exp10 - math.floor(exp10)):.3g}e{math.floor(exp10):+03d}"
        assert ("beyond float64" not in s["reason"]  # in range: numpy's own formatting of the same number
                or f"all eigenvalues below the threshold 1e-05 (lambda_max = {shown})" in s["reason"]), s["reason"]


@pytest.mark.parametrize("case,name", [("f32_max_entry", "x.maxf.weight"), ("bf16_plain", "x.bf16.weight"),
                                       ("fp8_e5m2", "x.f8.weight")])
def test_plain_alphas(case, name):
    ww = pytest.importorskip("weightwatcher.WW_powerlaw")
    _, rows = _analyze(case)
    W = _W(case, name)
    ev = np.linalg.svd(W, compute_uv=False) ** 2
    ref = REFS.get(case, ww.WWFit(np.sort(ev[ev > 1e-5])).alpha)
    assert rows[name]["status"] == "success" and rows[name]["alpha"] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("case", sorted(TOO_FEW))
def test_vectors_and_tiny_are_skipped(case):
    res, rows = _analyze(case)
    r = rows[TOO_FEW[case]]
    assert r["status"] == "skipped" and r["reason"].startswith("too few eigenvalues")
    assert res.summary["status"] == "success"
    _good_only(res, rows)


def _expected_summary(case: str) -> tuple[int, str]:
    """(exit code, the CLI's summary line) of each case."""
    if case in NONFINITE:
        return 0, (f"summary status=incomplete (1 layer(s) failed: {NONFINITE[case]} (non-finite values (NaN or inf) "
                   "in the weights))")
    if case == "only_nan":
        return 1, ("summary status=failed (no layer could be analyzed | 1 layer(s) failed: x.nan.weight (non-finite "
                   "values (NaN or inf) in the weights))")
    return 0, "summary status=success"


@pytest.mark.parametrize("case", ALL)
def test_cli(case):
    args = ["--method", "svd"] if case == "f64_gram_overflow" else []
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "analyze", str(CASES / f"{case}.safetensors"), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    rc, line = _expected_summary(case)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert [x for x in proc.stdout.splitlines() if x.startswith("summary ")] == [line]
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
    if case in DEGENERATE:
        name, why = DEGENERATE[case]
        assert re.search(rf"{re.escape(name)}: success: {re.escape(why)}", proc.stdout)


def test_model_of_only_non_weights_is_skipped_not_failed(tmp_path):
    """Every tensor skipped on purpose (an integer buffer, a matrix too small to fit): nothing is wrong, there
    is nothing to measure — the model is skipped with the reasons; a base of other shapes stays failed
    (tests/test_deltas.py)."""
    from safetensors.torch import save_file
    save_file({"ids": torch.arange(100).reshape(10, 10), "tiny.weight": torch.randn(3, 2), "b": torch.zeros(3)},
              str(tmp_path / "m.safetensors"))
    res = hubscan.analyze(tmp_path / "m.safetensors")
    assert res.summary["status"] == "skipped", res.summary
    assert res.summary["reason"].startswith("no weight matrix to measure | 2 tensor(s) skipped: ")
    assert "integer buffer" in res.summary["reason"] and "too few eigenvalues" in res.summary["reason"]
