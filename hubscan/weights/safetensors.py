"""safetensors reader: the header is parsed and validated here before the file is handed to ``safetensors`` for
its own checks (skipped when the header names a dtype newer than the installed library, which refuses such a
header whole); tensors are read by their offsets.

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian unsigned header length ``n``,
``n`` bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the data area; offsets are relative to the start of the data area.

:func:`header_length` and :func:`parse_header` take bytes and the total file size, not a file, so a reader
over HTTP range requests can validate a remote file with two small reads before fetching any tensor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import struct

import safetensors
import torch
from safetensors import safe_open

from hubscan.errors import CorruptFileError, UnsupportedFormatError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.buffers import ReadBuffers
from hubscan.weights.files import refuse_other_format, sniff_format

__all__ = ["MAX_HEADER_BYTES", "TensorInfo", "header_length", "parse_header", "tensor_entries", "open_safetensors"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 100_000_000  # the format's own limit (safetensors refuses larger headers too)

_DTYPES = {  # safetensors dtype -> torch dtype; the newer ones only where this torch has them
    code: getattr(torch, name) for code, name in [
        ("BOOL", "bool"), ("U8", "uint8"), ("I8", "int8"), ("I16", "int16"), ("U16", "uint16"),
        ("I32", "int32"), ("U32", "uint32"), ("I64", "int64"), ("U64", "uint64"), ("F16", "float16"),
        ("BF16", "bfloat16"), ("F32", "float32"), ("F64", "float64"), ("C64", "complex64"),
        ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("F8_E8M0", "float8_e8m0fnu"),
        ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2FNUZ", "float8_e5m2fnuz")]
    if hasattr(torch, name)
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it (validated).

    Attributes
    ----------
    name : str
    dtype : torch.dtype
    shape : tuple of int
    begin, end : int
        Byte offsets in the data area (``end - begin == prod(shape) * dtype.itemsize``).
    """

    name: str
    dtype: torch.dtype | None
    shape: tuple
    begin: int
    end: int
    stored_dtype: str = ""  # the header's dtype code (kept for dtypes hubscan cannot represent: dtype None)


def header_length(prefix: bytes, file_size: int, where: str) -> int:
    """Validate the 8-byte header-length prefix before any header byte is read.

    Parameters
    ----------
    prefix : bytes
        The file's first 8 bytes (fewer if the file is shorter).
    file_size : int
        Total file size in bytes.
    where : str
        File path or URL, for messages.

    Returns
    -------
    int
        The header length ``n``; ``8 + n <= file_size`` and ``n <= MAX_HEADER_BYTES``.

    Raises
    ------
    CorruptFileError
        File shorter than 8 bytes, or a header length over the limit or past the end of the file.
    """
    if len(prefix) < 8:
        raise CorruptFileError(where, f"file is {file_size} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES or 8 + n > file_size:
        if sniff_format(prefix[:8]) == "text":  # e.g. an HTML page saved under a .safetensors name
            raise CorruptFileError(where, f"not a safetensors file: it starts with text ({prefix[:8]!r}), "
                                          "not an 8-byte header length")
        refuse_other_format(prefix[:8], where, "not a safetensors file")  # e.g. a torch checkpoint
        if n > MAX_HEADER_BYTES:
            limit = f"{MAX_HEADER_BYTES // 1_000_000} MB"
            raise CorruptFileError(where, f"header length {n} bytes exceeds the {limit} limit")
        raise CorruptFileError(where, f"header length {n} bytes is larger than the file ({file_size} bytes)")
    return n


def parse_header(header: bytes, file_size: int, where: str,
                 unknown: list | None = None) -> tuple[list[TensorInfo], dict]:
    """Parse and validate a safetensors JSON header against the file size.

    Parameters
    ----------
    header : bytes
        The ``n`` header bytes that follow the 8-byte length prefix.
    file_size : int
        Total file size in bytes (the data area is ``file_size - 8 - n`` bytes).
    where : str
        File path or URL, for messages.
    unknown : list, optional
        When given, tensors of a dtype hubscan cannot represent in torch (``F4``, ``F6_E3M2`` …) are
        appended to it as TensorInfo with ``dtype=None`` (offsets checked against the file and the
        other tensors, not against their shape) instead of raising.

    Returns
    -------
    tensors : list of TensorInfo
        In file order (by offset); empty for a file without tensors.
    metadata : dict
        The ``__metadata__`` entry, ``{}`` when absent.

    Raises
    ------
    CorruptFileError
        Header not UTF-8 JSON or not an object; a tensor entry malformed (dtype, shape, offsets), whose
        byte span does not match its shape and dtype, or that lies outside the file; two tensors
        overlapping; a gap before a tensor or bytes after the last (the format is contiguous); the file
        shorter than its header says.
    UnsupportedFormatError
        A dtype hubscan cannot represent in torch (e.g. ``F4``), when ``unknown`` is None.
    """
    data_size = file_size - 8 - len(header)
    try:
        parsed = json.loads(header.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptFileError(where, f"header is not valid JSON ({e})") from e
    if not isinstance(parsed, dict):
        raise CorruptFileError(where, f"header is JSON {type(parsed).__name__}, not an object")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CorruptFileError(where, "__metadata__ is not an object")
    tensors = sorted((_tensor_info(name, spec, data_size, where, unknown is not None)
                      for name, spec in parsed.items()), key=lambda t: (t.begin, t.end))
    stored = [t for t in tensors if t.end > t.begin]
    for a, b in zip(stored, stored[1:]):
        if b.begin < a.end:
            raise CorruptFileError(where, f"tensors {a.name!r} [{a.begin}, {a.end}) and {b.name!r} "
                                          f"[{b.begin}, {b.end}) overlap")
    needed = max((t.end for t in tensors), default=0)
    if needed > data_size:
        raise CorruptFileError(where, f"file shorter than its header says: tensor data needs {needed} bytes, "
                                      f"the file holds {max(data_size, 0)} (truncated?)")
    end = 0  # the format stores the tensors back to back over the whole data area (safetensors refuses gaps too)
    for t in tensors:
        if t.begin != end:
            raise CorruptFileError(where, f"tensor {t.name!r} starts at byte {t.begin} of the data area, not at "
                                          f"{end} where the tensors before it end (a gap: not a safetensors layout)")
        end = t.end
    if end != data_size:
        raise CorruptFileError(where, f"{data_size - end} bytes after the last tensor (the header covers {end} of "
                                      f"the {data_size} bytes of data)")
    if unknown is not None:
        unknown += [t for t in tensors if t.dtype is None]
        tensors = [t for t in tensors if t.dtype is not None]
    return tensors, metadata


def _no_duplicate_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _tensor_info(name: str, spec: object, data_size: int, where: str, allow_unknown: bool = False) -> TensorInfo:
    def bad(why: str) -> CorruptFileError:
        return CorruptFileError(where, f"tensor {name!r}: {why}")

    def is_int(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if not isinstance(spec, dict):
        raise bad("entry is not an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str):
        raise bad(f"dtype {dtype!r} is not a string")
    if dtype not in _DTYPES and not allow_unknown:
        raise UnsupportedFormatError(where, f"tensor {name!r} has dtype {dtype}, which hubscan cannot read")
    if not (isinstance(shape, list) and all(map(is_int, shape))):
        raise bad(f"shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets)) and offsets[0] <= offsets[1]):
        raise bad(f"data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    if dtype not in _DTYPES:  # its size per element is unknown: only the span is checked (against the file)
        return TensorInfo(name, None, tuple(shape), begin, end, dtype)
    nbytes = math.prod(shape) * _DTYPES[dtype].itemsize
    if end - begin != nbytes:
        span = f"data_offsets [{begin}, {end}] hold {end - begin} bytes but shape {shape} {dtype} needs {nbytes}"
        if end > data_size:
            raise bad(f"tensor data outside the file ({span}; the data area is {max(data_size, 0)} bytes)")
        raise bad(span)
    return TensorInfo(name, _DTYPES[dtype], tuple(shape), begin, end, dtype)


def tensor_entries(tensors: list[TensorInfo], unknown: list[TensorInfo], where: str,
                   load: "functools.partial | object") -> list[TensorEntry]:
    """TensorEntry objects for a parsed header (local files and ranged remote reads alike).

    Parameters
    ----------
    tensors : list of TensorInfo
        Readable tensors, in file order.
    unknown : list of TensorInfo
        Tensors of a dtype hubscan cannot represent: entries skipped ``unknown dtype <code>`` (not
        understood), the rest of the file analyzed.
    where : str
        The file (path or URL) the entries name.
    load : callable (TensorInfo) -> torch.Tensor
        Reads one tensor.

    Returns
    -------
    list of TensorEntry
        In file order (by offset).
    """
    entries = [(t.begin, TensorEntry(t.name, t.shape, str(t.dtype).removeprefix("torch."), where,
                                     functools.partial(load, t))) for t in tensors]
    entries += [(t.begin, TensorEntry(t.name, t.shape, t.stored_dtype, where, functools.partial(load, t),
                                      skip_reason=f"unknown dtype {t.stored_dtype} (hubscan cannot decode it)",
                                      understood=False)) for t in unknown]
    return [e for _, e in sorted(entries, key=lambda p: p[0])]


@register_reader("safetensors", [".safetensors"], variants=[".safetensors"], rules=[
    FileRule(("model.safetensors",), index="model.safetensors.index.json", priority=10),
    FileRule(("model-*-of-*.safetensors", "*.safetensors"), priority=20)])
def open_safetensors(path: str | os.PathLike) -> WeightSet:
    """Open a ``.safetensors`` file: validate its header, then read tensors one at a time.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    WeightSet
        Entries in file order; ``TensorEntry.load()`` reads the tensor's bytes into a new CPU tensor of
        the stored dtype (bf16 and fp8 included). A file without tensors gives no entries.

    Raises
    ------
    CorruptFileError
        See :func:`header_length` and :func:`parse_header`; also when ``safetensors`` itself refuses the file
        (asked only when it knows every dtype the file names: a dtype newer than it, e.g. ``"X99"``, is a
        skipped entry ``unknown dtype X99``, the rest of the file read by its offsets).
    """
    where = os.fspath(path)
    size = os.path.getsize(where)
    unknown: list[TensorInfo] = []
    with open(where, "rb") as f:
        n = header_length(f.read(8), size, where)
        tensors, _ = parse_header(f.read(n), size, where, unknown)
    newer = next((c for c in {t.stored_dtype for t in unknown} if not _library_parses(c)), None)
    if newer is not None:  # the library refuses a whole header naming a dtype it does not know: hubscan's stand
        log.debug("%s: dtype %s unknown to safetensors %s: its own checks not run", where, newer,
                  safetensors.__version__)
    else:
        try:  # the safetensors library's own checks too (e.g. __metadata__ values); nothing is read through it
            safe_open(where, framework="pt").__exit__(None, None, None)
        except Exception as e:
            raise CorruptFileError(where, f"safetensors refused it: {e}") from e
    buffers = ReadBuffers()
    entries = tensor_entries(tensors, unknown, where, functools.partial(_read_tensor, where, 8 + n, buffers))
    log.debug("%s: %d tensors", where, len(entries))
    return WeightSet(files=[where], format="safetensors", entries=lambda: iter(entries), close=buffers.clear)


@functools.lru_cache(maxsize=64)
def _library_parses(code: str) -> bool:
    """Whether the installed ``safetensors`` parses a header naming dtype ``code`` (asked of the library
    itself, with a header of one empty tensor: one newer than it, ``"X99"``, makes it refuse the header)."""
    header = json.dumps({"t": {"dtype": code, "shape": [0], "data_offsets": [0, 0]}}).encode()
    try:
        safetensors.deserialize(struct.pack("<Q", len(header)) + header)
    except Exception:  # noqa: BLE001 - SafetensorError: an unknown variant
        return False
    return True


def _read_tensor(where: str, data_start: int, buffers: ReadBuffers, info: TensorInfo) -> torch.Tensor:
    """Read one tensor's bytes into ordinary memory (not a memory map: mapped pages would stay
    resident, and counted in the process's RSS, until the file is closed — the whole file, for a
    model read tensor by tensor), reused from an earlier tensor of the file that is no longer alive
    (:class:`~hubscan.weights.buffers.ReadBuffers`)."""
    nbytes = info.end - info.begin
    buf = buffers.tensor(nbytes)
    try:
        with open(where, "rb", buffering=0) as f:
            f.seek(data_start + info.begin)
            got = f.readinto(memoryview(buf.numpy())) if nbytes else 0
    except OSError as e:
        raise CorruptFileError(where, f"tensor {info.name!r} is unreadable: {e}") from e
    if got != nbytes:
        raise CorruptFileError(where, f"tensor {info.name!r}: file shorter than its header says "
                                      f"({got} of {nbytes} bytes)")
    return buf.view(info.dtype).reshape(info.shape)
