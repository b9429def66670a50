"""From a stored weight tensor to the matrices whose ESDs are analyzed.

Works on a name, a shape and a dtype only (the tensor itself is read later), so it serves every file
format. Layer types follow WeightWatcher 0.7.7's state-dict mode (2-D → dense, 4-D → conv2d) with
hubscan's additions (3-D → conv1d, 5-D → conv3d, embeddings by name, fused attention and RNN gate splits).

The module decides, the names are the fallback
----------------------------------------------
When the module that owns the tensor is known (:mod:`hubscan.weights.modules` builds the model's module
tree from its config), its kind is passed as ``kind`` (a plain string, :data:`KINDS`) and decides the
reading when the stored rank fits it (plans ``typed_by="module"``): ``linear`` / ``parameter`` (2-D) →
dense, ``embedding`` → embedding, ``conv1d`` / ``conv2d`` / ``conv3d`` → the kernel positions' slices,
channels first (no channels-last guess), ``experts`` (3-D) → one matrix per expert, ``per_head``
(D, H, d_head) → one D × H·d_head matrix, ``not_a_weight`` → skipped ``not a weight matrix (<role>)``.
Otherwise the rules below decide by name and shape (``typed_by="name"``).

Rules (each with its source)
----------------------------
* 2-D (Linear, HF GPT-2 ``Conv1D`` stored (in, out), embeddings): one matrix, N = max(shape),
  M = min(shape), Q = N/M (WW ``set_weight_matrices``). No N > 50,000 cut (WW's ``max_N``):
  vocabulary matrices are analyzed. ``embedding`` when the module owning the ``weight`` is named as a
  table (``embed_tokens``, ``wte``, ``word_embeddings``, ``*_embeddings`` …), ``dense`` otherwise
  (``lm_head``, ``embed_out``, ``patch_embedding`` Linear layers included).
* 4-D Conv2d (out, in, kh, kw): the kh·kw slices W[:, :, i, j], each oriented N ≥ M, pooled into
  one ESD of M·kh·kw eigenvalues; every eigenvalue × ``conv_norm`` = 0.5, i.e. W × sqrt(1/2)
  (WW ``conv2D_Wmats`` + ``apply_normalize_Wmats`` with ``conv2d_norm=True``). N and M are the
  slice's true sizes (WW swaps them for out < in with an even kh·kw). Channels-last tensors
  (kh, kw, in, out) are detected by WW's rule ``out + in < kh + kw``.
* 5-D Conv3d (out, in, kt, kh, kw) (video patch embeddings; WW skips them): WW's Conv2d rule extended,
  the kt·kh·kw slices W[:, :, t, i, j] pooled with the same 0.5; channels last (kt, kh, kw, in, out)
  by the same rule. Rank > 5: skipped, not understood.
* 3-D stacked experts (E, out, in): a tensor whose name has a component ``experts`` / ``expert`` /
  ``moe`` or ends ``_exps`` (transformers v5 fused MoE, llama.cpp/GGUF ``ffn_*_exps``, gpt-oss), granite /
  jetmoe ``input_linear.weight`` / ``output_linear.weight``, a bare fused projection (``gate_up_proj``,
  ``down_proj`` … with no ``.weight``) or a bare ``<x>_weight`` that is no convolution (RecurrentGemma's
  per-head gates) is E matrices: one row per expert (``part`` = expert index), each out × in, unscaled —
  the numbers of the same experts stored as separate 2-D tensors. Checked before the two rules below, so
  E = 2 is never pooled.
* 3-D Conv1d (out, in, k): every other 3-D tensor whose kernel is a kernel — k ≤ ``MAX_CONV1D_KERNEL``
  (64) or k ≤ out, or in = 1, or a weight-norm direction (``weight_v``, ``original1``) — : the k per-tap
  slices W[:, :, t], pooled the same way with the same 0.5 normalisation (WW feeds the 3-D array to a
  batched SVD instead). A 3-D tensor with more "taps" than that and than output channels, not named as
  experts, is most likely a stack of matrices under another name: it is skipped as a layout hubscan does
  not recognise (``understood=False``), never read as a convolution with wrong numbers.
* 3-D tensors (1 or 2, gates·H, in) whose middle axis is a gate stack (divisible by 4 or 3) and
  whose name is not an embedding / position / token parameter are ONNX RNN weights (num_directions, gates·H, in): one matrix per direction, pooled, not
  scaled. Other (1, A, B) tensors (timm ``pos_embed``, ``cls_token``) stay Conv1d-like and are skipped
  (vector slices), as WW never sees them.
* Slices that are vectors (M = 1, e.g. wav2vec2's Conv1d(1, 512, 10)) have no spectrum: skipped,
  reason "too few eigenvalues". So are layers with fewer than ``min_evals`` pooled eigenvalues
  (WW default 8).
* Not weight matrices, skipped by the last component of their name (``NOT_A_WEIGHT``; a bare parameter,
  no module's ``weight``): learned tokens (``cls_token``, ``reg_token``, ``dist_token``, ``mask_token``,
  ``register_tokens``, ``*_tokens``, ``latents``), position tables stored as a bare parameter
  (``pos_embed*``, ``positional_embedding``, ``position_embeddings``, ``absolute_pos_embed``, ``rel_pos_*``,
  ``relative_position_bias_table``, a ParameterList of them), biases (``*_bias``), state-space parameters
  (Mamba ``A_log``, ``A``, ``D``, ``dt_bias``), per-channel scales (layer-scale ``gamma``,
  ``scale_shift_table``), weight-norm magnitudes (``weight_g``, ``original0``). These are
  ``nn.Parameter`` s, not module weights: WW never sees them. Position embeddings that are ``nn.Embedding``
  weights (``position_embeddings.weight``, ``wpe.weight``) are module weights and analyzed, as WW does.
* Complex tensors (N, M): the ESD of WᴴW, computed as that of the real 2×2 block embedding
  [[Re W, −Im W], [Im W, Re W]] (2N × 2M), whose Gram eigenvalues are WᴴW's, each twice
  (N and M of the row are the embedding's).
* 1-D tensors (biases, norms), 0-size tensors: skipped. Integer / bool tensors: int64 buffers
  (``position_ids``) skipped as "integer buffer"; other integer dtypes (packed int4 ``qweight``,
  int8 weights) skipped as "quantized". bf16 / fp16 / fp8 are analyzed after upcasting.
* Fused attention (``in_proj_weight`` (3E, E), timm ``qkv.weight`` (3E, E), GPT-2 ``c_attn.weight``
  (E, 3E)) and RNN gate stacks (``weight_ih_lK`` / ``weight_hh_lK``: LSTM 4 gates i,f,g,o; GRU 3
  gates r,z,n) are analyzed as stored by default, as WW would for what it sees; ``split_fused=True``
  analyzes each block instead (column ``part`` names it).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Mapping, Sequence

import torch

#: Eigenvalue multiplier of convolution layers: WW's ``conv2d_norm`` multiplies W by sqrt(1/2).
CONV_NORM = 0.5
#: Widest Conv1d kernel accepted when the kernel is also wider than the output channels (see the rules).
MAX_CONV1D_KERNEL = 64
#: WW's ``DEFAULT_MIN_EVALS``: layers with fewer pooled eigenvalues are skipped.
DEFAULT_MIN_EVALS = 8
#: The module kinds ``plan_matrices(kind=…)`` reads (``TensorKind.kind`` of :mod:`hubscan.weights.modules`).
KINDS = ("linear", "embedding", "conv1d", "conv2d", "conv3d", "experts", "per_head", "not_a_weight", "parameter")

_FUSED_QKV = re.compile(r"(^|\.)(in_proj_weight|qkv\.weight|c_attn\.weight|query_key_value\.weight)$")
_RNN = re.compile(r"(^|\.)weight_(ih|hh)_l(\d+)(_reverse)?$")
#: Names the ONNX-RNN rule never reads as gate stacks (embeddings, heads, position and token tables).
_EMBED = re.compile(r"(embed|wte|wpe|tok_embeddings|token_embd|word_embeddings|position_embeddings|lm_head|"
                    r"shared\.weight)",
                    re.IGNORECASE)
#: Embedding tables by name: the module owning the 2-D ``weight`` is named as a table (``embed_tokens``,
#: ``wte``, ``word_embeddings`` …); a Linear named like a head or projection (``lm_head``, ``embed_out``,
#: ``patch_embedding``, ``embed_proj``) is ``dense``.
_EMBEDDING_TABLE = re.compile(r"(^|\.)(wte|wpe|shared|tok_embeddings|token_embd|embed_in|embed_tokens|embed_positions|"
                              r"embeddings?|embed|emb|(?!patch_)\w+_(embeddings?|embed|emb))(\.weight)?$")
_INTEGER_BUFFER = {"int64", "uint64"}
#: Stacks of matrices (E, out, in) by name: fused experts (transformers v5 ``experts``, llama.cpp ``_exps``,
#: granite / jetmoe ``input_linear`` / ``output_linear``, a bare fused projection), a ``moe`` block.
_EXPERTS = re.compile(r"(^|\.)(experts?|moe)(\.|$)|_exps(\.|$)|(^|\.)(input|output)_linear\.weight$|"
                      r"(^|\.)(gate_up|gate|up|down)_proj$")
#: A 3-D bare parameter ``<x>_weight`` (not a module's ``weight``, not a convolution): a stack of matrices.
_STACK = re.compile(r"(^|\.)(?!\w*conv)\w+_weight$", re.IGNORECASE)
#: Weight-norm directions (``torch.nn.utils.weight_norm`` / ``parametrizations.weight_norm``): module weights.
_WEIGHT_NORM_V = re.compile(r"(\.|^)(weight_v|parametrizations\.weight\.original1)$")
#: Last name components of parameters that are not weight matrices (see the module docstring).
NOT_A_WEIGHT = {
    "cls_token": "class token", "reg_token": "register tokens", "register_tokens": "register tokens",
    "dist_token": "distillation token", "mask_token": "mask token",
    "pos_embed": "position embedding", "positional_embedding": "position embedding",
    "absolute_pos_embed": "position embedding", "relative_position_bias_table": "position bias table",
    "A_log": "state-space parameter", "A": "state-space parameter", "D": "state-space parameter",
    "dt_bias": "state-space parameter", "ssm_a": "state-space parameter", "ssm_d": "state-space parameter",
    "gamma": "layer scale", "scale_shift_table": "scale table",
    "weight_g": "weight-norm magnitude", "original0": "weight-norm magnitude",
    "diagonal_decay": "decay mask", "key_decay": "decay mask", "query_decay": "decay mask",
}
_NOT_A_WEIGHT = re.compile(r"(^|\.)(" + "|".join(map(re.escape, NOT_A_WEIGHT)) + r")(_\d+)?$")
#: Bare parameters by name (a last component that is no module's ``weight``; a ParameterList entry): position
#: tables and learned tokens. An ``nn.Embedding`` position table (``position_embeddings.weight``) is not one.
_POSITION = r"\w*(pos(ition(al)?)?_?(emb|enc)|rel_pos|(time|temporal)_emb)\w*"
_BARE = re.compile(rf"(^|\.)((?P<position>{_POSITION})|(?P<tokens>\w*tokens?|latents?|mask_emb|\w*prompts?)|(?P<bias>\w*bias(es)?))"
                   rf"(\.(embedding|weights?\.\d+|\d+))?$")
_BARE_ROLE = {"position": "position table", "tokens": "learned tokens", "bias": "bias"}
_BARE_3D = re.compile(rf"(^|\.){_POSITION}\.weight$")  # a 3-D+ "weight" of a position module: no nn.Embedding


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What will be analyzed for one stored tensor (or one block of it).

    Attributes
    ----------
    name : str
        Full parameter name as stored.
    part : str
        Which block of a split tensor ("" when the tensor is analyzed whole; "q", "k", "v";
        gate letters; "i,j" for a kept conv slice).
    layer_type : str
        ``dense``, ``embedding``, ``conv1d``, ``conv2d``, ``conv3d`` or ``skipped``.
    shape : tuple of int
        The stored tensor's shape.
    N, M : int
        Rows and columns of each analyzed slice oriented N ≥ M (0 when skipped).
    rf : int
        Number of slices pooled into the ESD (receptive field kt·kh·kw for conv3d, kh·kw for conv2d, k for
        conv1d, 1 else).
    eig_scale : float
        Multiplier applied to every eigenvalue (``CONV_NORM`` for convolutions, 1 otherwise).
    skip_reason : str or None
        Why the tensor is not analyzed; None when it is.
    understood : bool
        False when skipped because the layout is not one hubscan recognises (the model is then ``incomplete``).
    typed_by : str
        ``module`` when the owning module's kind decided the reading, ``name`` when the name/shape rules did.
    extract : callable (torch.Tensor) -> torch.Tensor, optional
        Maps the stored tensor to a stack of slices, shape (rf, rows, cols) (either orientation;
        the eigen step takes the smaller side). Views where possible.
    """

    name: str
    part: str
    layer_type: str
    shape: tuple
    N: int = 0
    M: int = 0
    rf: int = 1
    eig_scale: float = 1.0
    skip_reason: str | None = None
    understood: bool = True
    typed_by: str = "name"
    extract: Callable[[torch.Tensor], torch.Tensor] | None = dataclasses.field(
        default=None, repr=False, compare=False)

    @property
    def Q(self) -> float:
        """Aspect ratio N/M (NaN when skipped)."""
        return self.N / self.M if self.M else math.nan

    @property
    def num_evals(self) -> int:
        """Number of eigenvalues of the pooled ESD, M·rf."""
        return self.M * self.rf


def _skip(name: str, shape: Sequence[int], reason: str) -> LayerPlan:
    return LayerPlan(name=name, part="", layer_type="skipped", shape=tuple(shape), skip_reason=reason)


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "half", "double")) or dtype in {"complex64", "complex128"}


def plan_matrices(name: str, shape: Sequence[int], dtype: str, *, split_fused: bool = False,
                  conv_slices: bool = False, min_evals: int = DEFAULT_MIN_EVALS,
                  max_evals: int | None = None,
                  sibling_shapes: Mapping[str, Sequence[int]] | None = None,
                  kind: str | None = None, role: str = "") -> list[LayerPlan]:
    """Decide how a stored tensor is analyzed.

    Parameters
    ----------
    name : str
        Full parameter name.
    shape : sequence of int
        Stored shape.
    dtype : str
        Stored dtype, torch name without prefix (``float32``, ``bfloat16``, ``int8`` …).
    split_fused : bool
        Split fused q/k/v projections and RNN gate stacks into one matrix per block.
    conv_slices : bool
        Keep one row per conv slice instead of pooling the slices into one ESD.
    min_evals : int
        Skip when the pooled ESD would have fewer eigenvalues (WW default 8).
    max_evals : int or None
        Skip when the pooled ESD would have more eigenvalues (WW uses 15,000; hubscan: no limit).
    sibling_shapes : mapping of str to shape, optional
        Shapes of the model's other tensors; used to tell LSTM from GRU gate stacks.
    kind : str, optional
        What the module that owns the tensor says it is (one of :data:`KINDS`; ``TensorKind.kind`` of
        :mod:`hubscan.weights.modules`): it decides the reading when the tensor's rank fits it (plans
        ``typed_by="module"``); otherwise, or when None, the name/shape rules decide.
    role : str
        With ``kind="not_a_weight"``: what the tensor is instead (``position table``, ``buffer`` …),
        named in the skip reason.

    Returns
    -------
    list of LayerPlan
        One plan, or several when the tensor is split; a single skipped plan when not analyzed.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return [_skip(name, shape, f"{len(shape)}-D tensor (bias, norm or scalar)")]
    if any(s == 0 for s in shape):
        return [_skip(name, shape, f"empty tensor {shape}")]
    if not _is_float(dtype):
        if dtype in _INTEGER_BUFFER or dtype == "bool":
            return [_skip(name, shape, f"integer buffer ({dtype})")]
        return [_skip(name, shape, f"quantized ({dtype})")]
    if len(shape) > 5:
        return [dataclasses.replace(_skip(name, shape, f"unsupported {len(shape)}-D tensor"), understood=False)]
    if kind is not None and not dtype.startswith("complex"):
        typed = _plan_by_kind(name, shape, kind, role, split_fused, sibling_shapes or {})
        if typed is not None:
            return _finish([dataclasses.replace(p, typed_by="module") for p in typed], conv_slices, min_evals,
                           max_evals)

    if (m := _NOT_A_WEIGHT.search(name)) is not None:
        why = f"not a weight matrix ({NOT_A_WEIGHT[m.group(2)]})"
        if len(shape) == 3 and shape[0] == 1:  # what the old Conv1d reading of (1, A, B) would say
            why += ": as a (1, A, B) stack each slice is a vector, M = 1"
        return [_skip(name, shape, why)]
    if (m := _BARE.search(name)) is not None or (len(shape) >= 3 and _BARE_3D.search(name)):
        what = next((w for w in ("tokens", "bias") if m is not None and m.group(w)), "position")
        return [_skip(name, shape, f"not a weight matrix ({_BARE_ROLE[what]})")]
    if dtype.startswith("complex"):
        if len(shape) != 2:
            return [_skip(name, shape, f"complex {len(shape)}-D tensor")]
        n2, m2 = 2 * max(shape), 2 * min(shape)
        return [_check_size(LayerPlan(name, "", _matrix_type(name), shape, n2, m2, 1,
                                      1.0, extract=_realify), min_evals, max_evals)]

    plans: list[LayerPlan]
    if len(shape) == 3 and (_EXPERTS.search(name) or _STACK.search(name)):
        plans = _experts(name, shape)
    elif len(shape) == 2:
        plans = _dense(name, shape, _matrix_type(name), split_fused, sibling_shapes or {})
    elif len(shape) == 3 and shape[0] <= 2 and min(shape[1:]) >= 2 and (shape[1] % 4 == 0 or shape[1] % 3 == 0) \
            and not _EMBED.search(name) and not re.search(r"pos|token|cls", name, re.IGNORECASE):
        # ONNX RNN weights (num_directions, gates·H, in): one matrix per direction, pooled, no conv scaling
        plans = [LayerPlan(name, "", "dense", shape, max(shape[1:]), min(shape[1:]), shape[0], 1.0,
                           extract=lambda W: W)]
    elif len(shape) == 3 and shape[2] > MAX_CONV1D_KERNEL and shape[2] > shape[0] and shape[1] > 1 \
            and not _WEIGHT_NORM_V.search(name):
        return [dataclasses.replace(_skip(name, shape, f"3-D tensor {shape} not named as experts whose last axis "
                                                 f"({shape[2]}) is too wide for a Conv1d kernel: layout not recognised"),
                                    understood=False)]
    elif len(shape) == 3:  # Conv1d (out, in, k)
        plans = [_conv_first(name, shape)]
    else:  # Conv2d (4-D), Conv3d (5-D)
        spatial = shape[2:]
        if shape[0] + shape[1] >= sum(spatial):  # channels first: (out, in, *kernel), torch layout
            plans = [_conv_first(name, shape)]
        else:  # channels last: (*kernel, in, out), Keras layout (WW's rule)
            rf = math.prod(shape[:-2])
            plans = [_conv_plan(name, shape, f"conv{len(shape) - 2}d", shape[-1], shape[-2], rf,
                                lambda W, rf=rf: W.reshape(rf, *W.shape[-2:]))]
    return _finish(plans, conv_slices, min_evals, max_evals)


def _finish(plans: list[LayerPlan], conv_slices: bool, min_evals: int, max_evals: int | None) -> list[LayerPlan]:
    if conv_slices:
        plans = [q for p in plans for q in _per_slice(p)]
    return [_check_size(p, min_evals, max_evals) for p in plans]


def _plan_by_kind(name, shape, kind, role, split_fused, sibling_shapes) -> list[LayerPlan] | None:
    """The plans the owning module's kind gives, or None when the stored rank does not fit the kind."""
    rank = len(shape)
    if kind == "not_a_weight":
        return [_skip(name, shape, f"not a weight matrix ({role or 'not a module weight'})")]
    if kind in ("linear", "embedding", "parameter") and rank == 2:
        return _dense(name, shape, "embedding" if kind == "embedding" else "dense", split_fused, sibling_shapes)
    if kind == "experts" and rank == 3:
        return _experts(name, shape)
    if kind == "per_head" and rank == 3:  # (D, H, d_head): the D × H·d_head projection
        d, h, k = shape
        return [LayerPlan(name, "", "dense", shape, max(d, h * k), min(d, h * k), 1, 1.0,
                          extract=lambda W: W.reshape(1, d, h * k))]
    if kind in ("conv1d", "conv2d", "conv3d") and rank == int(kind[4]) + 2:
        return [_conv_first(name, shape)]
    return None


def _dense(name, shape, layer_type, split_fused, sibling_shapes) -> list[LayerPlan]:
    if split_fused:
        return _split_2d(name, shape, layer_type, sibling_shapes)
    return [LayerPlan(name, "", layer_type, shape, max(shape), min(shape), 1, 1.0, extract=lambda W: W.unsqueeze(0))]


def _experts(name, shape) -> list[LayerPlan]:
    experts, rows, cols = shape
    return [LayerPlan(name, str(e), "dense", shape, max(rows, cols), min(rows, cols), 1, 1.0,
                      extract=lambda W, e=e: W[e:e + 1]) for e in range(experts)]


def _conv_first(name, shape) -> LayerPlan:
    """A channels-first convolution (out, in, *kernel): the kernel positions' (out, in) slices, in
    row-major kernel order."""
    out_c, in_c, *kernel = shape
    rf, n = math.prod(kernel), len(kernel)
    order = (*range(2, 2 + n), 0, 1)
    return _conv_plan(name, shape, f"conv{n}d", out_c, in_c, rf,
                      lambda W: W.permute(*order).reshape(rf, out_c, in_c))


def _matrix_type(name: str) -> str:
    """``embedding`` for a 2-D tensor named as an embedding table, ``dense`` otherwise."""
    return "embedding" if _EMBEDDING_TABLE.search(name) else "dense"


def _realify(W: torch.Tensor) -> torch.Tensor:
    """Complex (N, M) → real (1, 2N, 2M) [[Re, −Im], [Im, Re]]: Gram eigenvalues = those of WᴴW, each twice."""
    re_, im = W.real, W.imag
    return torch.cat([torch.cat([re_, -im], 1), torch.cat([im, re_], 1)], 0).unsqueeze(0)


def _conv_plan(name, shape, layer_type, rows, cols, rf, extract) -> LayerPlan:
    return LayerPlan(name, "", layer_type, shape, max(rows, cols), min(rows, cols), rf, CONV_NORM,
                     extract=extract)


def _per_slice(plan: LayerPlan) -> list[LayerPlan]:
    if plan.layer_type not in ("conv1d", "conv2d", "conv3d") or plan.rf == 1:
        return [plan]
    out = []
    kernel = plan.shape[2:] if plan.shape[0] + plan.shape[1] >= sum(plan.shape[2:]) else plan.shape[:-2]
    for s in range(plan.rf):
        part = ",".join(str(i) for i in _unravel(s, kernel)) if plan.layer_type != "conv1d" else str(s)
        out.append(dataclasses.replace(plan, part=part, rf=1,
                                       extract=lambda W, s=s, f=plan.extract: f(W)[s:s + 1]))
    return out


def _unravel(index: int, dims: Sequence[int]) -> list[int]:
    out = []
    for d in reversed(dims):
        out.append(index % d)
        index //= d
    return out[::-1]


#: How the skip reason of a matrix too small to fit starts (decided from its shape: the tensor is not read).
TOO_FEW_EVALS = "too few eigenvalues"


def _check_size(plan: LayerPlan, min_evals: int, max_evals: int | None) -> LayerPlan:
    if plan.skip_reason is not None:
        return plan
    if plan.M < 2:
        return dataclasses.replace(plan, skip_reason=f"{TOO_FEW_EVALS} (each slice is a vector, M = 1)"
                                   + ("" if plan.layer_type not in ("conv1d", "conv2d", "conv3d") else
                                      ": a depthwise or single-input-channel convolution"))
    if plan.num_evals < min_evals:
        return dataclasses.replace(plan, skip_reason=f"{TOO_FEW_EVALS} ({plan.num_evals} < {min_evals})")
    if max_evals is not None and plan.num_evals > max_evals:
        return dataclasses.replace(plan, skip_reason=f"too many eigenvalues ({plan.num_evals} > {max_evals})")
    return plan


def _split_2d(name, shape, layer_type, sibling_shapes) -> list[LayerPlan]:
    rows, cols = shape
    blocks: list[tuple[str, int, int]] = []  # (part, axis, count)
    if _FUSED_QKV.search(name):
        if name.endswith("c_attn.weight") and cols == 3 * rows:  # GPT-2 Conv1D, stored (in, out)
            blocks = [(p, 1, 3) for p in "qkv"]
        elif rows % 3 == 0:
            blocks = [(p, 0, 3) for p in "qkv"]
    elif (m := _RNN.search(name)) is not None:
        hh_name = name[: m.start(2)] + "hh" + name[m.end(2):]
        hh = sibling_shapes.get(hh_name, shape if m.group(2) == "hh" else None)
        gates = (hh[0] // hh[1]) if hh is not None and len(hh) == 2 and hh[1] else 0
        letters = {4: "ifgo", 3: "rzn"}.get(gates)
        if letters and rows % gates == 0:
            blocks = [(g, 0, gates) for g in letters]
    if not blocks:
        return [LayerPlan(name, "", layer_type, shape, max(shape), min(shape), 1, 1.0,
                          extract=lambda W: W.unsqueeze(0))]
    plans = []
    for idx, (part, axis, count) in enumerate(blocks):
        size = shape[axis] // count
        r, c = (size, cols) if axis == 0 else (rows, size)
        plans.append(LayerPlan(
            name, part, layer_type, shape, max(r, c), min(r, c), 1, 1.0,
            extract=lambda W, i=idx, a=axis, s=size: W.narrow(a, i * s, s).unsqueeze(0)))
    return plans
