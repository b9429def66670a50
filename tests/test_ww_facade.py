"""``hubscan.WeightWatcher`` (hubscan/ww.py) against WeightWatcher 0.7.7 on the same objects in memory:
the same DataFrame (columns in WW's order, WW's layer ids, names, longnames and types, row for row), every
value within the float64 bounds of tests/test_vs_weightwatcher.py (``COMPARE``; the MP fit's within
``SIGMA_MP_RTOL``), except where README "Migrating from WeightWatcher" says hubscan differs on purpose:
``sv_min`` of a convolution (the minimum over all slices; WW the largest per-slice minimum), a depthwise
convolution (no spectrum: ``has_esd`` False, ``status`` skipped; WW fits it).
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
pytestmark = pytest.mark.filterwarnings("ignore")
ww = pytest.importorskip("weightwatcher")
from test_inmemory import MODELS, hf_bert, hf_gpt2, timm_convnext, tv_vgg11_narrow  # noqa: E402
from test_vs_weightwatcher import COMPARE, SIGMA_MP_RTOL, _deviation  # noqa: E402

logging.getLogger("weightwatcher").setLevel(logging.WARNING)

BOUNDS = dict(COMPARE, N=("eq", 0), M=("eq", 0), Q=("rel", 1e-15), has_esd=("eq", 0), status=("eq", 0),
              layer_type=("eq", 0), longname=("eq", 0), name=("eq", 0), layer_id=("eq", 0),
              weak_rank_loss=("eq", 0),
              sigma_mp=("rel", SIGMA_MP_RTOL), bulk_max=("rel", 2.5 * SIGMA_MP_RTOL),
              mp_softrank=("rel", 2.5 * SIGMA_MP_RTOL), W_scale=("rel", 1e-9), num_spikes=("abs", 2),
              ERG_gap=("eq", 0), detX_num=("eq", 0), num_ERG_spikes=("eq", 0), detX_val=("rel", 1e-9),
              detX_val_unrescaled=("rel", 1e-9), num_fingers=("eq", 0), raw_alpha=("abs", 1e-8),
              # randomize=True, given the same shuffle (test_randomize_equals_ww_on_the_same_shuffle)
              max_rand_eval=("rel", 1e-9), num_traps=("eq", 0), rand_num_spikes=("eq", 0), rand_W_scale=("rel", 1e-9),
              rand_bulk_max=("rel", 1e-9), rand_bulk_min=("rel", 1e-9), rand_distance=("rel", 1e-9),
              rand_mp_softrank=("rel", 1e-9), rand_sigma_mp=("rel", 1e-9), ww_softrank=("rel", 1e-9),
              ww_maxdist=("abs", 1e-9))  # λ_max ≈ 2 in that test: 1e-9 of λ_max·0.5


def _ww(model, method="analyze", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(ww.WeightWatcher(model=model), method)(**kw)


#: The fit's columns: hubscan's clip_xmax rule is not WW's (hubscan/esd/powerlaw.py: WW starts at k = 2).
FIT = ("alpha", "alpha_weighted", "log_alpha_norm", "D", "sigma", "xmin", "xmax", "num_pl_spikes", "num_fingers",
       "raw_alpha", "warning", "ERG_gap")


def _same_frame(w, h, what: str, skip=()) -> int:
    """WW's frame vs hubscan's: columns and order, then every cell (module docstring); returns the cells
    compared."""
    assert list(h.columns) == list(w.columns), what
    assert len(h) == len(w) and list(h["layer_id"]) == list(w["layer_id"]), what
    n, failures = 0, []
    for (_, a), (_, b) in zip(w.iterrows(), h.iterrows()):
        if b["has_esd"] is False or b["has_esd"] == False:  # noqa: E712 - a depthwise convolution
            assert a["rf"] > 1 and min(a["N"], a["M"]) >= 1 and b["status"] == "skipped", (what, b["longname"])
            assert math.isnan(b["alpha"]) and b["layer_type"] == a["layer_type"] == "conv2d"
            continue
        for col in w.columns:
            if col == "sv_min" and a["rf"] > 1 or col == "bulk_min" or col in skip:
                continue  # sv_min of a conv: README; bulk_min: bounded by bulk_max's error, below
            if col == "sv_min":  # from the Gram matrix: |Δλ_min| ≲ N·eps·λmax (tests/test_vs_weightwatcher.py)
                n += 1
                if abs(b[col] ** 2 - a[col] ** 2) > 10 * a["N"] * np.finfo(float).eps * a["lambda_max"]:
                    failures.append(f"{what} {b['longname']} sv_min: hubscan {b[col]!r} WW {a[col]!r}")
                continue
            kind, bound = BOUNDS[col]
            d = _deviation(kind, b[col], a[col]) if kind != "eq" else (0 if b[col] == a[col] else math.inf)
            n += 1
            if d > bound:
                failures.append(f"{what} {b['longname']} {col}: hubscan {b[col]!r} WW {a[col]!r}")
        if "bulk_min" in w.columns:
            assert abs(b["bulk_min"] - a["bulk_min"]) <= 2.5 * SIGMA_MP_RTOL * a["bulk_max"]
    assert not failures, "\n".join(failures[:20])
    return n


@pytest.mark.parametrize("name", ["tv_vgg11_narrow", "timm_vit", "timm_convnext", "hf_bert", "hf_gpt2", "hf_llama",
                                  "hf_mixtral", "hf_t5", "peft_lora"])
def test_analyze_frame_equals_ww(name):
    model = MODELS[name]()
    h = hubscan.WeightWatcher(model=model).analyze()
    w = _ww(model)
    assert _same_frame(w, h, name) > 0
    # the summary: WW's metrics, averaged over the same layers (no failed fit here: the means agree)
    ours, theirs = hubscan.WeightWatcher().get_summary(h), ww.WeightWatcher().get_summary(w)
    assert set(ours) == set(theirs)
    if name != "timm_convnext":  # WW averages its depthwise fits in; hubscan has none
        for k in ours:
            assert ours[k] == pytest.approx(theirs[k], rel=1e-7, abs=1e-9), k


def test_options_add_ww_columns_in_ww_order():
    """mp_fit, detX (= ERG), clip_xmax fingers and vectors: WW's columns, in WW's order; values within the
    bounds (vectors: columns only — WW splits bulk and tail by comparing its own eigenvalues with xmin,
    README "Beyond WeightWatcher")."""
    model = hf_bert()
    watcher = hubscan.WeightWatcher(model=model)
    for kw in (dict(mp_fit=True, detX=True), dict(ERG=True)):
        _same_frame(_ww(model, **kw), watcher.analyze(**kw), str(kw))
    h = watcher.analyze(fix_fingers="clip_xmax")
    _same_frame(_ww(model, fix_fingers="clip_xmax"), h, "clip_xmax", skip=FIT)
    assert (h["raw_alpha"] >= h["alpha"]).all() and (h["num_fingers"] >= 0).all()
    h, w = watcher.analyze(vectors=True), _ww(model, vectors=True)
    assert list(h.columns) == list(w.columns)
    assert watcher.get_details() is h


def _shuffle_as_hubscan(x: np.ndarray) -> None:
    """``np.random.shuffle`` as hubscan shuffles a layer (hubscan/analysis.py ``shuffled``: one permutation of
    the flattened W from ``torch.randperm`` seeded by the default seed 0): WW 0.7.7 shuffles ``W.flatten()`` of
    a dense layer's (out, in) matrix, the layout hubscan flattens."""
    _shuffle_as_hubscan.calls += 1
    x[:] = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).numpy()]


def _dense(*layers: tuple) -> torch.nn.Sequential:
    """Linear layers (in, out) of N(0, 1/in) weights, a planted element θ at [3, 7] where given a third value."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(spec[0], spec[1]) for spec in layers))
    with torch.no_grad():
        for module, spec in zip(model, layers):
            module.weight.normal_(0, spec[0] ** -0.5)
            if len(spec) > 2:
                module.weight[3, 7] = spec[2]
    return model


def test_randomize_equals_ww_on_the_same_shuffle(monkeypatch):
    """WW's randomize columns are WW's formulas on an unseeded ``np.random.shuffle``: given hubscan's seeded
    shuffle instead, WW's frame is hubscan's, every randomize column to 1e-9 (M ≥ 100: WW shuffles once). Below
    M = 100 WW pools 5 shuffles (README): of the same shuffle here, so its one planted trap counts 5 times."""
    model = _dense((100, 200), (200, 100, 3.0), (40, 100, 3.0))
    h = hubscan.WeightWatcher(model=model).analyze(randomize=True)
    _shuffle_as_hubscan.calls = 0
    monkeypatch.setattr(np.random, "shuffle", _shuffle_as_hubscan)
    w = _ww(model, randomize=True)
    monkeypatch.undo()
    assert _shuffle_as_hubscan.calls == (1 + 1) * 2 + (5 + 1)  # the MP fit's shuffles + rand_distance's
    _same_frame(w.iloc[:2], h.iloc[:2], "randomize")
    assert list(h["num_traps"]) == [0, 1, 1] and list(w["num_traps"]) == [0, 1, 5]
    small = h.iloc[2], w.iloc[2]  # M = 40: 5 copies of the same shuffled ESD, the largest eigenvalue and the norm
    for col in ("max_rand_eval", "rand_W_scale", "rand_distance", "ww_softrank"):
        assert small[0][col] == pytest.approx(small[1][col], rel=1e-9), col
    assert small[0]["rand_sigma_mp"] == pytest.approx(small[1]["rand_sigma_mp"], rel=0.02)  # KDE of 5n points


def test_randomize_finds_planted_traps_as_ww():
    """With WW's own shuffle (numpy's global generator): an element of 3√N in N(0, 1/in) noise is a trap
    wherever either shuffle puts it (its BBP outlier, tests/test_traps.py), pure noise has none; the shuffled
    bulk edge of both within the fluctuations of an MP fit."""
    model = _dense((100, 200, 3 * 2 ** 0.5), (100, 200), (100, 300, 3 * 3 ** 0.5))  # θ = t·σ√N, t = 3
    h = hubscan.WeightWatcher(model=model).analyze(randomize=True)
    np.random.seed(0)
    w = _ww(model, randomize=True)
    assert list(h["num_traps"]) == list(w["rand_num_spikes"]) == list(w["num_traps"]) == [1, 0, 1]
    np.testing.assert_allclose(h["rand_bulk_max"], w["rand_bulk_max"], rtol=0.1)  # M = 100: ±5 % each
    np.testing.assert_allclose(h["max_rand_eval"], w["max_rand_eval"], rtol=0.12)
    np.testing.assert_allclose(h["rand_W_scale"], w["rand_W_scale"], rtol=1e-9)  # a shuffle keeps ‖W‖_F


def test_layers_filter_and_sizes_as_ww():
    model = hf_gpt2()
    watcher = hubscan.WeightWatcher(model=model)
    for kw in (dict(layers=[9, 10, 22]), dict(layers=[-9, -10]), dict(layers=["c_attn"]), dict(layers=["-c_proj"]),
               dict(layers=["embedding"]), dict(start_ids=1)):
        w, h = _ww(model, **kw), watcher.analyze(**kw)
        assert 0 < len(w) < 11 or kw == dict(start_ids=1), kw
        _same_frame(w, h, str(kw))
    torch.manual_seed(0)  # M·rf = 27, 144, 288, 48
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 32, 3), torch.nn.Conv2d(32, 64, 3),
                                torch.nn.Flatten(), torch.nn.Linear(48, 64))
    watcher = hubscan.WeightWatcher(model=model)
    for kw in (dict(min_evals=30), dict(max_evals=200), dict(layers=["conv2d"])):
        w, h = _ww(model, **kw), watcher.analyze(**kw)
        assert 0 < len(w) < 4, kw
        _same_frame(w, h, str(kw))


def test_describe_equals_ww():
    for model in (hf_gpt2(), tv_vgg11_narrow(), timm_convnext()):
        h, w = hubscan.WeightWatcher(model=model).describe(), _ww(model, "describe")
        assert list(h.columns) == list(w.columns)
        conv_swap = (w["layer_type"] == "conv2d") & (w["rf"] % 2 == 0)  # WW swaps N/M there (README)
        assert h[~conv_swap].reset_index(drop=True).equals(w[~conv_swap].reset_index(drop=True).astype(h.dtypes))


def test_state_dict_mode_equals_ww():
    """A dict is WW's state-dict mode: ids from 1 over the ``*.weight`` keys, names without ``.weight``,
    2-D dense and 4-D conv2d by rank."""
    sd = {k: v.detach() for k, v in hf_bert().state_dict().items()}
    h, w = hubscan.WeightWatcher(model=sd).analyze(), _ww(sd)
    assert len(w) == 15 and w["layer_id"].iloc[0] == 1 and w["name"].iloc[0] == "embeddings.word_embeddings"
    _same_frame(w, h, "state dict")


def test_get_esd_equals_ww():
    model = tv_vgg11_narrow()
    ids = list(_ww(model, "describe")["layer_id"])
    for layer in (ids[1], "0", ids[-1]):  # a conv by id, the first conv by name, the last dense
        ours = hubscan.WeightWatcher(model=model).get_ESD(layer=layer)
        theirs = np.sort(np.asarray(_ww(model, "get_ESD", layer=layer)))
        assert len(ours) == len(theirs) > 0
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=len(ours) * np.finfo(float).eps * theirs[-1])
    with pytest.raises(ValueError, match="no such layer"):
        hubscan.WeightWatcher(model=model).get_ESD(layer=ids[1] + 1)  # a ReLU. WW: logs an error, returns []


def test_distances_equal_ww():
    one, two = hf_bert(), hf_bert()
    with torch.no_grad():
        for p in two.parameters():
            p.add_(0.01 * torch.randn_like(p))
    h_avg, h_avg_b, h = hubscan.WeightWatcher().distances(one, two)
    w_avg, w_avg_b, w = ww.WeightWatcher().distances(one, two)
    assert list(h.columns) == list(w.columns) and list(h.index) == list(w.index)
    np.testing.assert_allclose(h["delta_W"], w["delta_W"], rtol=1e-6)  # WW's float32 difference (README)
    np.testing.assert_allclose(h["delta_b"].astype(float), w["delta_b"].astype(float), rtol=1e-6)
    assert list(h["b_shape"]) == list(w["b_shape"]) and list(h["name"]) == list(w["name"])
    assert h_avg == pytest.approx(w_avg, rel=1e-6) and h_avg_b == pytest.approx(w_avg_b, rel=1e-6)


@pytest.mark.parametrize("call", [
    lambda w: w.analyze(plot=True), lambda w: w.analyze(pool=False),
    lambda w: w.analyze(fit="TPL"), lambda w: w.analyze(min_size=10), lambda w: w.analyze(savefig="img"),
    lambda w: w.analyze(base_model=hf_bert()), lambda w: w.analyze(peft=True), lambda w: w.analyze(glorot_fix=True),
    lambda w: w.describe(channels="last"), lambda w: w.get_ESD(layer=2, random=True),
    lambda w: w.distances(hf_bert(), hf_bert(), method="cka")])
def test_unimplemented_arguments_are_refused_by_name(call):
    watcher = hubscan.WeightWatcher(model=hf_bert())
    with pytest.raises(ValueError) as exc:
        call(watcher)
    msg = str(exc.value)
    assert "\n" not in msg and "not implemented" in msg


def test_unknown_argument_and_framework_are_errors():
    with pytest.raises(TypeError):
        hubscan.WeightWatcher(model=hf_bert()).analyze(no_such_argument=1)
    with pytest.raises(ValueError, match="framework"):
        hubscan.WeightWatcher(model=hf_bert(), framework="keras")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        hubscan.WeightWatcher(model="some/folder").analyze()


def test_keras_model_layer_ids():
    """WW 0.7.7 walks a Keras model's ``model.layers`` (ids from 0; it needs TensorFlow, absent here):
    the façade's ids, names and types follow that walk, and its rows are hubscan's rows of the kernels."""
    from test_inmemory import keras_model

    model = keras_model()
    h = hubscan.WeightWatcher(model=model).analyze()
    assert list(zip(h["layer_id"], h["name"], h["layer_type"])) == [
        (i, layer.name, t) for i, (layer, t) in enumerate(zip(model.layers, ["embedding", "conv1d", None, "dense",
                                                                             "dense"])) if t]
    rows = {r["name"]: r for r in hubscan.analyze(model).rows}
    assert list(h["alpha"]) == [rows[f"sequential.{n}.weight"]["alpha"] for n in h["name"]]
