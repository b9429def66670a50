"""Quantized weight layouts: each scheme finds a weight and its companion tensors by name and shape, and
either dequantizes them to float32 before the ESD or marks the weight ``quantized (<scheme>)``.

Read (dequantized; the decoded ``W`` is what the row's ESD is of)
    * **FP8 block-scaled** (DeepSeek-V3, Qwen-FP8): ``weight`` F8 (out, in) + ``weight_scale_inv`` F32
      (⌈out/b⌉, ⌈in/b⌉): ``W = w · s[i // b, j // b]``. The block b is 128 (the published
      ``weight_block_size``) when the grid fits it, else ⌈dim / grid⌉; edge blocks may be partial.
    * **FP8 / INT8 with ``weight_scale``** (compressed-tensors, FBGEMM): per-tensor (one value),
      per-channel ((out,) or (out, 1)) or per-group ((out, G)) scales, ``weight_zero_point`` subtracted
      when present: ``W = (w − z) · s``.
    * **GPTQ** (AutoGPTQ / GPTQModel ``checkpoint_format: gptq``, as on the Hub): ``qweight`` int32
      (in·bits/32, out) packs ``32/bits`` codes per word along the input axis, code k in bits
      [k·bits, (k+1)·bits); ``qzeros`` int32 (groups, out·bits/32) packs zero points the same way along
      the output axis, stored minus one; ``scales`` (groups, out); ``g_idx`` (in,) maps each input row to
      its group (default ``i // group_size``): ``W[i, o] = scales[g, o] · (q[i, o] − (z[g, o] + 1))``,
      g = g_idx[i]. 2-, 4- and 8-bit.
    * **AWQ** (AutoAWQ GEMM): ``qweight`` int32 (in, out/8) packs 8 4-bit codes per word along the output
      axis in the order 0, 2, 4, 6, 1, 3, 5, 7; ``qzeros`` (groups, out/8) the same; ``scales`` (groups, out):
      ``W[i, o] = (q[i, o] − z[i // group_size, o]) · scales[i // group_size, o]``.
    * **bitsandbytes Int8Params**: ``weight`` int8 (out, in) + ``SCB`` (out,): ``W = w · SCB[:, None] / 127``.
    * **bitsandbytes Params4bit** (nf4 / fp4): ``weight`` uint8 packs two codes per byte (first in the
      high nibble); ``weight.absmax`` one scale per ``blocksize`` values (itself 8-bit quantized with
      ``nested_absmax`` / ``nested_quant_map`` / offset under double quantization); ``weight.quant_map``
      the 16-value code book; ``weight.quant_state.bitsandbytes__<type>`` the JSON with the shape:
      ``W = quant_map[code] · absmax[block]``. Without a readable quant_state JSON (no shape) it is skipped.
    * **compressed-tensors pack-quantized** (int4 / int8 ``weight_packed``): ``weight_packed`` int32
      (out, ⌈in·bits/32⌉) packs codes along the input axis, code k of a word in bits [k·bits, (k+1)·bits),
      stored offset by 2^(bits−1); ``weight_shape`` (out, in); ``weight_scale`` per channel (out, 1) or
      group (out, G); optional ``weight_zero_point`` packed the same way along the output axis:
      ``W = (q − z) · s`` with q, z signed.
    * **MXFP4** (gpt-oss): ``*_blocks`` uint8 (…, G, 16) hold 32 FP4 E2M1 codes per block (low nibble
      first) and ``*_scales`` uint8 (…, G) an E8M0 exponent: ``W = fp4(code) · 2^(scale − 127)``, shape
      (…, G·32).
    * **MLX affine** (mlx-community; ``mlx.core.quantize``): ``weight`` uint32 (…, out, in·bits/32), ``scales``
      and ``biases`` (…, out, in/group_size), bits 2, 3, 4, 5, 6, 8 and group size 32, 64, 128 from
      ``config.json`` ``quantization`` ({"group_size", "bits"}, per-layer overrides under the module's path,
      e.g. ``quantization["model.layers.0.mlp.gate_proj"] = {"group_size": 64, "bits": 8}``): each row's
      bytes are a little-endian bit stream, value k in bits [k·bits, (k+1)·bits) (mlx ``extract_bits`` /
      ``_qmm`` in ``backend/cpu/quantized.cpp``: for 3, 5, 6 bits a value may straddle two bytes):
      ``W[…, i] = scales[…, i // group_size] · q[…, i] + biases[…, i // group_size]``. Without the config's
      bits and group size (they cannot be told apart from the shapes: 4-bit/64 and 8-bit/128 pack alike) the
      weight is skipped ``quantized (mlx …)``.

Recognised, not decoded (skipped ``quantized (<scheme>)``, the model ``incomplete``; companions never rows)
    compressed-tensors NVFP4 (``weight_packed`` uint8 + ``weight_global_scale``), bitsandbytes 4-bit without a
    readable quant_state, GPTQ with 3-bit or unrecognised shapes, MLX modes other than affine (``mxfp4`` …),
    **HQQ** (``W_q`` with ``scale``, ``zero``, ``shape``, ``nbits``, ``group_size`` … of its module),
    **EXL2** (ExLlamaV2: ``q_weight`` with ``q_scale``, ``q_scale_max``, ``q_groups``, ``q_invperm`` …).
"""

from __future__ import annotations

import json
import math
import sys

import torch

from hubscan.errors import CorruptFileError
from hubscan.weights.base import TensorEntry
from hubscan.weights.layouts import folded, not_understood, register_scheme

FP8_BLOCK = 128  # DeepSeek-V3 / Qwen3-FP8 quantization_config.weight_block_size
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # code k of a word holds column AWQ_ORDER[k] of its group of 8
FP4_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def _block(dim: int, grid: int, where: str) -> int:
    if math.ceil(dim / FP8_BLOCK) == grid:
        return FP8_BLOCK
    b = math.ceil(dim / grid)
    if grid < 1 or math.ceil(dim / b) != grid:
        raise CorruptFileError(where, f"scale grid of {grid} blocks does not tile a dimension of {dim}")
    return b


def dequantize_fp8_block(w: torch.Tensor, scale_inv: torch.Tensor, where: str = "") -> torch.Tensor:
    """Block-scaled FP8: ``W[i, j] = w[i, j] · s[i // br, j // bc]``.

    Parameters
    ----------
    w : torch.Tensor, shape (out, in), float8
    scale_inv : torch.Tensor, shape (⌈out/br⌉, ⌈in/bc⌉), float32
        The per-block multipliers (DeepSeek names them ``weight_scale_inv``; they multiply).
    where : str
        For messages.

    Returns
    -------
    torch.Tensor, shape (out, in), float32

    Raises
    ------
    CorruptFileError
        The grid does not tile the weight.
    """
    out, inn = w.shape
    br, bc = _block(out, scale_inv.shape[0], where), _block(inn, scale_inv.shape[1], where)
    s = scale_inv.float().repeat_interleave(br, 0)[:out].repeat_interleave(bc, 1)[:, :inn]
    return w.float() * s


def dequantize_scaled(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None,
                      where: str = "") -> torch.Tensor:
    """``W = (w − z) · s`` with per-tensor, per-channel (out,)/(out, 1) or per-group (out, G) scales.

    Parameters
    ----------
    w : torch.Tensor, shape (out, in), float8 or int8
    scale, zero : torch.Tensor
        Shapes (), (1,), (out,), (out, 1) or (out, G) with G dividing ``in``.

    Returns
    -------
    torch.Tensor, shape (out, in), float32
    """
    out, inn = w.shape

    def expand(t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        if t.numel() == 1:
            return t.reshape(1, 1)
        if t.numel() == out:
            return t.reshape(out, 1)
        if t.dim() == 2 and t.shape[0] == out and inn % t.shape[1] == 0:
            return t.repeat_interleave(inn // t.shape[1], 1)
        raise CorruptFileError(where, f"scale of shape {tuple(t.shape)} does not fit a weight {(out, inn)}")

    z = expand(zero) if zero is not None else 0.0
    return (w.float() - z) * expand(scale)


def _unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 (R, C) → codes (R·32/bits, C): code k of word [r, c] is row r·(32/bits) + k."""
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    codes = (packed.to(torch.int32).unsqueeze(1) >> shifts.view(1, -1, 1)) & ((1 << bits) - 1)
    return codes.reshape(-1, packed.shape[1])


def _unpack_cols(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 (R, C) → codes (R, C·32/bits): code k of word [r, c] is column c·(32/bits) + k."""
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    codes = (packed.to(torch.int32).unsqueeze(2) >> shifts.view(1, 1, -1)) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], -1)


def dequantize_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                    g_idx: torch.Tensor | None, bits: int) -> torch.Tensor:
    """GPTQ (v1 checkpoint format) to float: ``W[i, o] = scales[g, o] · (q[i, o] − (z[g, o] + 1))``.

    Parameters
    ----------
    qweight : torch.Tensor, shape (in·bits/32, out), int32
    qzeros : torch.Tensor, shape (groups, out·bits/32), int32
    scales : torch.Tensor, shape (groups, out), float16
    g_idx : torch.Tensor, shape (in,), int32, or None
        Group of each input row; None: ``i // (in / groups)``.
    bits : int
        2, 4 or 8.

    Returns
    -------
    torch.Tensor, shape (in, out), float32
    """
    q = _unpack_rows(qweight, bits)
    out = scales.shape[1]
    z = _unpack_cols(qzeros, bits)[:, :out] + 1
    n_in = q.shape[0] if g_idx is None else g_idx.shape[0]
    q = q[:n_in]
    g = g_idx.long() if g_idx is not None else torch.arange(n_in) // (n_in // scales.shape[0])
    return scales.float()[g] * (q - z[g]).float()


def dequantize_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """AWQ GEMM 4-bit to float: ``W[i, o] = (q[i, o] − z[i // gs, o]) · scales[i // gs, o]``.

    Parameters
    ----------
    qweight : torch.Tensor, shape (in, out/8), int32
    qzeros : torch.Tensor, shape (groups, out/8), int32
    scales : torch.Tensor, shape (groups, out), float16

    Returns
    -------
    torch.Tensor, shape (in, out), float32
    """
    order = torch.tensor(AWQ_ORDER)
    undo = torch.argsort(order)  # position of column j within its word

    def unpack(t: torch.Tensor) -> torch.Tensor:
        codes = _unpack_cols(t, 4).reshape(t.shape[0], -1, 8)
        return codes[:, :, undo].reshape(t.shape[0], -1)

    q, z = unpack(qweight), unpack(qzeros)
    g = torch.arange(q.shape[0]) // (q.shape[0] // scales.shape[0])
    return (q - z[g]).float() * scales.float()[g]


def dequantize_bnb4(packed: torch.Tensor, absmax: torch.Tensor, quant_map: torch.Tensor, shape: tuple,
                    blocksize: int) -> torch.Tensor:
    """bitsandbytes 4-bit: two codes per byte (first in the high nibble), ``quant_map[code] · absmax[block]``.

    Parameters
    ----------
    packed : torch.Tensor, uint8, ⌈numel/2⌉ values
    absmax : torch.Tensor, float32, one per ``blocksize`` values (already de-nested)
    quant_map : torch.Tensor, float32, (16,)
    shape : tuple of int
    blocksize : int

    Returns
    -------
    torch.Tensor of ``shape``, float32
    """
    flat = packed.reshape(-1).to(torch.int64)
    codes = torch.stack([flat >> 4, flat & 0xF], 1).reshape(-1)
    n = math.prod(shape)
    values = quant_map.float()[codes[:n]]
    return (values * absmax.float().repeat_interleave(blocksize)[:n]).reshape(shape)


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """MXFP4: ``blocks`` uint8 (…, G, 16), ``scales`` uint8 (…, G) → float32 (…, G·32)."""
    lut = torch.tensor(FP4_E2M1)
    b = blocks.to(torch.int64)
    values = torch.stack([lut[b & 0xF], lut[b >> 4]], -1).reshape(*blocks.shape[:-1], 32)
    values = values * torch.pow(2.0, scales.to(torch.float32) - 127).unsqueeze(-1)
    return values.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


def _load_all(*entries: TensorEntry | None) -> list:
    return [e.load() if e is not None else None for e in entries]


# --- schemes, in the order they run -------------------------------------------------------------------

@register_scheme("fp8 / int8 scaled")
def _fold_scaled(by_name: dict) -> list:
    out = []
    for name, w in by_name.items():
        if not name.endswith("weight") or len(w.shape) != 2 or not (w.dtype.startswith("float8") or w.dtype == "int8"):
            continue
        inv, scale = by_name.get(name + "_scale_inv"), by_name.get(name + "_scale")
        zero = by_name.get(name + "_zero_point")
        extra = [n for n in (name[: -len("weight")] + "input_scale",) if n in by_name]
        if inv is not None and len(inv.shape) == 2:
            out.append(folded(w, [inv.name, *extra], w.shape, "fp8 block-scaled",
                              lambda w=w, inv=inv: dequantize_fp8_block(*_load_all(w, inv), where=w.file)))
        elif scale is not None:
            out.append(folded(w, [scale.name, *([zero.name] if zero else []), *extra], w.shape,
                              f"{w.dtype} scaled",
                              lambda w=w, s=scale, z=zero: dequantize_scaled(*_load_all(w, s, z), where=w.file)))
    return out


@register_scheme("gptq / awq")
def _fold_gptq_awq(by_name: dict) -> list:
    out = []
    for name, qw in by_name.items():
        if not name.endswith("qweight") or qw.dtype != "int32" or len(qw.shape) != 2:
            continue
        prefix = name[: -len("qweight")]
        scales, qzeros, g_idx = (by_name.get(prefix + k) for k in ("scales", "qzeros", "g_idx"))
        companions = [e.name for e in (qzeros, scales, g_idx) if e is not None]
        if scales is None or qzeros is None or len(scales.shape) != 2:
            out.append(not_understood(qw, companions, "quantized (gptq/awq: scales or qzeros missing)"))
            continue
        groups, n_out = scales.shape
        if qw.shape[1] == n_out:  # GPTQ: packed along the input axis
            n_in = g_idx.shape[0] if g_idx is not None else None
            bits = 32 * qw.shape[0] // n_in if n_in and (32 * qw.shape[0]) % n_in == 0 else (4 if n_in is None else 0)
            n_in = n_in or qw.shape[0] * 32 // max(bits, 1)
            if bits not in (2, 4, 8):
                out.append(not_understood(qw, companions, f"quantized (gptq {bits or '?'}-bit)"))
                continue
            out.append(folded(qw, companions, (n_in, n_out), f"gptq {bits}-bit",
                              lambda qw=qw, z=qzeros, s=scales, g=g_idx, b=bits:
                              dequantize_gptq(*_load_all(qw, z, s, g), b)))
        elif qw.shape[1] * 8 == n_out:  # AWQ: packed along the output axis
            out.append(folded(qw, companions, (qw.shape[0], n_out), "awq 4-bit",
                              lambda qw=qw, z=qzeros, s=scales: dequantize_awq(*_load_all(qw, z, s))))
        else:
            out.append(not_understood(qw, companions, "quantized (gptq/awq: shapes not understood)"))
    return out


def dequantize_packed(packed: torch.Tensor, shape: tuple, scale: torch.Tensor, zero: torch.Tensor | None,
                      bits: int) -> torch.Tensor:
    """compressed-tensors pack-quantized to float: ``W = (q − z) · s`` (q, z unpacked and made signed).

    Parameters
    ----------
    packed : torch.Tensor, shape (out, ⌈in·bits/32⌉), int32
    shape : (out, in)
    scale : torch.Tensor, shape (out, 1) or (out, G)
    zero : torch.Tensor, shape (⌈out·bits/32⌉, G), int32, or None (symmetric)
    bits : int
        4 or 8 (codes never straddle two words).

    Returns
    -------
    torch.Tensor, shape (out, in), float32
    """
    n_out, n_in = shape
    offset = 1 << (bits - 1)
    q = (_unpack_cols(packed, bits)[:, :n_in] - offset).float()
    z = (_unpack_rows(zero, bits)[:n_out] - offset).float() if zero is not None else None
    return dequantize_scaled(q, scale, z)


@register_scheme("compressed-tensors packed")
def _fold_packed(by_name: dict) -> list:
    out = []
    for name, w in by_name.items():
        if not name.endswith("weight_packed"):
            continue
        prefix = name[: -len("weight_packed")]
        companions = [n for n in by_name if n.startswith(prefix + "weight_") and n != name]
        scale, zero, shape_entry = (by_name.get(prefix + k) for k in ("weight_scale", "weight_zero_point", "weight_shape"))
        shape = tuple(int(v) for v in shape_entry.load().reshape(-1).tolist()) if shape_entry is not None else ()
        bits = 32 * w.shape[1] // shape[1] if len(shape) == 2 and len(w.shape) == 2 and shape[1] else 0
        if (w.dtype != "int32" or prefix + "weight_global_scale" in by_name or scale is None or bits not in (4, 8)
                or -(-shape[1] * bits // 32) != w.shape[1]):
            kind = "nvfp4" if prefix + "weight_global_scale" in by_name else "compressed-tensors packed"
            out.append(not_understood(w, companions, f"quantized ({kind})"))
            continue
        out.append(folded(w, companions, shape, f"compressed-tensors int{bits}",
                          lambda w=w, s=scale, z=zero, shape=shape, b=bits:
                          dequantize_packed(w.load(), shape, s.load(), z.load() if z is not None else None, b)))
    return out


@register_scheme("bitsandbytes")
def _fold_bnb(by_name: dict) -> list:
    out = []
    for name, w in by_name.items():
        if not name.endswith("weight"):
            continue
        module = name[: -len("weight")]
        scb = by_name.get(module + "SCB")
        if w.dtype == "int8" and scb is not None and len(w.shape) == 2:
            companions = [scb.name] + [n for n in (module + "weight_format",) if n in by_name]
            out.append(folded(w, companions, w.shape, "bnb int8",
                              lambda w=w, s=scb: _bnb_int8(*_load_all(w, s))))
            continue
        absmax = by_name.get(name + ".absmax")
        if w.dtype != "uint8" or absmax is None:
            continue
        companions = [n for n in by_name if n.startswith(name + ".") and n != name]
        state = next((by_name[n] for n in companions if ".quant_state.bitsandbytes__" in n), None)
        kind = state.name.rsplit("__", 1)[1] if state is not None else "4-bit"
        try:
            info = json.loads(bytes(state.load().reshape(-1).tolist()).decode("utf-8")) if state is not None else None
            shape = tuple(int(s) for s in info["shape"])
            blocksize = int(info["blocksize"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            out.append(not_understood(w, companions, f"quantized (bnb 4-bit {kind}: its quant_state names no shape)"))
            continue
        out.append(folded(w, companions, shape, f"bnb 4-bit {kind}",
                          lambda w=w, info=info, shape=shape, bs=blocksize, n=name, d=by_name:
                          _bnb4(w, d, n, info, shape, bs)))
    return out


def _bnb_int8(w: torch.Tensor, scb: torch.Tensor) -> torch.Tensor:
    return w.float() * (scb.float().reshape(-1, 1) / 127.0)


def _bnb4(w: TensorEntry, by_name: dict, name: str, info: dict, shape: tuple, blocksize: int) -> torch.Tensor:
    absmax = by_name[name + ".absmax"].load()
    if name + ".nested_absmax" in by_name:  # double quantization: absmax stored as 8-bit codes
        nested_absmax = by_name[name + ".nested_absmax"].load().float()
        nested_map = by_name[name + ".nested_quant_map"].load().float()
        nested_bs = int(info.get("nested_blocksize", 256))
        codes = absmax.reshape(-1).long()
        absmax = nested_map[codes] * nested_absmax.repeat_interleave(nested_bs)[: codes.numel()]
        absmax = absmax + float(info.get("nested_offset", 0.0))
    return dequantize_bnb4(w.load(), absmax, by_name[name + ".quant_map"].load(), shape, blocksize)


@register_scheme("mxfp4")
def _fold_mxfp4(by_name: dict) -> list:
    out = []
    for name, blocks in by_name.items():
        if not name.endswith("_blocks") or blocks.dtype != "uint8" or len(blocks.shape) < 3 or blocks.shape[-1] != 16:
            continue
        scales = by_name.get(name[: -len("_blocks")] + "_scales")
        if scales is None or tuple(scales.shape) != tuple(blocks.shape[:-1]):
            continue
        shape = (*blocks.shape[:-2], blocks.shape[-2] * 32)
        out.append(folded(blocks, [scales.name], shape, "mxfp4",
                          lambda b=blocks, s=scales: dequantize_mxfp4(*_load_all(b, s))))
    return out


MLX_BITS = (2, 3, 4, 5, 6, 8)
MLX_GROUP_SIZES = (32, 64, 128)
_MLX_CHUNK = 1 << 22  # values decoded at a time (bounds the integer temporaries to ~32 MB)


def dequantize_mlx(w: torch.Tensor, scales: torch.Tensor, biases: torch.Tensor, bits: int,
                   group_size: int) -> torch.Tensor:
    """MLX affine quantization to float: ``W[…, i] = scales[…, g] · q[…, i] + biases[…, g]``, g = i // group_size.

    Each row of ``w`` is read as a little-endian bit stream with value k in bits [k·bits, (k+1)·bits)
    (``mlx.core.quantize``; mlx ``backend/cpu/quantized.cpp``): packs of lcm(bits, 8) bits, i.e. one byte for
    2, 4, 8 bits, three bytes for 3 and 6, five for 5.

    Parameters
    ----------
    w : torch.Tensor, shape (…, out, in·bits/32), uint32
    scales, biases : torch.Tensor, shape (…, out, in/group_size), float16 / bfloat16 / float32
    bits : int
        2, 3, 4, 5, 6 or 8.
    group_size : int
        32, 64 or 128.

    Returns
    -------
    torch.Tensor, shape (…, out, in), float32
    """
    if sys.byteorder != "little":  # pragma: no cover - the stored words are little-endian
        raise CorruptFileError("mlx", "MLX words are read as little-endian bytes")
    n_in = w.shape[-1] * 32 // bits
    pack = math.lcm(bits, 8)
    nbytes, per_pack = pack // 8, pack // bits
    raw = w.contiguous().view(torch.uint8).reshape(-1, n_in // per_pack, nbytes)
    s = scales.float().reshape(-1, n_in // group_size)
    b = biases.float().reshape(-1, n_in // group_size)
    shifts = torch.arange(0, pack, bits, dtype=torch.int64)
    out = torch.empty(raw.shape[0], n_in, dtype=torch.float32)
    step = max(1, _MLX_CHUNK // max(n_in, 1))
    for r in range(0, raw.shape[0], step):
        chunk = raw[r:r + step].to(torch.int64)
        word = sum(chunk[..., j] << (8 * j) for j in range(nbytes))
        q = ((word.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(chunk.shape[0], n_in)
        out[r:r + step] = (q.float().view(-1, n_in // group_size, group_size) * s[r:r + step, :, None]
                           + b[r:r + step, :, None]).view(-1, n_in)
    return out.reshape(*w.shape[:-1], n_in)


def _mlx_params(config: dict | None, module: str) -> dict | str:
    """The quantization of an MLX module from ``config.json``: {bits, group_size, mode}, or why not known."""
    config = config or {}
    quant = config.get("quantization")
    if not isinstance(quant, dict):
        alt = config.get("quantization_config")
        quant = alt if isinstance(alt, dict) and "quant_method" not in alt else None
    if quant is None:
        return "config.json gives no quantization bits / group_size"
    layer = quant.get(module, quant)
    if layer is False:
        return f"config.json says {module} is not quantized"
    if not isinstance(layer, dict):
        return f"config.json quantization[{module!r}] is {layer!r}"
    params = {k: layer.get(k, quant.get(k)) for k in ("bits", "group_size")}
    params["mode"] = layer.get("mode", quant.get("mode", "affine"))
    if not all(isinstance(params[k], int) for k in ("bits", "group_size")):
        return "config.json gives no quantization bits / group_size"
    return params


@register_scheme("mlx", config=True)
def _fold_mlx(by_name: dict, config: dict | None) -> list:
    out = []
    for name, w in by_name.items():
        if not name.endswith(".weight") or w.dtype != "uint32" or len(w.shape) < 2:
            continue
        module = name[: -len(".weight")]
        scales, biases = by_name.get(module + ".scales"), by_name.get(module + ".biases")
        if scales is None:
            continue
        companions = [e.name for e in (scales, biases) if e is not None]
        params = _mlx_params(config, module)
        if isinstance(params, str):
            out.append(not_understood(w, companions, f"quantized (mlx: {params})"))
            continue
        bits, group, mode = params["bits"], params["group_size"], params["mode"]
        if mode != "affine" or biases is None:
            out.append(not_understood(w, companions, f"quantized (mlx {mode if mode != 'affine' else 'without biases'})"))
            continue
        n_in = w.shape[-1] * 32 // bits if bits in MLX_BITS else 0
        groups = n_in // group if group in MLX_GROUP_SIZES and n_in % group == 0 else 0
        if (not groups or (w.shape[-1] * 32) % bits or tuple(scales.shape) != (*w.shape[:-1], groups)
                or tuple(biases.shape) != tuple(scales.shape)):
            out.append(not_understood(w, companions, f"quantized (mlx {bits}-bit group {group}: the shapes of "
                                                     f"weight {list(w.shape)} and scales {list(scales.shape)} do not fit)"))
            continue
        out.append(folded(w, companions, (*w.shape[:-1], n_in), f"mlx {bits}-bit group {group}",
                          lambda w=w, s=scales, b=biases, bits=bits, g=group:
                          dequantize_mlx(*_load_all(w, s, b), bits, g)))
    return out


#: Per-module tensors of layouts recognised but not decoded: (scheme, the quantized weight, its companions).
_NOT_DECODED = (("hqq", "W_q", ("scale", "zero", "shape", "nbits", "group_size", "axis", "channel_wise", "optimize",
                                "round_zero", "packing", "view_as_float", "unpack_view_dtype", "compute_dtype",
                                "encoded_state_dict", "quant_scale", "quant_zero", "stores_quant_config",
                                "offload_meta", "meta_scale", "meta_zero")),
                ("exl2", "q_weight", ("q_scale", "q_scale_max", "q_groups", "q_invperm", "q_perm", "q_group_map")))


@register_scheme("hqq / exl2")
def _fold_not_decoded(by_name: dict) -> list:
    """HQQ and EXL2 weights: skipped ``quantized (<scheme>)`` (not understood), their per-module tensors
    folded in as companions (so a ``scale`` (G, 1) is no row of its own)."""
    out = []
    for scheme, weight, parts in _NOT_DECODED:
        for name, w in by_name.items():
            if name == weight or name.endswith("." + weight):
                module = name[: -len(weight)]
                companions = [module + p for p in parts if module + p in by_name]
                if companions:
                    out.append(not_understood(w, companions, f"quantized ({scheme})"))
    return out
