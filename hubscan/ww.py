"""A WeightWatcher-compatible façade: ``from hubscan import WeightWatcher`` for code written against
WeightWatcher 0.7.7 (``watcher = WeightWatcher(model=model); details = watcher.analyze()``).

What is WeightWatcher's (README "Migrating from WeightWatcher")
    The argument names and defaults of ``WeightWatcher(...)``, ``analyze``, ``describe``, ``get_ESD``,
    ``get_summary`` and ``distances``; WW's layers (its walk over ``named_modules()`` of a torch module, over
    ``model.layers`` of a Keras model, over the ``*.weight`` keys of a state dict), their ids (the
    position in that walk; a state dict's from 1), ``name`` / ``longname`` and ``layer_type``
    (``dense``, ``conv1d``, ``conv2d``, ``embedding``, by the class name as WW types it); the ``layers=`` filter
    (ids to keep, or negative ids to drop; WW layer types; short names, or ``-name`` to drop, composed in WW's
    order); the size filters (``min_evals`` ≤ M·rf ≤ ``max_evals``, N ≤ ``max_N``); the DataFrame columns
    WW's ``analyze`` adds for the options given, in WW's order (``layer_id``, ``name``, then the others
    sorted by name).

What is hubscan's
    The numbers: each WW layer's row is hubscan's row of the same tensor (:func:`hubscan.analyze` of the
    same object in memory), identical to WW's to float64 rounding where WW is right, and different where
    README "What is computed" says so: true N and M where WW swaps them, ``sv_min`` over all conv slices,
    no ``alpha = -1`` (a failed fit is NaN, and :meth:`WeightWatcher.get_summary` averages real fits only),
    no small-sample estimator below 20 eigenvalues, a depthwise convolution (each slice a vector) reported
    with ``has_esd`` False and NaN metrics, ``status`` ``skipped``.

What is refused
    An argument hubscan does not implement, given a value other than WW's default, raises a one-line
    ``ValueError`` naming it (:data:`NOT_IMPLEMENTED` says why for each): nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["WeightWatcher", "NOT_IMPLEMENTED"]

log = logging.getLogger(__name__)

#: WW 0.7.7's ``analyze`` / ``describe`` arguments hubscan does not implement → why; each is accepted only at
#: WW's default (the value beside it) and refused by name otherwise.
NOT_IMPLEMENTED = {
    "glorot_fix": (False, "WW's Glorot rescaling of W"),
    "plot": (False, "plots: `hubscan report` draws the ESDs and alphas of a dataset"),
    "savefig": ("ww-img", "plots are not drawn (see plot)"),
    "conv2d_norm": (True, "convolutions are always scaled by sqrt(1/2), as WW's default"),
    "ww2x": (False, "deprecated in WW (pool=False)"),
    "pool": (True, "conv slices are always pooled here (hubscan.analyze(..., conv_slices=True) gives one row per slice)"),
    "conv2d_fft": (False, "WW's FFT of conv kernels"),
    "fft": (False, "WW's FFT of conv kernels"),
    "deltas": (False, "eigenvalue-spacing plots"),
    "intra": (False, "WW's intra-layer matrices"),
    "channels": (None, "the owning module's class fixes the channel layout"),
    "stacked": (False, "WW's stacked-layer matrix"),
    "xmin_max": (None, "xmin_peak's bound"),
    "max_fingers": (10, "clip_xmax's limit"),
    "finger_thresh": (1.0, "clip_xmax's threshold"),
    "fit": ("PL", "only the power law (hubscan.analyze(..., tpl=True) adds a truncated one, in other columns)"),
    "sparsify": (True, "used by WW's TPL fit only"),
    "tolerance": (0.000001, "the weak-rank threshold"),
    "pl_package": ("ww", "the fit is WW's estimator, always"),
    "xmax": (None, "the fit's xmax is the largest eigenvalue"),
    "inverse": (False, "WW's inverse ESD"),
    "peft": (False, "LoRA products of a PeftModel in memory: analyze the saved adapter folder with hubscan.analyze"),
}

#: WW's short names of hubscan's columns where they differ.
_WW_COLUMNS = {"bulk_max": "lambda_plus", "bulk_min": "lambda_minus", "detX_num": "num_ERG_spikes",
               "max_rand_eval": "rand_lambda_max", "rand_bulk_max": "rand_lambda_plus", "rand_num_spikes": "num_traps"}
_DEFAULT_COLUMNS = ("D", "M", "N", "Q", "alpha", "alpha_weighted", "entropy", "has_esd", "lambda_max", "layer_type",
                    "log_alpha_norm", "log_norm", "log_spectral_norm", "longname", "matrix_rank", "norm", "num_evals",
                    "num_pl_spikes", "rank_loss", "rf", "sigma", "spectral_norm", "stable_rank", "status", "sv_max",
                    "sv_min", "warning", "weak_rank_loss", "xmax", "xmin")
_OPTION_COLUMNS = {
    "mp_fit": ("W_scale", "bulk_max", "bulk_min", "mp_softrank", "num_spikes", "sigma_mp"),
    "detX": ("ERG_gap", "detX_num", "detX_val", "detX_val_unrescaled", "num_ERG_spikes"),
    "vectors": tuple(f"{part}_{stat}_{m}" for part in ("bulk", "tail") for stat in ("mean", "var")
                     for m in ("loc_ratio", "part_ratio", "vec_entropy")),
    "clip_xmax": ("num_fingers", "raw_alpha"),
    # hubscan's randomize + traps options (hubscan/esd/metric_traps.py); the last four derived in _randomized
    "randomize": ("max_rand_eval", "num_traps", "rand_bulk_max", "rand_distance", "rand_mp_softrank",
                  "rand_num_spikes", "rand_sigma_mp", "rand_W_scale", "rand_bulk_min", "ww_maxdist", "ww_softrank"),
}
_SUMMARY = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank", "mp_softrank")
_WEAK_RANK = 1e-6  # WW's WEAK_RANK_LOSS_TOLERANCE: eigenvalues below it count in weak_rank_loss


@dataclasses.dataclass(frozen=True)
class _Layer:
    """One layer as WW's walk finds it, and the hubscan row (tensor name) that measures it."""

    layer_id: int
    name: str
    longname: str
    layer_type: str
    tensor: str
    shape: tuple


def _refuse(method: str, given: dict) -> None:
    for arg, value in given.items():
        default, why = NOT_IMPLEMENTED[arg]
        if not (value is default or value == default):
            raise ValueError(f"WeightWatcher.{method}({arg}={value!r}) is not implemented by hubscan: {why}")


def _torch_type(module) -> str | None:
    """WW 0.7.7's PyTorchLayer typing: isinstance, else a word in the class's repr, in WW's order."""
    nn = torch.nn
    name = str(type(module)).lower()
    for cls, word, kind in ((nn.Linear, "linear", "dense"), (nn.Conv1d, "conv1d", "conv1d"),
                            (nn.Conv2d, "conv2d", "conv2d"), (nn.Embedding, "embedding", "embedding")):
        if isinstance(module, cls) or word in name:
            return kind
    return None


def _torch_layers(model: torch.nn.Module, start_id: int) -> list[_Layer]:
    from torch.nn.utils import parametrize

    state = model.state_dict(keep_vars=True)
    names: dict[int, str] = {}
    for key, t in state.items():
        names.setdefault(id(t), key)
    out = []
    for i, (longname, module) in enumerate(model.named_modules()):
        kind = _torch_type(module)
        if kind is None:
            continue
        head = f"{longname}." if longname else ""
        if parametrize.is_parametrized(module, "weight"):  # the row of the effective weight (weights/memory.py)
            plist = module.parametrizations.weight
            weight_norm = [type(p).__name__ for p in plist] == ["_WeightNorm"]
            first = next(n for n, _ in plist.named_parameters(recurse=False))
            tensor = f"{head}parametrizations.weight.{'original1' if weight_norm else first}"
            shape = tuple(module.weight.shape)
        else:
            w = getattr(module, "weight", None)
            if not isinstance(w, torch.Tensor):
                continue  # WW: no weights, no row
            tensor = names.get(id(w)) or (f"{head}weight_orig" if f"{head}weight_orig" in state else None)
            if tensor is None:
                raise ValueError(f"layer {longname!r}: its weight is not a parameter or buffer of the model")
            shape = tuple(w.shape)
        out.append(_Layer(i + start_id, longname.split(".")[-1] if longname else "", longname, kind, tensor, shape))
    return out


def _keras_layers(model, start_id: int) -> list[_Layer]:
    from hubscan.weights.keras import tf_to_pt_layout

    out = []
    for i, layer in enumerate(model.layers):
        cls = type(layer).__name__.lower()
        kind = next((k for w, k in (("dense", "dense"), ("conv1d", "conv1d"), ("conv2d", "conv2d"),
                                    ("embedding", "embedding")) if w in cls), None)
        var = next((v for v in layer.weights if v.path.rsplit("/", 1)[-1] in ("kernel", "embeddings")), None)
        if kind is None or var is None:
            continue
        tensor = var.path.rsplit("/", 1)[0].replace("/", ".") + ".weight"
        perm = tf_to_pt_layout(tuple(var.shape)) if kind != "embedding" else None
        shape = tuple(var.shape[p] for p in perm) if perm else tuple(var.shape)  # as hubscan loads it
        out.append(_Layer(i + start_id, layer.name, layer.name, kind, tensor, shape))
    return out


def _state_dict_layers(sd: Mapping) -> list[_Layer]:
    """WW's state-dict walk: every ``*.weight`` key counts (ids from 1); 2-D are dense, 4-D conv2d."""
    out, layer_id = [], 1
    for key, value in sd.items():
        if not key.endswith(".weight"):
            continue
        kind = {2: "dense", 4: "conv2d"}.get(len(getattr(value, "shape", ())))
        if kind is not None:
            out.append(_Layer(layer_id, key[:-len(".weight")], key[:-len(".weight")], kind, key, tuple(value.shape)))
        layer_id += 1
    return out


def _layers_of(model, start_ids: int = 0) -> list[_Layer]:
    from hubscan.weights.memory import is_keras

    if is_keras(model):
        return _keras_layers(model, start_ids)
    if isinstance(model, torch.nn.Module):
        return _torch_layers(model, start_ids)
    if isinstance(model, Mapping):
        return _state_dict_layers(model)
    raise TypeError(f"hubscan's WeightWatcher takes a torch.nn.Module, a state dict or a Keras 3 model, not a "
                    f"{type(model).__name__} (a path: hubscan.analyze(path))")


def _sizes(layer: _Layer) -> tuple[int, int, int]:
    """(N, M, rf): true sizes of a layer's matrix (slices for convolutions), as hubscan's plans give them."""
    s = layer.shape
    rf = math.prod(s[2:]) if layer.layer_type.startswith("conv") and len(s) > 2 else 1
    if len(s) > 2 and not layer.layer_type.startswith("conv"):
        return max(s), min(s), 1
    return max(s[:2]), min(s[:2]), rf


def _select(layers: list[_Layer], spec, min_evals, max_evals, max_N) -> list[_Layer]:
    """WW's filters: ids / types / names (each overriding the previous decision, in WW's order), then sizes."""
    spec = spec if isinstance(spec, list) else [spec]
    types = [f for f in spec if isinstance(f, str) and f in ("dense", "conv1d", "conv2d", "embedding", "norm")]
    ids = [int(f) for f in spec if isinstance(f, numbers.Integral)]
    names = [f for f in spec if isinstance(f, str) and f not in types]
    bad = [f for f in spec if not isinstance(f, (str, numbers.Integral))]
    if bad:
        raise ValueError(f"WeightWatcher.analyze(layers=…): {bad[0]!r} is neither a layer id, a layer type nor a name")
    if names and len({n.startswith("-") for n in names}) > 1:
        raise ValueError("WeightWatcher.analyze(layers=…): names to keep and names to drop (-name) cannot be mixed")
    out = []
    for layer in layers:
        skipped = False
        if types:
            skipped = layer.layer_type not in types
        if ids:
            skipped = (layer.layer_id not in ids) if min(ids) >= 0 else (-layer.layer_id in ids)
        if names:
            skipped = (layer.name not in names) if not names[0].startswith("-") else (f"-{layer.name}" in names)
        N, M, rf = _sizes(layer)
        if skipped or (min_evals and M * rf < min_evals) or (max_evals and M * rf > max_evals) or N > max_N:
            continue
        out.append(layer)
    return out


class WeightWatcher:
    """WeightWatcher 0.7.7's interface on hubscan's analysis (module docstring).

    Parameters
    ----------
    model : torch.nn.Module, state dict or Keras 3 model, optional
        The model analyzed by default (any method's ``model=`` replaces it for that call).
    framework : None
        hubscan infers it (any other value is refused).
    base_model : optional
        Refused when given: ``hubscan.analyze(model, base=base_model)`` gives the ΔW rows.
    log_level : int or str, optional
        Level of the ``hubscan`` logger.
    """

    def __init__(self, model=None, framework=None, base_model=None, log_level=None):
        if framework is not None:
            raise ValueError(f"WeightWatcher(framework={framework!r}) is not implemented by hubscan: it reads the "
                             "model's type")
        if base_model is not None:
            raise ValueError("WeightWatcher(base_model=…) is not implemented by hubscan's façade: "
                             "hubscan.analyze(model, base=base_model) gives the rows of W − W_base")
        if log_level is not None:
            logging.getLogger("hubscan").setLevel(log_level)
        self.model = model
        self.details = None
        self.results = None  # the last hubscan AnalysisResult behind ``details``

    def __repr__(self) -> str:
        return f"hubscan.WeightWatcher(model={type(self.model).__name__})"

    def _model(self, model):
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("WeightWatcher: no model (WeightWatcher(model=…) or analyze(model=…))")
        return model

    def analyze(self, model=None, layers=[], min_evals=8, max_evals=15000, min_size=None, max_size=None,  # noqa: B006
                max_N=50000, glorot_fix=False, plot=False, randomize=False, savefig="ww-img", mp_fit=False,
                conv2d_norm=True, ww2x=False, pool=True, conv2d_fft=False, fft=False, deltas=False, intra=False,
                vectors=False, channels=None, stacked=False, fix_fingers=False, xmin_max=None, max_fingers=10,
                finger_thresh=1.0, fit="PL", sparsify=True, detX=False, ERG=False, svd_method="fast",
                tolerance=0.000001, start_ids=0, pl_package="ww", xmax=None, base_model=None, peft=False,
                inverse=False):
        """Analyze the model's layers as WW 0.7.7 selects them; one row per layer (module docstring).

        Parameters
        ----------
        model : optional
            Replaces the watcher's model for this call (and after it, as in WW).
        layers : list of int or str
            WW's filter: ids to keep (or negative ids to drop), layer types, short names (or ``-name``).
        min_evals, max_evals, max_N : int
            Layers with M·rf < min_evals, M·rf > max_evals (0: no limit) or N > max_N are left out.
        mp_fit, detX / ERG, vectors : bool
            Add WW's columns of the MP fit, SETOL's detX condition, eigenvector localization.
        randomize : bool
            Add WW's columns of the element-shuffled W's ESD (``rand_distance``, ``max_rand_eval``, the MP fit
            ``rand_*`` and its outliers ``num_traps`` = ``rand_num_spikes``, ``ww_softrank``, ``ww_maxdist``):
            hubscan's ``randomize`` and ``traps`` options, one shuffle per layer seeded by hubscan's default
            seed (WW: unseeded, 5 pooled when M < 100; README "Migrating from WeightWatcher").
        fix_fingers : False, ``'xmin_peak'`` or ``'clip_xmax'``
            Finger fixing of the fit (``clip_xmax`` adds ``num_fingers``, ``raw_alpha``).
        svd_method : ``'fast'`` or ``'accurate'``
            ``'fast'``: eigenvalues of the float64 Gram matrix (hubscan's); ``'accurate'``: SVD of W.
        start_ids : int
            First layer id of a module's or Keras model's walk (a state dict's is 1, as in WW).
        min_size, max_size : None
            WW 0.7.7 ignores them itself: refused when given (use min_evals / max_evals).
        others
            Accepted at WW's default only (:data:`NOT_IMPLEMENTED`).

        Returns
        -------
        pandas.DataFrame
            ``layer_id``, ``name``, then WW's columns for the options given, sorted by name; one row per layer
            in WW's order. Also kept as :meth:`get_details`.

        Raises
        ------
        ValueError
            An argument given a value hubscan does not implement (one line naming it).
        TypeError
            The model is none of a torch module, a state dict, a Keras 3 model.
        """
        import hubscan

        _refuse("analyze", {k: v for k, v in locals().items() if k in NOT_IMPLEMENTED})
        for arg, value in (("min_size", min_size), ("max_size", max_size)):
            if value is not None:
                raise ValueError(f"WeightWatcher.analyze({arg}={value!r}) is not implemented: WW 0.7.7 ignores it "
                                 "too; use min_evals / max_evals")
        if base_model is not None:
            raise ValueError("WeightWatcher.analyze(base_model=…) is not implemented by hubscan's façade: "
                             "hubscan.analyze(model, base=base_model) gives the rows of W − W_base")
        if fix_fingers not in (False, None, "xmin_peak", "clip_xmax"):
            raise ValueError(f"WeightWatcher.analyze(fix_fingers={fix_fingers!r}): expected False, 'xmin_peak' "
                             "or 'clip_xmax'")
        if svd_method not in ("fast", "accurate"):
            raise ValueError(f"WeightWatcher.analyze(svd_method={svd_method!r}): expected 'fast' or 'accurate'")
        self.model = model = self._model(model)
        chosen = _select(_layers_of(model, start_ids), layers, min_evals, max_evals, max_N)
        if not chosen:
            self.details = _frame([], self._columns(mp_fit, detX or ERG, vectors, fix_fingers, randomize))
            return self.details
        options = dict(min_evals=1,  # every matrix (WW's size filter chose the layers)
                       mp_fit=bool(mp_fit), fix_fingers=fix_fingers or "", keep_evals=True,
                       method="svd" if svd_method == "accurate" else "gram",
                       layers=",".join(sorted({layer.tensor for layer in chosen})))
        if vectors:
            options["vectors"] = True
        if randomize:  # WW's randomized ESD: hubscan's rand_distance and correlation traps, on one seeded shuffle
            options.update(randomize=True, traps=True)
        self.results = res = hubscan.analyze(model, **options)
        rows = {r.name: r for r in res.rows if not r.part}
        records = []
        columns = self._columns(mp_fit, detX or ERG, vectors, fix_fingers, randomize)
        for layer in chosen:
            row = rows.get(layer.tensor)
            if row is None:
                raise ValueError(f"layer {layer.longname!r}: hubscan has no single row for {layer.tensor!r}")
            records.append(self._record(layer, row, res.evals.get(row.key), columns))
        self.details = _frame(records, columns)
        return self.details

    @staticmethod
    def _columns(mp_fit, detX, vectors, fix_fingers, randomize) -> list[str]:
        cols = set(_DEFAULT_COLUMNS)
        for on, key in ((mp_fit, "mp_fit"), (detX, "detX"), (vectors, "vectors"),
                        (fix_fingers == "clip_xmax", "clip_xmax"), (randomize, "randomize")):
            if on:
                cols |= set(_OPTION_COLUMNS[key])
        return ["layer_id", "name"] + sorted(cols)

    @staticmethod
    def _record(layer: _Layer, row, evals, columns) -> dict:
        ok = row["status"] == "success"
        out = {"layer_id": layer.layer_id, "name": layer.name, "longname": layer.longname,
               "layer_type": layer.layer_type, "has_esd": ok, "status": "success" if ok else str(row["status"])}
        for col in columns:
            if col in out:
                continue
            if col == "weak_rank_loss":
                out[col] = int(np.sum(evals < _WEAK_RANK)) if evals is not None else None
                continue
            if col in _RANDOMIZED:
                out[col] = _randomized(col, row)
                continue
            value = row[_WW_COLUMNS.get(col, col)]
            out[col] = math.nan if value is None else value
        return out

    def get_details(self):
        """The DataFrame of the last :meth:`analyze` (None before)."""
        return self.details

    def get_summary(self, details=None) -> dict:
        """Means of WW's summary metrics over the layers of ``details`` (default: the last analysis) that
        have them; a failed fit (NaN) enters no mean (WW 0.7.7 averages its alpha = −1 in)."""
        details = self.details if details is None else details
        if details is None:
            return {}
        return {m: details[m].mean() for m in _SUMMARY if m in details.columns}

    def describe(self, model=None, layers=[], min_evals=8, max_evals=15000, min_size=None, max_size=None,  # noqa: B006
                 max_N=50000, glorot_fix=False, savefig="ww-img", ww2x=False, pool=True, conv2d_fft=False,
                 fft=False, conv2d_norm=True, intra=False, channels=None, stacked=False, start_ids=0,
                 base_model=None, peft=False):
        """The layers :meth:`analyze` would analyze, with their sizes and no eigenvalue computed.

        Returns
        -------
        pandas.DataFrame
            ``layer_id``, ``name``, ``M``, ``N``, ``Q``, ``layer_type``, ``longname``, ``num_evals`` (M·rf), ``rf``.

        Raises
        ------
        ValueError, TypeError
            As :meth:`analyze`.
        """
        _refuse("describe", {k: v for k, v in locals().items() if k in NOT_IMPLEMENTED})
        for arg, value in (("min_size", min_size), ("max_size", max_size), ("base_model", base_model)):
            if value is not None:
                raise ValueError(f"WeightWatcher.describe({arg}=…) is not implemented by hubscan's façade")
        self.model = model = self._model(model)
        records = []
        for layer in _select(_layers_of(model, start_ids), layers, min_evals, max_evals, max_N):
            N, M, rf = _sizes(layer)
            records.append({"layer_id": layer.layer_id, "name": layer.name, "M": M, "N": N, "Q": N / M,
                            "layer_type": layer.layer_type, "longname": layer.longname, "num_evals": M * rf,
                            "rf": rf})
        return _frame(records, ["layer_id", "name", "M", "N", "Q", "layer_type", "longname", "num_evals", "rf"])

    def get_ESD(self, model=None, layer=None, random=False, params=None):
        """The eigenvalues of one layer's ESD as WW 0.7.7's ``get_ESD`` gives them: ascending, float64, a
        conv2d's without the sqrt(1/2) scaling :meth:`analyze` applies (as WW).

        Parameters
        ----------
        layer : int or str
            A WW layer id or short name (the first layer of that name).

        Raises
        ------
        ValueError
            No such layer (WW logs an error and returns []), or ``random``/``params`` given.
        """
        if random:
            raise ValueError("WeightWatcher.get_ESD(random=True) is not implemented by hubscan: the shuffled "
                             "ESD is not kept (analyze(randomize=True) gives its columns)")
        if params is not None:
            raise ValueError("WeightWatcher.get_ESD(params=…) is not implemented by hubscan: pass analyze()'s "
                             "arguments to analyze()")
        import hubscan

        self.model = model = self._model(model)
        found = [x for x in _layers_of(model) if x.layer_id == layer or x.name == layer]
        if not found:
            raise ValueError(f"WeightWatcher.get_ESD(layer={layer!r}): no such layer id or name")
        res = hubscan.analyze(model, min_evals=1, keep_evals=True, layers=found[0].tensor)
        row = next(r for r in res.rows if r.name == found[0].tensor)
        if row.key not in res.evals:
            raise ValueError(f"WeightWatcher.get_ESD(layer={layer!r}): no ESD ({row['reason']})")
        # WW 0.7.7's get_ESD skips analyze's conv2d_norm (W × sqrt(1/2)): a conv2d's eigenvalues are twice
        # those analyze() fits
        return res.evals[row.key] * (2.0 if found[0].layer_type == "conv2d" and row["rf"] > 1 else 1.0)

    def distances(self, model_1, model_2, method="raw", layers=[], start_ids=0, pool=True,  # noqa: B006
                  channels=None):
        """Per layer, ‖W₁ − W₂‖_F (``delta_W``) and ‖b₁ − b₂‖ (``delta_b``) of the raw tensors, in float64.

        Returns
        -------
        (float, float, pandas.DataFrame)
            The mean delta_W, the mean delta_b, and the per-layer frame (index ``layer_id``; columns
            ``method``, ``name``, ``delta_W``, ``delta_b``, ``M``, ``N``, ``b_shape``, ``longname``), as WW's.

        Raises
        ------
        ValueError
            ``method`` other than ``'raw'`` (``'euclidean'`` / ``'cka'``: not implemented), or the models'
            layers do not pair (different names or shapes).
        """
        import pandas as pd

        if str(method).lower() != "raw":
            raise ValueError(f"WeightWatcher.distances(method={method!r}) is not implemented by hubscan: only 'raw'")
        _refuse("distances", dict(pool=pool, channels=channels))
        # WW's default size filters apply (its distances() starts from DEFAULT_PARAMS)
        one = _select(_layers_of(model_1, start_ids), layers, 8, 15000, 50000)
        two = {x.longname: x for x in _select(_layers_of(model_2, start_ids), layers, 8, 15000, 50000)}
        t1, t2 = _tensors(model_1), _tensors(model_2)
        records = []
        for layer in one:
            other = two.get(layer.longname)
            if other is None or other.shape != layer.shape:
                raise ValueError(f"WeightWatcher.distances: layer {layer.longname!r} has no twin of its shape in model_2")
            W1, W2 = t1[layer.tensor], t2[other.tensor]
            bias = layer.tensor.rsplit(".", 1)[0] + ".bias"
            b1, b2 = t1.get(bias), t2.get(bias)
            has_b = b1 is not None and b2 is not None and b1.shape == b2.shape
            records.append({"method": "raw", "layer_id": layer.layer_id, "name": layer.name,
                            "delta_W": _fro(W1, W2), "delta_b": _fro(b1, b2) if has_b else 0,
                            "M": min(W1.shape), "N": max(W1.shape),
                            "b_shape": _b_shape(b1) if has_b else "unknown", "longname": layer.longname})
        frame = pd.DataFrame.from_records(records, columns=["method", "layer_id", "name", "delta_W", "delta_b", "M",
                                                             "N", "b_shape", "longname"]).set_index("layer_id")
        return float(frame["delta_W"].mean()), float(frame["delta_b"].mean()), frame


_RANDOMIZED = ("rand_W_scale", "rand_bulk_min", "ww_maxdist", "ww_softrank")


def _randomized(col: str, row) -> float:
    """WW 0.7.7's randomize columns that hubscan's row holds only implicitly, by WW's formulas
    (``apply_random_esd``, ``mp_fit``) on hubscan's one seeded shuffle; NaN where the shuffled ESD has no MP fit.

    * ``ww_softrank`` = λ_max(W_rand) / λ_max(W), ``ww_maxdist`` = λ_max(W) − λ_max(W_rand);
    * ``rand_W_scale`` = √(n / Σλ(W_rand)) = √(num_evals / norm): shuffling keeps ‖W‖²_F = Σλ;
    * ``rand_bulk_min`` = σ²(1 − 1/√Q)² / W_scale² = ``rand_lambda_plus`` · ((1 − 1/√Q) / (1 + 1/√Q))².
    """
    if row["num_traps"] is None:
        return math.nan
    if col == "rand_W_scale":
        return math.sqrt(row["num_evals"] / row["norm"])
    if col == "rand_bulk_min":
        r = 1 / math.sqrt(row["Q"])
        return row["rand_lambda_plus"] * ((1 - r) / (1 + r)) ** 2
    if col == "ww_softrank":
        return row["rand_lambda_max"] / row["lambda_max"]
    return row["lambda_max"] - row["rand_lambda_max"]


def _b_shape(b) -> object:
    """WW's ``b_shape`` cell: the bias's length (its shape tuple, as pandas unpacks a 1-tuple)."""
    return int(b.shape[0]) if b.dim() == 1 else tuple(b.shape)


def _tensors(model) -> dict:
    """Tensor name → tensor, under the names hubscan's rows use (nothing copied)."""
    from hubscan.sources import open_model

    return {e.name: e.load() for e in open_model(model).weights.entries() if not e.skip_reason}


def _fro(a, b) -> float:
    """‖a − b‖_F in float64 (WW: numpy's norm of the difference)."""
    return float(torch.linalg.vector_norm(torch.as_tensor(a).double() - torch.as_tensor(b).double()))


def _frame(records: list, columns: list):
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=columns)
