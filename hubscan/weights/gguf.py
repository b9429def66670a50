"""GGUF reader (llama.cpp's format): tensors read memory-mapped through the ``gguf`` package's ``GGUFReader``.

Layout
    A header (magic ``GGUF``, version, key/value metadata), then one info record per tensor (name, dims, ggml
    type, offset) and the aligned data area. ``GGUFReader`` parses the header and maps the file
    (``numpy.memmap``); nothing is read until a tensor's ``load()``, which reads (and dequantizes) that tensor
    alone.

Orientation
    GGUF stores dims in ggml order, fastest-varying first (``ne[0]`` is the row length), i.e. **reversed**
    from numpy/torch order. In gguf 0.19 ``ReaderTensor.shape`` is that raw ggml order, while
    ``ReaderTensor.data`` is a numpy array in numpy order (for quantized types its last axis counts bytes, not
    elements). hubscan reports ``tuple(reversed(tensor.shape))``: the numpy/torch order, which is the original
    PyTorch orientation, e.g. ``(out, in)`` for a Linear weight, ``(vocab, dim)`` for ``token_embd.weight``.
    (llama.cpp's converters write the torch array as is; their permutation of q/k rows for rotary embeddings
    reorders rows and leaves the eigenvalues of WᵀW unchanged.) Names are GGUF names (``blk.0.attn_q.weight``),
    not the Hugging Face ones.

Dtypes
    ``F32``, ``F16``, ``BF16``, ``F64`` load as float32/float16/bfloat16/float64; ``I8``/``I16``/``I32``/
    ``I64`` as those integer dtypes (the analysis skips them). A quantized type (``Q8_0``, ``Q4_0``, ``Q4_K``,
    ``IQ2_XXS`` …) that ``gguf.quants.dequantize`` implements is dequantized to float32 in ``load()`` and
    reported with dtype ``float32``, so it is analyzed; ``WeightSet.stats["dequantized"]`` maps each such
    tensor to its stored type name (``{"blk.0.attn_q.weight": "Q4_K"}``) and opening logs the count per type.
    The spectrum is then that of the dequantized weights (original weights plus quantization error). A type
    this ``gguf`` cannot dequantize (``Q8_1``, ``Q8_K`` in gguf 0.19) is reported with its lower-cased name as
    dtype (``q8_1``), which the planner skips as ``quantized (q8_1)``; its ``load()`` returns the raw blocks
    as a uint8 tensor of shape ``(..., bytes per row)``.

Refused
    A file ``GGUFReader`` cannot parse (bad magic, unsupported version, truncated, duplicate names, a tensor
    past the end of the file) is a :class:`~hubscan.errors.CorruptFileError`; big-endian files are an
    :class:`~hubscan.errors.UnsupportedFormatError`. A tensor of a ggml type newer than the installed ``gguf``
    package is set aside before ``GGUFReader`` builds its tensors (the library refuses the whole file
    otherwise): that tensor's entry is skipped ``unknown GGUF tensor type <id>`` (the model ``incomplete``),
    the other tensors are read as usual.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import re

import numpy as np
import torch

from hubscan.errors import CorruptFileError, UnsupportedFormatError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.files import SNIFF_BYTES, refuse_other_format

__all__ = ["open_gguf", "can_dequantize"]

log = logging.getLogger(__name__)

_MIN_HEADER = 24  # magic, version (4 bytes each), tensor count, key/value count (8 bytes each)


def _gguf():
    """The gguf package, imported on first use (optional dependency: ``pip install 'hubscan[formats]'``)."""
    try:
        import gguf
        import gguf.quants  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError("gguf", "reading GGUF files needs the gguf package "
                                             "(pip install 'hubscan[formats]')") from e
    return gguf


@functools.cache
def _plain_types() -> dict:
    """ggml types stored as plain arrays -> torch dtype (BF16 comes from GGUFReader as bytes, viewed here)."""
    Q = _gguf().GGMLQuantizationType
    return {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16, Q.F64: torch.float64,
            Q.I8: torch.int8, Q.I16: torch.int16, Q.I32: torch.int32, Q.I64: torch.int64}


@functools.cache
def can_dequantize(qtype) -> bool:
    """Whether the installed ``gguf.quants.dequantize`` implements this ggml type (probed on one zero block)."""
    gguf = _gguf()
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        out = gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    except Exception as e:  # an implementation that fails on its own zero block: treat as unsupported
        log.debug("gguf cannot dequantize %s: %s", qtype.name, e)
        return False
    return out.shape[-1] == block_size


@register_reader("gguf", [".gguf"], rules=[FileRule(("*.gguf",), anywhere=True, priority=70)])
def open_gguf(path: str | os.PathLike) -> WeightSet:
    """Open a ``.gguf`` file memory-mapped; tensors are read (and dequantized) one at a time.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    WeightSet
        Entries in file order, shapes in numpy/torch order (see module docstring); ``stats["dequantized"]``
        maps each dequantized tensor to its stored ggml type name.

    Raises
    ------
    CorruptFileError
        ``GGUFReader`` refused the file (bad magic or version, truncated, malformed header).
    UnsupportedFormatError
        Big-endian file, or a tensor type unknown to the installed ``gguf`` package.
    """
    where = os.fspath(path)
    gguf = _gguf()
    size = os.path.getsize(where)
    with open(where, "rb") as f:
        head = f.read(_MIN_HEADER)
    if head[:4] != b"GGUF":
        refuse_other_format(head[:SNIFF_BYTES], where, "not a GGUF file")
        raise CorruptFileError(where, f"not a GGUF file (starts with {head[:4]!r}, not b'GGUF')")
    if size < _MIN_HEADER:
        raise CorruptFileError(where, f"file is {size} bytes, too short for a GGUF header ({_MIN_HEADER} bytes)")
    try:
        reader = _tolerant_reader()(where, "r")
    except ValueError as e:
        match = re.search(r"(\d+) is not a valid GGMLQuantizationType", str(e))
        if match:
            raise UnsupportedFormatError(where, f"tensor type {match.group(1)} is unknown to gguf "
                                                f"{_version()} (a newer ggml quantization?)") from e
        raise CorruptFileError(where, f"not a readable GGUF file ({_one_line(e)})") from e
    except Exception as e:  # struct/index/key errors from a malformed header, I/O errors
        raise CorruptFileError(where, f"not a readable GGUF file ({_one_line(e)})") from e
    if reader.byte_order != "I":
        raise UnsupportedFormatError(where, "big-endian GGUF file")
    Q = gguf.GGMLQuantizationType
    entries, dequantized, undequantizable = [], {}, collections.Counter()
    for name, shape, type_id in getattr(reader, "unknown_tensors", []):
        entries.append(TensorEntry(name, shape, f"ggml type {type_id}", where, lambda: torch.empty(0),
                                   skip_reason=f"unknown GGUF tensor type {type_id} (gguf {_version()} cannot "
                                               "decode it)", understood=False))
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        qtype = Q(t.tensor_type)
        if qtype in _plain_types():
            dtype = str(_plain_types()[qtype]).removeprefix("torch.")
        elif can_dequantize(qtype):
            dtype = "float32"
            dequantized[t.name] = qtype.name
        else:
            dtype = qtype.name.lower()
            undequantizable[qtype.name] += 1
        entries.append(TensorEntry(t.name, shape, dtype, where,
                                   functools.partial(_load, t.data, qtype, shape, dtype, t.name, where)))
    if dequantized:
        counts = collections.Counter(dequantized.values())
        log.info("%s: dequantizing %d quantized tensor(s) to float32 (%s)", where, len(dequantized),
                 ", ".join(f"{n} {q}" for q, n in sorted(counts.items())))
    if undequantizable:
        log.info("%s: %d tensor(s) of types gguf %s cannot dequantize are skipped as quantized (%s)", where,
                 sum(undequantizable.values()), _version(),
                 ", ".join(f"{n} {q}" for q, n in sorted(undequantizable.items())))
    log.debug("%s: %d tensors", where, len(entries))

    def close() -> None:
        entries.clear()  # the memmap is released with the last view of it

    return WeightSet(files=[where], format="gguf", entries=lambda: iter(entries), close=close,
                     stats={"dequantized": dequantized} if dequantized else {})


@functools.cache
def _tolerant_reader() -> type:
    """``GGUFReader`` that sets aside tensors of a ggml type the installed ``gguf`` does not know (in
    ``unknown_tensors``: name, numpy-order shape, type id) instead of refusing the file. It filters the
    parsed tensor-info fields before the library's own ``_build_tensors`` (name, n_dims, dims, type,
    offset: the GGUF tensor-info layout); if that hook ever changes, it defers to the library unchanged."""
    gguf = _gguf()

    class TolerantReader(gguf.GGUFReader):
        def _build_tensors(self, start_offs, fields):
            self.unknown_tensors, known = [], []
            try:
                for field in fields:
                    _name_len, name, _n_dims, dims, raw_dtype, _offset = field.parts
                    try:
                        gguf.GGMLQuantizationType(int(raw_dtype[0]))
                        known.append(field)
                    except ValueError:
                        self.unknown_tensors.append((bytes(name).decode("utf-8", "replace"),
                                                     tuple(int(d) for d in reversed(dims.tolist())),
                                                     int(raw_dtype[0])))
            except (ValueError, TypeError, AttributeError):  # another field layout: the library decides
                self.unknown_tensors, known = [], fields
            return super()._build_tensors(start_offs, known)

    return TolerantReader


def _load(data: np.ndarray, qtype, shape: tuple, dtype: str, name: str, where: str) -> torch.Tensor:
    gguf = _gguf()
    try:
        if dtype == "bfloat16":  # bytes (..., 2 * n) -> bfloat16 (..., n)
            return torch.from_numpy(np.array(data, dtype=np.uint8)).view(torch.bfloat16).reshape(shape)
        if qtype in _plain_types():
            return torch.from_numpy(np.array(data)).reshape(shape)
        if dtype == "float32":
            out = gguf.quants.dequantize(np.asarray(data), qtype)
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(shape)
        return torch.from_numpy(np.array(data, dtype=np.uint8))  # raw blocks of an undequantizable type
    except Exception as e:
        raise CorruptFileError(where, f"tensor {name!r} is unreadable: {_one_line(e)}") from e


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # pragma: no cover
        return "(unknown version)"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or "no details given"
