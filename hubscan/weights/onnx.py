"""ONNX reader: the initializers (and weight-like ``Constant`` tensors) of an ONNX graph; the model never runs.

Loading
    ``onnx.load(path, load_external_data=False)`` parses the protobuf; no operator runs and onnxruntime is not
    used. Tensors embedded in the file (``raw_data`` or the typed ``*_data`` fields) are part of the parsed
    ``ModelProto``, so **their bytes stay in memory while the set is open** (protobuf has no lazy fields: that
    is inherent to the format; the parse itself briefly needs about twice the file size).
    ``TensorEntry.load()`` converts only its own tensor. Tensors stored as *external data* (``model.onnx``
    plus a data file beside it, the layout of every model over protobuf's 2 GB limit) are not in memory: each
    ``load()`` reads just that tensor's ``offset``/``length`` span through
    ``onnx.numpy_helper.to_array(tensor, base_dir=<model folder>)``, which also refuses symbolic links.
    When opening, every external location is checked: an absolute path or one leaving the model folder is a
    :class:`~hubscan.errors.CorruptFileError`, a span past the end of its data file too (truncated), and a
    data file that is absent puts its tensors in ``WeightSet.missing`` (like an absent shard).

What counts as a tensor
    1. Every ``graph.initializer``, of any dtype and rank (the analysis skips 1-D and integer ones).
    2. Every ``Constant`` node whose ``value`` is a float tensor of 2 or more dimensions: some exporters
       (constant folding, OpenVINO, function inlining) put the weights there instead of in initializers.
       Smaller or integer constants (shapes, axes, scalars) are not weights and are left out.
    3. The same, recursively, in every subgraph a node attribute holds (``If`` branches, ``Loop`` / ``Scan``
       bodies), and the Constant nodes of the model's local functions. silero-vad's ONNX export, for one,
       keeps all its weights as Constants inside the two branches of an ``If`` (the 16 kHz and 8 kHz models).
    4. Every ``graph.sparse_initializer`` and sparse ``Constant`` (``sparse_value``): densified when read
       (``values`` scattered at ``indices``, linear (NNZ,) or coordinate (NNZ, rank) indices, zeros elsewhere).
    Tensors of a type hubscan cannot hold (strings …) get an entry skipped with the type named.

Names
    An initializer is named as stored; a Constant by its output value name (the name Netron shows). These are
    ONNX value names, **not** PyTorch parameter names: exporters often keep them (``encoder.0.weight``), but
    weights feeding a ``MatMul`` or ``LSTM`` usually get generated names such as ``onnx::MatMul_123``, and
    inlined subgraphs prefix theirs (``If_0_then_branch__Inline_0__…``). A ``Linear`` exported as ``MatMul``
    is stored transposed, (in, out) rather than torch's (out, in), and an ``LSTM`` weight gets a leading
    direction axis and ONNX's gate order (i, o, f, c): neither changes the eigenvalues of WᵀW (a transpose
    only swaps which side gives the Gram matrix; a gate reorder permutes rows). A name that occurs more than
    once (sibling subgraphs may reuse names) is prefixed, wherever it is inside a subgraph, with that
    subgraph's path ``<node name>/<attribute>``: ``If_0/else_branch/<name>``.

Dtypes
    float32/64/16, bfloat16 and the float8 variants this torch has load as torch tensors of that dtype;
    integer and bool tensors as they are (the analysis skips them as quantized or integer buffers). Packed
    4- and 2-bit integers are reported as ``int4``, ``uint4``, ``int2``, ``uint2`` (so the planner skips them
    as quantized); their ``load()`` returns the unpacked values as int8/uint8. Float formats torch cannot
    hold (``FLOAT4E2M1``, ``FLOAT6*``, a float8 variant this torch lacks) are converted exactly to float32,
    reported as ``float32`` and listed in ``WeightSet.stats["dequantized"]`` ({name: ONNX type name}).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import posixpath

import numpy as np
import torch

from hubscan.errors import CorruptFileError, UnsupportedFormatError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.files import SNIFF_BYTES, refuse_other_format

__all__ = ["open_onnx", "onnx_tensor_to_torch", "external_data_files"]

log = logging.getLogger(__name__)


def _onnx():
    """The onnx package, imported on first use (optional dependency: ``pip install 'hubscan[formats]'``)."""
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError("onnx", "reading ONNX files needs the onnx package "
                                             "(pip install 'hubscan[formats]')") from e
    return onnx


@dataclasses.dataclass(frozen=True)
class _Kind:
    """How one ONNX data type is reported and converted.

    name: dtype reported in TensorEntry.dtype; dtype: torch dtype load() returns; how: ``native`` (numpy dtype
    torch takes), ``bits`` (ml_dtypes array reinterpreted bit for bit), ``cast`` (converted value by value).
    """

    name: str
    dtype: torch.dtype
    how: str
    is_float: bool  # a real floating-point type (what a weight-holding Constant has)


@functools.cache
def _kinds() -> dict[int, _Kind]:
    T = _onnx().TensorProto
    kinds = {}
    for code, name, how in [("FLOAT", "float32", "native"), ("DOUBLE", "float64", "native"),
                            ("FLOAT16", "float16", "native"), ("BFLOAT16", "bfloat16", "bits"),
                            ("FLOAT8E4M3FN", "float8_e4m3fn", "bits"), ("FLOAT8E5M2", "float8_e5m2", "bits"),
                            ("FLOAT8E4M3FNUZ", "float8_e4m3fnuz", "bits"),
                            ("FLOAT8E5M2FNUZ", "float8_e5m2fnuz", "bits"), ("FLOAT8E8M0", "float8_e8m0fnu", "bits"),
                            ("FLOAT4E2M1", None, "cast"), ("FLOAT6E2M3", None, "cast"), ("FLOAT6E3M2", None, "cast")]:
        if not hasattr(T, code):
            continue
        dtype = getattr(torch, name, None) if name else None
        kinds[getattr(T, code)] = (_Kind(name, dtype, how, True) if dtype is not None
                                   else _Kind("float32", torch.float32, "cast", True))
    for code, name, how in [("INT8", "int8", "native"), ("UINT8", "uint8", "native"), ("INT16", "int16", "native"),
                            ("UINT16", "uint16", "native"), ("INT32", "int32", "native"),
                            ("UINT32", "uint32", "native"), ("INT64", "int64", "native"),
                            ("UINT64", "uint64", "native"), ("BOOL", "bool", "native"),
                            ("COMPLEX64", "complex64", "native"), ("COMPLEX128", "complex128", "native"),
                            ("INT4", "int4", "cast"), ("UINT4", "uint4", "cast"),
                            ("INT2", "int2", "cast"), ("UINT2", "uint2", "cast")]:
        if not hasattr(T, code):
            continue
        dtype = getattr(torch, name) if how == "native" else (torch.int8 if name.startswith("int") else torch.uint8)
        if how == "native" and not hasattr(torch, name):
            continue
        kinds[getattr(T, code)] = _Kind(name, dtype, how, False)
    return kinds


def _type_name(data_type: int) -> str:
    try:
        return _onnx().TensorProto.DataType.Name(data_type)
    except ValueError:
        return f"data type {data_type}"


def onnx_tensor_to_torch(tensor, base_dir: str = "") -> torch.Tensor:
    """One ONNX ``TensorProto`` as a CPU torch tensor (see the module docstring for the dtypes).

    Parameters
    ----------
    tensor : onnx.TensorProto
    base_dir : str
        Folder of the model, where external data locations are resolved.

    Raises
    ------
    UnsupportedFormatError
        A data type hubscan cannot represent (strings, undefined, types newer than this code).
    ValueError, OSError, onnx.checker.ValidationError
        From ``onnx.numpy_helper.to_array``: data of the wrong size, an unreadable external file.
    """
    kind = _kinds().get(tensor.data_type)
    if kind is None:
        raise UnsupportedFormatError(tensor.name, f"ONNX tensor type {_type_name(tensor.data_type)} is not supported")
    array = _onnx().numpy_helper.to_array(tensor, base_dir=base_dir)
    if kind.how == "native":
        native = np.array(array, dtype=array.dtype.newbyteorder("="), copy=True)
        return torch.from_numpy(native)
    if kind.how == "bits":  # ml_dtypes bfloat16 / float8: same bits, torch dtype
        raw = np.ascontiguousarray(array).view(np.uint16 if kind.dtype.itemsize == 2 else np.uint8)
        return torch.from_numpy(raw.copy()).view(kind.dtype)
    return torch.from_numpy(np.asarray(array).astype(np.dtype(str(kind.dtype).removeprefix("torch."))))


@dataclasses.dataclass
class _Found:
    name: str  # as stored (initializer name, or a Constant's output name)
    path: tuple  # subgraph path, () for the main graph
    tensor: object  # onnx.TensorProto
    constant: bool = False  # from a Constant node (else an initializer)
    sparse: object = None  # onnx.SparseTensorProto when stored sparse (``tensor`` is then its values)


def _walk_graph(graph, path: tuple, found: list, skipped: collections.Counter) -> None:
    for init in graph.initializer:
        found.append(_Found(init.name, path, init))
    for sparse in graph.sparse_initializer:
        found.append(_Found(sparse.values.name, path, sparse.values, sparse=sparse))
    for node in graph.node:
        _walk_node(node, path, found, skipped)


def _walk_node(node, path: tuple, found: list, skipped: collections.Counter) -> None:
    A = _onnx().AttributeProto
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        for attr in node.attribute:
            if attr.name == "value" and attr.type == A.TENSOR:
                kind = _kinds().get(attr.t.data_type)
                if kind is not None and kind.is_float and len(attr.t.dims) >= 2:
                    found.append(_Found(node.output[0] if node.output else attr.t.name or node.name, path, attr.t,
                                        constant=True))
            elif attr.name == "sparse_value" and attr.type == A.SPARSE_TENSOR:
                found.append(_Found(node.output[0] if node.output else attr.sparse_tensor.values.name, path,
                                    attr.sparse_tensor.values, constant=True, sparse=attr.sparse_tensor))
    for attr in node.attribute:
        where = f"{node.name or node.op_type}/{attr.name}"
        if attr.type == A.GRAPH:
            _walk_graph(attr.g, path + (where,), found, skipped)
        elif attr.type == A.GRAPHS:
            for i, sub in enumerate(attr.graphs):
                _walk_graph(sub, path + (f"{where}[{i}]",), found, skipped)


def _unique_names(found: list[_Found]) -> list[str]:
    counts = collections.Counter(f.name for f in found)
    names = ["/".join(f.path + (f.name,)) if counts[f.name] > 1 and f.path else f.name for f in found]
    seen: collections.Counter = collections.Counter()
    out = []
    for name in names:  # still repeated (an invalid graph with duplicate names): number them
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _location(tensor) -> tuple[str, str | None]:
    """An external-data tensor's ``location`` as stored, and normalised (``/``-separated, relative) when it
    names a file inside the model folder, else None (absolute, or leaving the folder)."""
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    norm = posixpath.normpath(location.replace("\\", "/"))
    if not location or os.path.isabs(location) or norm.startswith("/") or norm == ".." or norm.startswith("../") \
            or (len(norm) > 1 and norm[1] == ":"):
        return location, None
    return location, norm


def _external_file(tensor, name: str, folder: str, where: str, sizes: dict) -> tuple[str, str | None]:
    """Validate an external-data tensor's location and span: (data file path, None or why it is missing)."""
    info = {e.key: e.value for e in tensor.external_data}
    location, norm = _location(tensor)
    if norm is None:
        raise CorruptFileError(where, f"tensor {name!r}: external data location {location!r} is not a file "
                                      "inside the model folder")
    path = os.path.join(folder, norm)
    if not os.path.isfile(path):
        return path, f"its external data file {location} is absent"
    try:
        offset, length = int(info.get("offset", 0)), info.get("length")
        length = None if length is None else int(length)
    except ValueError as e:
        raise CorruptFileError(where, f"tensor {name!r}: external data offset/length are not integers "
                                      f"({info.get('offset')!r}, {info.get('length')!r})") from e
    size = sizes.setdefault(path, os.path.getsize(path))
    end = offset + (length if length is not None else 0)
    if offset < 0 or (length is not None and length < 0) or end > size or offset > size:
        raise CorruptFileError(path, f"tensor {name!r} needs bytes [{offset}, {end}) but the file holds {size} "
                                     "(truncated?)")
    return path, None


def _read_graph(where: str) -> tuple[list[_Found], collections.Counter]:
    """Parse an ONNX file (external data not loaded) and find its tensors (module docstring).

    Raises
    ------
    CorruptFileError
        Another format's file, a protobuf that cannot be parsed, no graph.
    """
    with open(where, "rb") as f:  # another format's file under an .onnx name
        refuse_other_format(f.read(SNIFF_BYTES), where, "not an ONNX model")
    try:
        model = _onnx().load(where, load_external_data=False)
    except Exception as e:  # protobuf DecodeError, onnx's own checks, I/O errors
        detail = " ".join(str(e).split())
        raise CorruptFileError(where, "not a valid ONNX model (its protobuf cannot be parsed: truncated or not "
                                      "an ONNX file" + (f"; {detail}" if detail else "") + ")") from e
    if not model.HasField("graph"):
        raise CorruptFileError(where, "not a valid ONNX model (no graph)")
    found: list[_Found] = []
    skipped: collections.Counter = collections.Counter()
    _walk_graph(model.graph, (), found, skipped)
    for fn in model.functions:
        for node in fn.node:
            _walk_node(node, (f"{fn.domain}.{fn.name}" if fn.domain else fn.name,), found, skipped)
    return found, skipped


def external_data_files(path: str | os.PathLike) -> list[str]:
    """The external data files an ONNX model names, inside its folder (present or not), none of them read.

    They are part of that model, not weights of their own: ``model.onnx`` + ``weights.bin`` is one model,
    although ``.bin`` is also a torch checkpoint's suffix (:mod:`hubscan.sources.local` asks this).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file.

    Returns
    -------
    list of str
        Paths (the model's folder joined with each location), sorted, each once.

    Raises
    ------
    CorruptFileError
        The file is not a parsable ONNX model.
    """
    where = os.fspath(path)
    folder = os.path.dirname(where)
    tensors = [t for f in _read_graph(where)[0] for t in (f.tensor, *((f.sparse.indices,) if f.sparse else ()))]
    external = (_location(t)[1] for t in tensors if t.data_location == _onnx().TensorProto.EXTERNAL)
    return sorted({os.path.join(folder, norm) for norm in external if norm is not None})


@register_reader("onnx", [".onnx"], rules=[FileRule(("model.onnx", "onnx/model.onnx", "*.onnx"), anywhere=True,
                                                    priority=60)])
def open_onnx(path: str | os.PathLike) -> WeightSet:
    """Open an ``.onnx`` model (graph parsed, never run) as a lazy set of its weight tensors.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    WeightSet
        Entries in graph order (main graph, then each subgraph where its node occurs, then local functions);
        ``files`` lists the model and the external data files it uses; ``missing`` the tensors whose external
        data file is absent; ``stats["dequantized"]`` float formats converted to float32.

    Raises
    ------
    CorruptFileError
        Not a parsable ONNX protobuf, no graph, an external data location outside the model folder or past
        the end of its file.
    """
    where = os.fspath(path)
    onnx = _onnx()
    found, skipped = _read_graph(where)
    folder = os.path.dirname(os.path.abspath(where))
    T = onnx.TensorProto
    entries, missing, files, dequantized, sizes = [], [], [where], {}, {}
    for f, name in zip(found, _unique_names(found)):
        kind = _kinds().get(f.tensor.data_type)
        dims = tuple(int(d) for d in (f.sparse.dims if f.sparse is not None else f.tensor.dims))
        if kind is None:
            type_name = _type_name(f.tensor.data_type)
            entries.append(TensorEntry(name, dims, type_name, where, lambda: torch.empty(0),
                                       skip_reason=f"unknown dtype {type_name} (hubscan cannot decode it)",
                                       understood=False))
            continue
        if f.sparse is not None:
            entries.append(TensorEntry(name, dims, kind.name, where,
                                       functools.partial(_load_sparse, f.sparse, folder, where, name)))
            continue
        if f.tensor.data_location == T.EXTERNAL:
            data_file, absent = _external_file(f.tensor, name, folder, where, sizes)
            if absent:
                missing.append((name, absent))
                continue
            if data_file not in files:
                files.append(data_file)
        if kind.how == "cast" and kind.is_float:
            dequantized[name] = _type_name(f.tensor.data_type)
        entries.append(TensorEntry(name, dims, kind.name, where,
                                   functools.partial(_load, f.tensor, folder, where, name)))
    for what, n in skipped.items():
        if n:
            log.info("%s: %d %s(s) not read", where, n, what)
    for name, reason in missing:
        log.warning("%s: tensor %s is missing: %s", where, name, reason)
    if dequantized:
        log.info("%s: %d tensor(s) in float formats torch cannot hold are converted to float32: %s", where,
                 len(dequantized), ", ".join(sorted(set(dequantized.values()))))
    log.debug("%s: %d tensors (%d from Constant nodes, %d inside subgraphs or functions)", where, len(entries),
              sum(f.constant for f in found), sum(bool(f.path) for f in found))
    stats = {"dequantized": dequantized} if dequantized else {}
    return WeightSet(files=files, format="onnx", entries=lambda: iter(entries), missing=missing,
                     close=entries.clear, stats=stats)


def _load_sparse(sparse, folder: str, where: str, name: str) -> torch.Tensor:
    """A SparseTensorProto densified: values at linear (NNZ,) or coordinate (NNZ, rank) indices."""
    values = _load(sparse.values, folder, where, name).reshape(-1)
    dims = tuple(int(d) for d in sparse.dims)
    indices = _load(sparse.indices, folder, where, name + " (indices)").to(torch.int64)
    dense = torch.zeros(int(np.prod(dims)), dtype=values.dtype)
    if indices.dim() == 2 and indices.shape[-1] == len(dims) and len(dims) > 1:
        strides = torch.tensor([int(np.prod(dims[i + 1:])) for i in range(len(dims))], dtype=torch.int64)
        indices = (indices * strides).sum(1)
    indices = indices.reshape(-1)
    if indices.numel() != values.numel() or (indices.numel() and (indices.min() < 0 or indices.max() >= dense.numel())):
        raise CorruptFileError(where, f"sparse tensor {name!r}: {indices.numel()} indices for {values.numel()} "
                                      f"values in a tensor of shape {dims}")
    dense[indices] = values
    return dense.reshape(dims)


def _load(tensor, folder: str, where: str, name: str) -> torch.Tensor:
    try:
        return onnx_tensor_to_torch(tensor, folder)
    except UnsupportedFormatError as e:
        raise UnsupportedFormatError(where, f"tensor {name!r}: {e.reason}") from e
    except Exception as e:  # wrong data size, unreadable or refused external file
        raise CorruptFileError(where, f"tensor {name!r} is unreadable: {' '.join(str(e).split()) or 'undecodable data'}") from e
