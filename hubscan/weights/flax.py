"""Flax reader: ``flax_model.msgpack`` (``flax.serialization.to_bytes``; transformers' Flax checkpoints).

Layout (flax ``serialization.py``; msgpack spec, https://github.com/msgpack/msgpack/blob/master/spec.md)
    A msgpack map of maps (the parameter tree, string keys). Each array is an extension value of type 1
    whose payload is itself msgpack: ``[shape (array of ints), dtype name (str), data (bin: the C-order
    bytes)]``; type 3 is a NumPy scalar (same payload, shape ``[]``), type 2 a complex scalar. Arrays over
    flax's chunk limit are a map ``{"__msgpack_chunked_array__": true, "shape": {"0": d0, …},
    "chunks": {"0": <array>, …}}`` whose flat chunks concatenate to the array.

Parsing
    The file is walked once over a memory map: every count or length is checked against the bytes left
    before it is used (a map of n entries needs at least 2n bytes, a string, bin or extension its length),
    nesting is bounded, and an array's data is *located*, not read: its entry reads its bytes when loaded
    (``os.pread``-style, into ordinary memory). Memory is thus O(number of keys and arrays), whatever sizes
    the file claims. (``msgpack.unpackb`` would build every array's bytes at once and gives no offsets; the
    tests check this walker against it.) An array whose data length is not its shape × item size is
    refused as corrupt.

Names and orientation (transformers 4's ``load_flax_weights_in_pytorch_model``, gone from transformers 5)
    A leading ``params`` / ``batch_stats`` collection level is dropped; levels are joined with ``.``; the last
    level ``kernel`` / ``scale`` / ``embedding`` → ``weight``, ``mean`` / ``var`` (batch statistics) →
    ``running_mean`` / ``running_var``. A ``kernel`` loads in PyTorch's orientation: 2-D (in, out) → (out, in),
    4-D Conv (kh, kw, in, out) → (out, in, kh, kw); other ranks as stored. The ESD is unchanged by a transpose.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import struct

import numpy as np
import torch

from hubscan.errors import CorruptFileError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.files import SNIFF_BYTES, refuse_other_format

__all__ = ["open_flax", "read_tree", "FlaxArray"]

log = logging.getLogger(__name__)

_MAX_DEPTH = 64
_CHUNKED = "__msgpack_chunked_array__"
_DTYPES = {"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16",
           "uint32", "uint64", "bool"}
_RENAME = {"kernel": "weight", "scale": "weight", "embedding": "weight", "mean": "running_mean", "var": "running_var"}


class FlaxArray:
    """An array located in the file, not read: its shape, dtype name and the (offset, length) of its data
    (several spans for a chunked array, concatenated in order)."""

    __slots__ = ("shape", "dtype", "spans")

    def __init__(self, shape: tuple, dtype: str, spans: list):
        self.shape, self.dtype, self.spans = shape, dtype, spans

    def __repr__(self) -> str:
        return f"FlaxArray({self.shape}, {self.dtype})"


class _Bin:
    """A msgpack bin or extension payload located in the file: (offset, length)."""

    __slots__ = ("offset", "length", "code")

    def __init__(self, offset: int, length: int, code: int | None = None):
        self.offset, self.length, self.code = offset, length, code


class _Walker:
    """Reads msgpack values from ``buf[start:end]``, every length checked against the bytes left."""

    def __init__(self, buf, where: str, start: int = 0, end: int | None = None):
        self.buf, self.where, self.pos = buf, where, start
        self.end = len(buf) if end is None else end

    def bad(self, why: str) -> CorruptFileError:
        return CorruptFileError(self.where, f"not a readable Flax msgpack file: {why}")

    def take(self, n: int, what: str) -> int:
        if n > self.end - self.pos:
            raise self.bad(f"{what} needs {n:,} bytes at byte {self.pos:,} but only {self.end - self.pos:,} "
                           "are left (corrupt or truncated)")
        start, self.pos = self.pos, self.pos + n
        return start

    def unpack(self, fmt: str, what: str):
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def value(self, depth: int = 0):
        """The next value: scalars and strings decoded, maps and arrays built, bin / extension payloads
        located (:class:`_Bin`), not read."""
        if depth > _MAX_DEPTH:
            raise self.bad(f"values nested more than {_MAX_DEPTH} deep")
        b = self.buf[self.take(1, "a value")]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return self.array(b & 0x0F, depth)
        if 0xA0 <= b <= 0xBF:
            return self.text(b & 0x1F)
        fixed = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in fixed:
            return fixed[b]
        numbers = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
                   0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if b in numbers:
            return self.unpack(numbers[b], "a number")
        lengths = {0: ">B", 1: ">H", 2: ">I"}
        if 0xC4 <= b <= 0xC6:  # bin 8 / 16 / 32
            n = self.unpack(lengths[b - 0xC4], "a bin length")
            return _Bin(self.take(n, "bin data"), n)
        if 0xC7 <= b <= 0xC9:  # ext 8 / 16 / 32
            n = self.unpack(lengths[b - 0xC7], "an extension length")
            code = self.unpack(">b", "an extension type")
            return _Bin(self.take(n, "extension data"), n, code)
        if 0xD4 <= b <= 0xD8:  # fixext 1 / 2 / 4 / 8 / 16
            code = self.unpack(">b", "an extension type")
            n = 1 << (b - 0xD4)
            return _Bin(self.take(n, "extension data"), n, code)
        if 0xD9 <= b <= 0xDB:  # str 8 / 16 / 32
            return self.text(self.unpack(lengths[b - 0xD9], "a string length"))
        if b in (0xDC, 0xDD):
            return self.array(self.unpack(">H" if b == 0xDC else ">I", "an array length"), depth)
        if b in (0xDE, 0xDF):
            return self.map(self.unpack(">H" if b == 0xDE else ">I", "a map length"), depth)
        raise self.bad(f"byte 0x{b:02x} at {self.pos - 1:,} starts no msgpack value")

    def text(self, n: int) -> str:
        start = self.take(n, "a string")
        return bytes(self.buf[start:start + n]).decode("utf-8", "replace")

    def array(self, n: int, depth: int) -> list:
        if n > self.end - self.pos:  # each item takes at least one byte
            raise self.bad(f"an array of {n:,} items cannot fit in the {self.end - self.pos:,} bytes left")
        return [self.value(depth + 1) for _ in range(n)]

    def map(self, n: int, depth: int) -> dict:
        if 2 * n > self.end - self.pos:  # each key and value takes at least one byte
            raise self.bad(f"a map of {n:,} entries cannot fit in the {self.end - self.pos:,} bytes left")
        out = {}
        for _ in range(n):
            key = self.value(depth + 1)
            if isinstance(key, (list, dict, _Bin)):
                raise self.bad(f"a map key of type {type(key).__name__}")
            if key in out:
                raise self.bad(f"duplicate key {key!r}")
            out[key] = self.value(depth + 1)
        return out


def _array(buf, ext: _Bin, where: str, name: str) -> FlaxArray | None:
    """The array an extension value holds (type 1 ndarray, 3 scalar), located; None for other types."""
    if ext.code not in (1, 3):
        return None
    inner = _Walker(buf, where, ext.offset, ext.offset + ext.length)
    value = inner.value()
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], _Bin)
            and isinstance(value[0], list) and all(isinstance(d, int) and d >= 0 for d in value[0])):
        raise inner.bad(f"{name}: an array payload that is not [shape, dtype, data]")
    shape, dtype, data = tuple(value[0]), value[1], value[2]
    dtype = bytes(buf[dtype.offset:dtype.offset + dtype.length]).decode("ascii", "replace") \
        if isinstance(dtype, _Bin) else str(dtype)
    if dtype in _DTYPES:
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if math.prod(shape) * itemsize != data.length:
            raise inner.bad(f"{name}: shape {list(shape)} {dtype} needs {math.prod(shape) * itemsize:,} bytes, "
                            f"its data holds {data.length:,}")
    return FlaxArray(shape, dtype, [(data.offset, data.length)])


def read_tree(buf, where: str) -> dict:
    """The parameter tree of a Flax msgpack file, arrays located (:class:`FlaxArray`), not read.

    Parameters
    ----------
    buf : buffer
        The file's bytes (a memory map).
    where : str
        The file, for messages.

    Returns
    -------
    dict
        Nested maps; leaves are :class:`FlaxArray` (chunked arrays joined), scalars, or located bin values
        (offset and length, not read); other extension values are None.

    Raises
    ------
    CorruptFileError
        Not msgpack, a count or length past the end, trailing bytes, a malformed array payload or chunked array.
    """
    walker = _Walker(buf, where)
    tree = walker.value()
    if walker.pos != walker.end:
        raise walker.bad(f"{walker.end - walker.pos:,} bytes after the parameter tree")
    if not isinstance(tree, dict):
        raise walker.bad(f"the top level is a {type(tree).__name__}, not a map of parameters")

    def resolve(node, path: str):
        if isinstance(node, _Bin):  # an array (extension 1 / 3) located; a plain bin left as located bytes
            return _array(buf, node, where, path) if node.code is not None else node
        if isinstance(node, dict) and node.get(_CHUNKED) is True:
            return _chunked(node, path)
        if isinstance(node, dict):
            return {k: resolve(v, f"{path}/{k}") for k, v in node.items()}
        return node

    def _chunked(node: dict, path: str) -> FlaxArray:
        shape, chunks = node.get("shape"), node.get("chunks")
        shape = [shape[str(i)] for i in range(len(shape))] if isinstance(shape, dict) and all(
            str(i) in shape for i in range(len(shape))) else shape
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(chunks, dict)
                and all(str(i) in chunks for i in range(len(chunks)))):
            raise walker.bad(f"{path}: a chunked array without shape and chunks {{'0': …}}")
        parts = [resolve(chunks[str(i)], f"{path}/chunks/{i}") for i in range(len(chunks))]
        if not all(isinstance(p, FlaxArray) for p in parts) or len({p.dtype for p in parts}) > 1:
            raise walker.bad(f"{path}: chunks that are not arrays of one dtype")
        dtype = parts[0].dtype if parts else "float32"
        array = FlaxArray(tuple(shape), dtype, [s for p in parts for s in p.spans])
        if dtype in _DTYPES and sum(n for _, n in array.spans) != math.prod(shape) * (
                2 if dtype == "bfloat16" else np.dtype(dtype).itemsize):
            raise walker.bad(f"{path}: its chunks do not add up to shape {shape}")
        return array

    return resolve(tree, "")


def _leaves(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def flax_name_to_pt(path: tuple) -> tuple[str, bool]:
    """A Flax parameter path as transformers names it in PyTorch (module docstring), and whether it is a kernel."""
    levels = list(path[1:] if len(path) > 1 and path[0] in ("params", "batch_stats") else path)
    kernel = levels[-1] == "kernel"
    levels[-1] = _RENAME.get(levels[-1], levels[-1])
    return ".".join(levels), kernel


@register_reader("flax", [".msgpack"], rules=[FileRule(("flax_model.msgpack", "flax_model-*-of-*.msgpack", "*.msgpack"),
                                                        priority=85)])
def open_flax(path: str | os.PathLike) -> WeightSet:
    """Open a Flax ``.msgpack`` checkpoint as a lazy set of its arrays (module docstring).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    WeightSet
        One entry per array, in the file's order, named and oriented as PyTorch names them; an array of a
        dtype hubscan does not read is an entry skipped ``unknown dtype``.

    Raises
    ------
    CorruptFileError
        See :func:`read_tree`; also a file of another format (its first bytes say which).
    """
    where = os.fspath(path)
    with open(where, "rb") as f:
        head = f.read(SNIFF_BYTES)
        if not head or not (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
            refuse_other_format(head, where, "not a Flax msgpack file")
            raise CorruptFileError(where, f"not a Flax msgpack file (it does not start with a msgpack map: {head[:4]!r})")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            tree = read_tree(buf, where)
    entries, names = [], set()
    for key, leaf in _leaves(tree):
        if not isinstance(leaf, FlaxArray):
            continue
        name, kernel = flax_name_to_pt(key)
        if name in names:
            name = ".".join(key)
        names.add(name)
        perm = {2: (1, 0), 4: (3, 2, 0, 1)}.get(len(leaf.shape)) if kernel else None
        shape = tuple(leaf.shape[i] for i in perm) if perm else leaf.shape
        if leaf.dtype not in _DTYPES:
            entries.append(TensorEntry(name, shape, leaf.dtype, where, lambda: torch.empty(0),
                                       skip_reason=f"unknown dtype {leaf.dtype} (hubscan cannot decode it)",
                                       understood=False))
            continue
        entries.append(TensorEntry(name, shape, leaf.dtype, where,
                                   lambda leaf=leaf, perm=perm, name=name: _load(where, leaf, perm, name)))
    log.debug("%s: %d tensors", where, len(entries))
    return WeightSet(files=[where], format="flax", entries=lambda: iter(entries))


def _load(where: str, leaf: FlaxArray, perm: tuple | None, name: str) -> torch.Tensor:
    """Read an array's bytes (its spans, in order) into ordinary memory, then orient it."""
    total = sum(n for _, n in leaf.spans)
    buf = torch.empty(total, dtype=torch.uint8)
    view, done = memoryview(buf.numpy()), 0
    with open(where, "rb", buffering=0) as f:
        for offset, n in leaf.spans:
            f.seek(offset)
            got = f.readinto(view[done:done + n]) if n else 0
            if got != n:
                raise CorruptFileError(where, f"tensor {name!r}: the file ends inside its data (truncated?)")
            done += n
    dtype = getattr(torch, leaf.dtype)
    tensor = buf.view(dtype).reshape(leaf.shape)
    return tensor.permute(*perm).contiguous() if perm else tensor
