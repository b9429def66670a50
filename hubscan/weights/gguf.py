"""GGUF reader (llama.cpp's format): the header parsed here with bounds, tensors read memory-mapped.

Layout (ggml ``docs/gguf.md``, versions 2 and 3, little-endian)
    ``GGUF`` magic, u32 version, u64 tensor count, u64 key/value count; the key/value metadata (key: u64
    length + UTF-8 bytes; u32 value type; the value: a scalar, a string, or an array of u32 item type, u64
    count and the items, arrays nesting); one info record per tensor (name, u32 n_dims, n_dims × u64 dims,
    u32 ggml type, u64 offset into the data area); padding to ``general.alignment`` (32 by default); the
    data area.

Parsing (:func:`read_header`)
    The header is walked once over a memory map of the file, and every count or length is checked
    against the bytes left in the file *before* anything is read or allocated for it: an array of ``n``
    items needs at least ``n ×`` (its item's smallest encoding) bytes, a tensor count ``n`` at least
    ``24 n`` bytes, and so on; a claim that cannot fit is a :class:`~hubscan.errors.CorruptFileError` at
    once. Metadata arrays (tokenizer vocabularies and merges: most of a GGUF header) are skipped, not
    built: a fixed-size array in one step, an array of strings by walking its length prefixes. Memory is
    thus O(number of keys + tensors) and time O(header bytes). (``gguf.GGUFReader`` builds a numpy view
    per array item, ~190 bytes of memory per byte of string array, and follows a count of 2**62 past
    the file's end without limit; the ``gguf`` package is used for the ggml type table, the byte shapes
    of quantized rows and ``gguf.quants.dequantize``.) Every tensor's bytes must lie inside the file,
    and no two tensors may share bytes (refused as corrupt, as for safetensors).

Orientation
    GGUF stores dims in ggml order, fastest-varying first (``ne[0]`` is the row length), i.e. **reversed**
    from numpy/torch order. hubscan reports ``tuple(reversed(dims))``: the numpy/torch order, which is the
    original PyTorch orientation, e.g. ``(out, in)`` for a Linear weight, ``(vocab, dim)`` for
    ``token_embd.weight`` (``gguf.GGUFReader``'s ``ReaderTensor.shape`` is the raw ggml order, its
    ``.data`` the numpy order). (llama.cpp's converters write the torch array as is; their permutation of
    q/k rows for rotary embeddings reorders rows and leaves the eigenvalues of WᵀW unchanged.) Names are
    GGUF names (``blk.0.attn_q.weight``), not the Hugging Face ones.

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

Split files (``gguf-split``)
    ``<stem>-00001-of-00003.gguf`` … are one model: opening any part reads every part found beside it, in
    order (:func:`open_gguf`); each part is a GGUF file of its own whose ``split.no`` / ``split.count`` /
    ``split.tensors.count`` must agree with its name and with the others (else
    :class:`~hubscan.errors.CorruptFileError`); an absent part is listed in ``WeightSet.missing`` (the model
    is ``incomplete``).

Several quantizations of one model (:func:`gguf_copy`)
    A repository or folder holding ``model-Q4_K_M.gguf``, ``model-Q8_0.gguf``, ``model-F16.gguf`` … holds one
    model: the file choice (:mod:`hubscan.weights.files`) reads its highest-precision file — F32, BF16, F16,
    then 8-bit (``Q8_0``), then the other k-quants and legacy quants by bits (``Q6_K``, ``Q5_K_M``, ``Q5_0`` …,
    k-quants before legacy at equal bits, larger variants first), then the i-quants (``IQ4_XS`` … ``IQ1_S``),
    then ternary — and lists the others as not read. The model is the file name before its quantization tag
    (``Llama-3.2-1B-Instruct`` for ``Llama-3.2-1B-Instruct-Q4_K_M.gguf``); ``mmproj-*`` files (a vision
    projector) are not the model.

Refused
    A malformed header (bad magic, a version other than 2 or 3, a count or length past the end of the
    file, a key or tensor name that is not UTF-8, a duplicate key or tensor name, more than 4 dims, a bad
    ``general.alignment``), a tensor outside the file, and overlapping tensors are a
    :class:`~hubscan.errors.CorruptFileError`; big-endian files are an
    :class:`~hubscan.errors.UnsupportedFormatError`. A tensor of a ggml type the installed ``gguf`` package
    does not know (a newer quantization) cannot be sized: its entry is skipped ``unknown GGUF tensor type
    <id>`` (the model ``incomplete``), the other tensors are read as usual.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import mmap
import os
import re
import struct
from typing import NamedTuple

import numpy as np
import torch

from hubscan.errors import CorruptFileError, UnsupportedFormatError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.files import SNIFF_BYTES, SPLIT, refuse_other_format

__all__ = ["open_gguf", "read_header", "GGUFHeader", "GGUFTensorInfo", "GGUFArray", "can_dequantize", "gguf_copy"]

log = logging.getLogger(__name__)

_MIN_HEADER = 24  # magic, version (4 bytes each), tensor count, key/value count (8 bytes each)
_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp refuses more
_MAX_NESTING = 8  # arrays of arrays (the format allows them; no writer nests)
_DEFAULT_ALIGNMENT = 32
#: Metadata value types (gguf.md ``gguf_metadata_value_type``) with a fixed size: type id -> struct format.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_TENSOR_INFO_MIN = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset
_KV_MIN = 8 + 4 + 1  # empty key, type, a one-byte value


class GGUFArray(NamedTuple):
    """A metadata array, not read: its item type id, item count and the file offset of its first item."""

    item_type: int
    count: int
    offset: int


class GGUFTensorInfo(NamedTuple):
    """One tensor-info record, checked against the file.

    ``dims`` in ggml order (fastest-varying first); ``start``/``nbytes`` its bytes in the file (absolute
    offset; ``nbytes`` None for a ggml type the installed ``gguf`` does not know, whose size is unknown)."""

    name: str
    dims: tuple
    type_id: int
    start: int
    nbytes: int | None


@dataclasses.dataclass(frozen=True)
class GGUFHeader:
    """A parsed GGUF header (:func:`read_header`).

    Attributes
    ----------
    version : int
    metadata : dict
        Key -> value: scalars as Python numbers/bools, strings decoded (invalid UTF-8 replaced), arrays
        as :class:`GGUFArray` (not read).
    tensors : list of GGUFTensorInfo
        In file order.
    alignment : int
        ``general.alignment`` (default 32).
    data_offset : int
        Start of the data area (end of the header, padded to ``alignment``).
    """

    version: int
    metadata: dict
    tensors: list
    alignment: int
    data_offset: int


class _Cursor:
    """Reads little-endian fields from ``buf``, every length checked against the bytes left."""

    def __init__(self, buf, where: str):
        self.buf, self.pos, self.end, self.where = buf, 0, len(buf), where

    def bad(self, why: str) -> CorruptFileError:
        return CorruptFileError(self.where, f"not a readable GGUF file: {why}")

    def need(self, n: int, what: str) -> int:
        """Claim ``n`` bytes for ``what``; returns where they start."""
        if n > self.end - self.pos:
            raise self.bad(f"{what} needs {n:,} bytes at byte {self.pos:,} but the file ends "
                           f"{self.end - self.pos:,} bytes later (corrupt or truncated)")
        start = self.pos
        self.pos += n
        return start

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.need(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.need(8, what))[0]

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"the length of {what}")
        start = self.need(n, what)
        return bytes(self.buf[start:start + n])

    def text(self, what: str) -> str:
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} {raw[:60]!r} is not UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0):
        """Read (scalars, strings) or skip (arrays: a :class:`GGUFArray`) one metadata value."""
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype]
            return struct.unpack_from(fmt, self.buf, self.need(struct.calcsize(fmt), what))[0]
        if vtype == _STRING:
            return self.raw_string(what).decode("utf-8", "replace")
        if vtype != _ARRAY:
            raise self.bad(f"{what} has value type {vtype}, which GGUF does not define")
        if depth >= _MAX_NESTING:
            raise self.bad(f"{what}: arrays nested more than {_MAX_NESTING} deep")
        item = self.u32(f"the item type of {what}")
        count = self.u64(f"the length of {what}")
        smallest = struct.calcsize(_SCALARS[item]) if item in _SCALARS else {_STRING: 8, _ARRAY: 12}.get(item)
        if smallest is None:
            raise self.bad(f"{what} is an array of value type {item}, which GGUF does not define")
        if count * smallest > self.end - self.pos:  # cannot fit: refused before any item is looked at
            raise self.bad(f"{what} claims {count:,} items of at least {smallest} bytes each, but the file "
                           f"ends {self.end - self.pos:,} bytes later (corrupt or truncated)")
        start = self.pos
        if item in _SCALARS:
            self.pos += count * smallest
        elif item == _STRING:  # walk the length prefixes (the hot loop of a tokenizer vocabulary)
            buf, pos, end, unpack = self.buf, self.pos, self.end, _U64.unpack_from
            for _ in range(count):
                if pos + 8 > end:
                    break
                pos += 8 + unpack(buf, pos)[0]
            else:
                if pos <= end:
                    self.pos = pos
                    return GGUFArray(item, count, start)
            raise self.bad(f"{what}: its strings run past the end of the file (corrupt or truncated)")
        else:
            for i in range(count):
                self.value(_ARRAY, f"{what}[{i}]", depth + 1)
        return GGUFArray(item, count, start)


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse and check a GGUF file's header against the file (module docstring, "Parsing").

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    GGUFHeader

    Raises
    ------
    CorruptFileError
        Not GGUF, a version other than 2 or 3, a count or length that does not fit in the file, a key or
        tensor name not UTF-8, duplicate keys or names, a tensor with more than 4 dims, a quantized row
        that is not whole blocks, a bad ``general.alignment``, a tensor outside the file, two tensors
        sharing bytes.
    UnsupportedFormatError
        A big-endian file.
    """
    where = os.fspath(path)
    size = os.path.getsize(where)
    with open(where, "rb") as f:
        head = f.read(_MIN_HEADER)
        if head[:4] != b"GGUF":
            refuse_other_format(head[:SNIFF_BYTES], where, "not a GGUF file")
            raise CorruptFileError(where, f"not a GGUF file (starts with {head[:4]!r}, not b'GGUF')")
        if size < _MIN_HEADER:
            raise CorruptFileError(where, f"file is {size} bytes, too short for a GGUF header ({_MIN_HEADER} bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf, size, where)


def _parse(buf, size: int, where: str) -> GGUFHeader:
    cur = _Cursor(buf, where)
    cur.need(4, "the magic")
    version = cur.u32("the version")
    if version & 0xFFFF == 0 and version:  # the version's bytes swapped: written on a big-endian machine
        raise UnsupportedFormatError(where, "big-endian GGUF file")
    if version not in _VERSIONS:
        raise cur.bad(f"version {version} (hubscan reads GGUF versions {' and '.join(map(str, _VERSIONS))})")
    n_tensors, n_kv = cur.u64("the tensor count"), cur.u64("the metadata count")
    if n_kv * _KV_MIN + n_tensors * _TENSOR_INFO_MIN > size - cur.pos:
        raise cur.bad(f"{n_kv:,} metadata entries and {n_tensors:,} tensors cannot fit in a {size:,}-byte file")
    metadata, types = {}, {}
    for i in range(n_kv):
        key = cur.text(f"metadata key {i}")
        if key in metadata:
            raise cur.bad(f"duplicate metadata key {key!r}")
        types[key] = cur.u32(f"the value type of {key!r}")
        metadata[key] = cur.value(types[key], f"metadata {key!r}")
    infos = []
    for i in range(n_tensors):
        name = cur.text(f"tensor name {i}")
        n_dims = cur.u32(f"the dims count of tensor {name!r}")
        if n_dims > _MAX_DIMS:
            raise cur.bad(f"tensor {name!r} has {n_dims} dims (GGUF tensors have at most {_MAX_DIMS})")
        dims = struct.unpack_from(f"<{n_dims}Q", buf, cur.need(8 * n_dims, f"the dims of tensor {name!r}"))
        infos.append((name, dims, cur.u32(f"the type of tensor {name!r}"), cur.u64(f"the offset of tensor {name!r}")))
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if "general.alignment" in metadata and (types["general.alignment"] != _UINT32 or alignment == 0
                                            or alignment & (alignment - 1)):
        raise cur.bad(f"general.alignment {alignment!r} is not a power of two stored as uint32")
    data_offset = -(-cur.pos // alignment) * alignment
    return GGUFHeader(version, metadata, _check_tensors(infos, data_offset, size, cur), alignment, data_offset)


def _check_tensors(infos: list, data_offset: int, size: int, cur: _Cursor) -> list[GGUFTensorInfo]:
    """Size each tensor from its dims and ggml type and check it lies in the file, apart from the others."""
    gguf = _gguf()
    names, tensors = set(), []
    for name, dims, type_id, offset in infos:
        if name in names:
            raise cur.bad(f"duplicate tensor name {name!r}")
        names.add(name)
        start = data_offset + offset
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
        except ValueError:  # a newer ggml type: its size is unknown, only its start is checked
            if start > size:
                raise cur.bad(f"tensor {name!r} starts at byte {start:,}, past the end of the file ({size:,} bytes)")
            tensors.append(GGUFTensorInfo(name, dims, type_id, start, None))
            continue
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if block > 1 and (not dims or dims[0] % block):
            raise cur.bad(f"tensor {name!r}: rows of {dims[0] if dims else 0} elements are not whole {qtype.name} "
                          f"blocks of {block}")
        nbytes = math.prod(dims) // block * type_size
        if start + nbytes > size:
            raise cur.bad(f"tensor {name!r} needs bytes [{start:,}, {start + nbytes:,}) but the file holds {size:,} "
                          "(truncated?)")
        tensors.append(GGUFTensorInfo(name, tuple(dims), type_id, start, nbytes))
    stored = sorted((t for t in tensors if t.nbytes), key=lambda t: (t.start, t.nbytes))
    for a, b in zip(stored, stored[1:]):
        if b.start < a.start + a.nbytes:
            raise CorruptFileError(cur.where, f"tensors {a.name!r} [{a.start}, {a.start + a.nbytes}) and {b.name!r} "
                                              f"[{b.start}, {b.start + b.nbytes}) overlap")
    return tensors


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
    """ggml types stored as plain arrays -> torch dtype (BF16 is viewed from its bytes)."""
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


#: A quantization tag in a GGUF file name (llama.cpp's ``ftype`` names, unsloth's ``UD-`` prefix), the last one.
_QUANT_TAG = re.compile(r"(?i)(?:^|[-._])(?P<tag>(?:UD-)?(?:I?Q[1-8](?:_[A-Z0-9]+)*|TQ[12]_0|MXFP4(?:_MOE)?|BF16"
                        r"|F(?:P)?(?:16|32)))(?=$|[-._])")
_SIZE_ORDER = ("NL", "XL", "L", "M", "S", "XS", "XXS")


def gguf_copy(path: str) -> tuple[str | None, tuple]:
    """A GGUF file's model and precision rank (lower is read first), from its name (module docstring).

    Parameters
    ----------
    path : str
        ``/``-separated path of a ``.gguf`` file.

    Returns
    -------
    (str or None, tuple)
        The model (the name before the quantization tag, whatever its folder; None for an ``mmproj`` projector)
        and the rank: (0, ·) F32 / BF16 / F16, (1,) 8-bit, (2, −bits, ·) other k- and legacy quants, (3, −bits, ·)
        i-quants, (4,) ternary, (9,) no tag.
    """
    base = path.rsplit("/", 1)[-1]
    stem = base[: -len(".gguf")] if base.lower().endswith(".gguf") else base
    if (m := SPLIT.match(base)) is not None:
        stem = m["stem"]
    if "mmproj" in stem.lower():
        return None, (9,)
    tags = list(_QUANT_TAG.finditer(stem))
    if not tags:
        return stem, (9,)
    tag = tags[-1]["tag"].upper().removeprefix("UD-")
    model = stem[: tags[-1].start()]
    floats = {"F32": 0, "FP32": 0, "BF16": 1, "F16": 2, "FP16": 2}
    if tag in floats:
        return model, (0, floats[tag])
    if tag.startswith("Q8"):
        return model, (1,)
    parts = tag.split("_")
    if tag.startswith("TQ"):
        return model, (4,)
    if tag.startswith("MXFP4"):
        return model, (2, -4, 2)
    bits = int(parts[0].lstrip("IQ")[:1] or 0)
    size = next((_SIZE_ORDER.index(p) for p in parts[1:] if p in _SIZE_ORDER), len(_SIZE_ORDER))
    if tag.startswith("IQ"):
        return model, (3, -bits, size)
    kquant = "K" in parts[1:]
    return model, (2, -bits, 0 if kquant else 1, size, -int(parts[1]) if not kquant and parts[1:2] and parts[1].isdigit() else 0)


@register_reader("gguf", [".gguf"], rules=[FileRule(("*.gguf",), anywhere=True, priority=70, copies=gguf_copy)])
def open_gguf(path: str | os.PathLike) -> WeightSet:
    """Open a ``.gguf`` file: header parsed and checked (:func:`read_header`), tensors read (and dequantized)
    one at a time from a memory map; a part of a split file (``m-00001-of-00003.gguf``) opens every part.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    WeightSet
        Entries in file order (parts in order), shapes in numpy/torch order (see module docstring);
        ``stats["dequantized"]`` maps each dequantized tensor to its stored ggml type name; ``missing``
        names an absent split part.

    Raises
    ------
    CorruptFileError, UnsupportedFormatError
        See :func:`read_header`; also split parts whose ``split.*`` metadata disagree with their names or
        with each other, or that repeat a tensor name.
    """
    where = os.fspath(path)
    m = SPLIT.match(os.path.basename(where))
    if m is None or int(m["count"]) < 2:
        return _open_one(where)[0]
    return _open_split(os.path.dirname(where), m)


def _open_split(folder: str, m: re.Match) -> WeightSet:
    """Every part of a split GGUF file as one set (module docstring, "Split files")."""
    count = int(m["count"])
    sets, missing, names, expected = [], [], set(), None
    for k in range(1, count + 1):
        part = os.path.join(folder, f"{m['stem']}-{k:05d}-of-{count:05d}{m['ext']}")
        if not os.path.isfile(part):
            missing.append((os.path.basename(part), f"split part {k} of {count} is absent: its tensors are not read"))
            continue
        ws, header = _open_one(part)
        meta = header.metadata
        if meta.get("split.count", count) != count or meta.get("split.no", k - 1) != k - 1:
            raise CorruptFileError(part, f"its split metadata (part {meta.get('split.no', '?')} of "
                                         f"{meta.get('split.count', '?')}, counted from 0) disagrees with its name "
                                         f"(part {k} of {count})")
        expected = meta.get("split.tensors.count", expected)
        for t in header.tensors:
            if t.name in names:
                raise CorruptFileError(part, f"tensor {t.name!r} is in an earlier split part too")
            names.add(t.name)
        sets.append(ws)
    if not missing and expected is not None and expected != len(names):
        raise CorruptFileError(os.path.join(folder, m.string), f"the split parts hold {len(names)} tensors but "
                                                              f"split.tensors.count says {expected}")
    dequantized = {k: v for ws in sets for k, v in ws.stats.get("dequantized", {}).items()}

    def close() -> None:
        for ws in sets:
            ws.close()

    return WeightSet(files=[f for ws in sets for f in ws.files], format="gguf",
                     entries=lambda: (e for ws in sets for e in ws.entries()), missing=missing, close=close,
                     stats={"dequantized": dequantized} if dequantized else {})


def _open_one(where: str) -> tuple[WeightSet, GGUFHeader]:
    """One GGUF file (a whole model, or one split part) and its header."""
    gguf = _gguf()
    header = read_header(where)
    Q = gguf.GGMLQuantizationType
    mapped = np.memmap(where, mode="r") if header.tensors else None
    entries, dequantized, undequantizable = [], {}, collections.Counter()
    for t in header.tensors:
        shape = tuple(int(d) for d in reversed(t.dims))
        if t.nbytes is None:
            entries.append(TensorEntry(t.name, shape, f"ggml type {t.type_id}", where, lambda: torch.empty(0),
                                       skip_reason=f"unknown GGUF tensor type {t.type_id} (gguf {_version()} cannot "
                                                   "decode it)", understood=False))
            continue
        qtype = Q(t.type_id)
        if qtype in _plain_types():
            dtype = str(_plain_types()[qtype]).removeprefix("torch.")
        elif can_dequantize(qtype):
            dtype = "float32"
            dequantized[t.name] = qtype.name
        else:
            dtype = qtype.name.lower()
            undequantizable[qtype.name] += 1
        entries.append(TensorEntry(t.name, shape, dtype, where,
                                   functools.partial(_load, mapped, t, qtype, shape, dtype, where)))
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
                     stats={"dequantized": dequantized} if dequantized else {}), header


def _load(mapped: np.memmap, t: GGUFTensorInfo, qtype, shape: tuple, dtype: str, where: str) -> torch.Tensor:
    """One tensor's bytes from the map: plain types as their numpy dtype, BF16 viewed from bytes, quantized
    types dequantized (or their raw blocks, shape ``(..., bytes per row)``)."""
    gguf = _gguf()
    raw = mapped[t.start:t.start + t.nbytes]
    try:
        if dtype == "bfloat16":
            return torch.from_numpy(np.array(raw)).view(torch.bfloat16).reshape(shape)
        if qtype in _plain_types():
            dtype_name = str(_plain_types()[qtype]).removeprefix("torch.")
            return torch.from_numpy(np.array(raw.view(dtype_name))).reshape(shape)
        blocks = raw.reshape(gguf.quants.quant_shape_to_byte_shape(shape, qtype))
        if dtype == "float32":
            out = gguf.quants.dequantize(np.asarray(blocks), qtype)
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(shape)
        return torch.from_numpy(np.array(blocks, dtype=np.uint8))  # raw blocks of an undequantizable type
    except Exception as e:
        raise CorruptFileError(where, f"tensor {t.name!r} is unreadable: {_one_line(e)}") from e


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # pragma: no cover
        return "(unknown version)"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or "no details given"
