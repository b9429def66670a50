"""Torch checkpoints (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.jit``), loaded without executing code.

Loading
    1. ``torch.load(weights_only=True, map_location="cpu")`` inside ``torch.serialization.safe_globals``
       with :data:`SAFE_GLOBALS`, an explicit allow-list of known-safe types (``argparse.Namespace``,
       ``pathlib`` paths, numpy arrays/scalars/dtypes, ``collections`` containers, ``builtins`` containers).
       Zip archives are memory-mapped (``mmap=True``); legacy pre-zip files cannot be, and are read whole.
    2. If torch's weights-only unpickler refuses the pickle (a global outside the allow-list, or an opcode it
       does not implement, such as protocol 4's ``FRAME``), the file is read again by
       :class:`RestrictedUnpickler`: a ``pickle.Unpickler`` whose ``find_class`` resolves only allow-listed
       globals (:data:`SAFE_GLOBALS` plus torch's own weights-only list), with storages served from the zip
       (memory-mapped) or from the legacy file body. It handles every pickle protocol. A global outside the
       allow-list raises :class:`~hubscan.errors.UnsafeFileError` naming it. ``weights_only=False`` and
       plain ``pickle.load`` are never used.
    TorchScript archives (a zip with ``constants.pkl``/``code/``; any suffix) hold code. Their ``data.pkl``
    is read by the same restricted unpickler, with every ``__torch__.*`` class replaced by an inert
    :class:`ScriptObject` that only stores its attributes: the tensors come out, no TorchScript runs. An
    archive this cannot read is refused with ``UnsupportedFormatError("TorchScript archives hold code; not
    loaded (<why>)")``.

Finding the tensors (the naming rule)
    The object is walked through dicts, lists/tuples, ``argparse.Namespace`` and ``ScriptObject`` s.
    Tensors and numpy float arrays (converted with ``torch.from_numpy``) count; other values are ignored,
    and so are containers under keys naming optimizer, scheduler or AMP-scaler state (``optim``, ``sched``,
    ``scaler``). Starting at the top, the walk descends into the state dict: into the first of
    :data:`STATE_DICT_KEYS` (``state_dict``, ``model_state_dict``, ``model``, ``module``, ``net`` …,
    ``ema`` last) that holds tensors, again and again while there is one. Names are the dotted path below
    that point (list items by index): ``{"model_state_dict": {"enc.weight": t}}`` gives ``enc.weight``;
    ``{"generator": {...}, "discriminator": {...}}`` keeps the prefixes (``generator.fc.weight``) since no
    key is preferred; other wrappers are kept too (``{"student": sd}`` gives ``student.…``), as a kept
    prefix never loses information. Tensors beside a chosen state dict (an EMA copy, a stats array) are
    dropped, with an INFO log.

Tensor kinds
    Dense (strided) tensors as stored; two names on one storage (same bytes, offset, shape, strides) are
    one tensor stored once (``TensorEntry.storage``: the twin is skipped ``tied to …``). Sparse COO / CSR /
    CSC / BSR / BSC tensors are densified when read (skipped above :data:`MAX_DENSIFY` elements).
    ``DTensor`` s (allowed by torch itself under ``weights_only`` once ``torch.distributed.tensor`` is
    imported, which registers them) give their local tensor when it is the whole tensor (one-device mesh or
    replicated), else they are skipped. Nested tensors (strided or jagged) have no matrix: skipped with
    the reason; the jagged kind's rebuild function is not allow-listed by torch, so the restricted
    unpickler resolves it to an inert stand-in (:class:`Unreadable`) instead of calling it.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import functools
import io
import logging
import os
import pathlib
import pickle
import re
import struct
import warnings
import zipfile

import numpy as np
import torch
import torch.jit._pickle

from hubscan.errors import CorruptFileError, HubscanError, UnsafeFileError, UnsupportedFormatError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.files import SNIFF_BYTES, refuse_other_format

__all__ = ["SAFE_GLOBALS", "STATE_DICT_KEYS", "RestrictedUnpickler", "ScriptObject", "load_checkpoint",
           "find_tensors", "open_torch"]

log = logging.getLogger(__name__)

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params",
                   "weights", "ema", "model_ema", "state_dict_ema")
_NOT_WEIGHTS = re.compile(r"optim|sched|scaler", re.IGNORECASE)
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's pre-zip serialization starts with this pickled int
_NUMPY_FLOATS = (np.float16, np.float32, np.float64)
#: Sparse tensors with more elements than this are skipped rather than densified (2 GiB of float64).
MAX_DENSIFY = 1 << 28


class Unreadable:
    """Inert stand-in for a stored object that is not a weight matrix (a nested tensor): only its kind."""

    def __init__(self, kind: str, *args, understood: bool = True, **kwargs):
        self.kind, self.understood = kind, understood

    def __setstate__(self, state: object) -> None:  # state of the real object: not kept
        pass


class _JaggedNested(Unreadable):
    """Stand-in for torch's jagged ``NestedTensor`` class and its rebuild function (neither is called)."""

    def __init__(self, *args, **kwargs):
        super().__init__("jagged nested tensor")


class _Inert:
    """Stand-in for the helper objects inside a jagged nested tensor's pickle: accepts anything, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state: object) -> None:
        pass


#: Globals of tensor kinds that have no weight matrix, which torch's weights-only list does not allow:
#: resolved to inert stand-ins (never the real code), so the rest of the checkpoint can be read.
_UNREADABLE_GLOBALS = {
    "torch.nested._internal.nested_tensor._rebuild_njt": _JaggedNested,
    "torch.nested._internal.nested_tensor.NestedTensor": _JaggedNested,
    "torch._dynamo.decorators._DimRange": _Inert,
}


def _safe_globals() -> list[tuple[object, str]]:
    """The allow-list as (object, name as pickled) pairs: explicit names survive module moves."""
    posix = os.name == "posix"
    pairs = [(argparse.Namespace, "argparse.Namespace"),
             (pathlib.PurePath, "pathlib.PurePath"), (pathlib.PurePosixPath, "pathlib.PurePosixPath"),
             (pathlib.PureWindowsPath, "pathlib.PureWindowsPath"),
             # concrete paths of the other OS cannot be instantiated here: read them as pure paths
             (pathlib.Path, "pathlib.Path"),
             (pathlib.PosixPath if posix else pathlib.PurePosixPath, "pathlib.PosixPath"),
             (pathlib.PureWindowsPath if posix else pathlib.WindowsPath, "pathlib.WindowsPath"),
             (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    pairs += [(getattr(collections, n), f"collections.{n}")
              for n in ("OrderedDict", "defaultdict", "deque", "Counter")]
    pairs += [(getattr(builtins, n), f"{module}.{n}")  # protocol ≤ 2 pickles name the module __builtin__
              for n in ("dict", "list", "tuple", "set", "frozenset", "slice", "complex", "bytearray")
              for module in ("builtins", "__builtin__")]
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x and 2.x pickle names
        pairs += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    dtype_classes = vars(getattr(np, "dtypes", argparse.Namespace()))  # numpy.dtypes: numpy >= 1.25
    pairs += [(cls, f"numpy.dtypes.{n}") for n, cls in dtype_classes.items() if n.endswith("DType")]
    pairs += [(cls, f"numpy.{cls.__name__}")  # numeric scalar types (float32, int64, bool_ …)
              for cls in set(np.sctypeDict.values()) if issubclass(cls, (np.number, np.bool_))]
    return pairs


SAFE_GLOBALS: list[tuple[object, str]] = _safe_globals()
_SCRIPT_HELPERS = {f"torch.jit._pickle.{n}": getattr(torch.jit._pickle, n)
                   for n in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")}


@functools.cache
def _allowed() -> dict[str, object]:
    """Name -> object for the restricted unpickler: SAFE_GLOBALS plus torch's own weights-only list."""
    from torch import _weights_only_unpickler  # torch's vetted list of tensor, storage and dtype globals

    torch_list = getattr(_weights_only_unpickler, "_get_allowed_globals", dict)()  # private: absent -> refuse
    registered = {}  # what torch's add_safe_globals holds (e.g. DTensor, registered by torch.distributed.tensor)
    for item in torch.serialization.get_safe_globals() if hasattr(torch.serialization, "get_safe_globals") else []:
        obj, name = item if isinstance(item, tuple) else (item, f"{item.__module__}.{item.__qualname__}")
        registered[name] = obj
    return {**torch_list, **registered, **{name: obj for obj, name in SAFE_GLOBALS}}


class ScriptObject:
    """Inert stand-in for a TorchScript class (``__torch__.*``): holds the attributes it is built with."""

    def __setstate__(self, state: object) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only allow-listed globals.

    Parameters
    ----------
    file : binary file
    where : str
        The file's path, for messages.
    persistent_load : callable (tuple) -> object, optional
        Resolves torch storage references; without it a storage reference is a corrupt file.
    script : bool
        Resolve ``__torch__.*`` classes to a fresh :class:`ScriptObject` subclass (TorchScript archives).

    Raises
    ------
    UnsafeFileError
        From ``load()``, when the pickle names a global outside the allow-list.
    """

    def __init__(self, file, where: str, persistent_load=None, script: bool = False):
        super().__init__(file, encoding="utf-8")
        self._where, self._script, self._storage = where, script, persistent_load

    def find_class(self, module: str, name: str) -> object:
        key = f"{module}.{name}"
        allowed = _allowed().get(key) or (_SCRIPT_HELPERS.get(key) if self._script else None)
        if allowed is not None:
            return allowed
        if key in _UNREADABLE_GLOBALS:
            return _UNREADABLE_GLOBALS[key]
        if self._script and (module == "__torch__" or module.startswith("__torch__.")):
            return type(name, (ScriptObject,), {"__qualname__": key})
        raise UnsafeFileError(self._where, f"refused unsafe pickle: global {key} is not allow-listed")

    def persistent_load(self, pid: object) -> object:
        if self._storage is None:
            raise CorruptFileError(self._where, "pickle refers to a tensor storage outside it")
        return self._storage(pid)


def load_checkpoint(path: str | os.PathLike) -> object:
    """Unpickle a torch checkpoint safely (see module docstring for the two loaders).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    object
        The checkpoint object; tensors are CPU, memory-mapped for zip archives.

    Raises
    ------
    UnsafeFileError
        A global outside the allow-list.
    CorruptFileError
        Not a readable torch checkpoint (truncated zip, bad magic number, missing storage …).
    UnsupportedFormatError
        A TorchScript archive whose data.pkl the restricted unpickler cannot read; big-endian data; storage
        views of torch < 1.0 that torch's own loader also failed to read.
    """
    where = os.fspath(path)
    _register_torch_safe_types()
    _sniff(where)
    is_zip = zipfile.is_zipfile(where)
    if is_zip and _is_torchscript(where):
        try:
            return _guarded(_load_zip, where, script=True)
        except HubscanError as e:
            raise UnsupportedFormatError(where, f"TorchScript archives hold code; not loaded ({e.reason})") from e
    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5: the restricted unpickler reads it all
        return _guarded(_load_zip if is_zip else _load_legacy, where)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)  # handled below
            return torch.load(where, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        log.info("%s: torch's weights-only loader refused it (%s); reading it with the restricted unpickler",
                 where, _reason(e))
    except Exception as e:
        raise CorruptFileError(where, f"not a readable torch checkpoint: {_reason(e)}") from e
    return _guarded(_load_zip if is_zip else _load_legacy, where)


@functools.cache
def _register_torch_safe_types() -> None:
    """Import ``torch.distributed.tensor`` where it exists: torch itself then allows DTensor (and its mesh
    and placements) under ``weights_only`` (pytorch PR #139949). The allow-list is widened only this way."""
    try:
        logging.getLogger("torch.distributed.device_mesh").setLevel(logging.ERROR)
        import torch.distributed.tensor  # noqa: F401
    except Exception:  # noqa: BLE001 - a torch built without distributed: DTensors stay refused
        pass


def _sniff(where: str) -> None:
    """Refuse, from the first bytes, a file that cannot be a torch checkpoint (with what it is instead).

    Raises
    ------
    CorruptFileError
        A zip archive without its central directory (truncated), or neither a zip archive nor a pickle.
    """
    with open(where, "rb") as f:
        head = f.read(SNIFF_BYTES)
    size = os.path.getsize(where)
    if not head:
        raise CorruptFileError(where, "file is 0 bytes (empty)")
    if head[:4] == b"PK\x03\x04":
        if not zipfile.is_zipfile(where):
            raise CorruptFileError(where, f"not a readable torch checkpoint: truncated ({size} bytes: a zip archive "
                                          "whose end, with the zip central directory, is missing)")
    elif head[:1] != b"\x80":  # every torch file is a zip archive or starts with a pickle PROTO opcode
        refuse_other_format(head, where, "not a readable torch checkpoint")
        raise CorruptFileError(where, f"not a readable torch checkpoint: neither a zip archive nor a pickle "
                                      f"(it starts with {head[:8]!r})")


def _guarded(loader, where: str, **kw) -> object:
    try:
        return loader(where, **kw)
    except HubscanError:
        raise
    except Exception as e:
        raise CorruptFileError(where, f"not a readable torch checkpoint: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    """The informative line of an exception message (torch's messages carry paragraphs of advice)."""
    text = str(e)
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if isinstance(e, OSError) and not match:
        return f"unreadable ({e.strerror or 'I/O error'}; truncated or damaged?)"
    if isinstance(e, (EOFError, pickle.UnpicklingError)) and not match:
        return f"the pickle ends early or is damaged (truncated?): {lines[-1] if lines else 'no data'}"
    return match.group(1).strip() if match else (lines[-1] if lines else "unreadable")


def _is_torchscript(where: str) -> bool:
    with zipfile.ZipFile(where) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _load_zip(where: str, script: bool = False) -> object:
    """A torch zip archive (``<root>/data.pkl`` + ``<root>/data/<key>``) by the restricted unpickler."""
    with zipfile.ZipFile(where) as z:
        pkl = next((n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")), None)
        if pkl is None:
            raise CorruptFileError(where, "zip archive without <root>/data.pkl: not a torch checkpoint")
        root = pkl[: -len("data.pkl")]
        if root + "byteorder" in z.namelist() and z.read(root + "byteorder").strip() != b"little":
            raise UnsupportedFormatError(where, "big-endian torch archive")
        mapped = torch.UntypedStorage.from_file(where, shared=False, nbytes=os.path.getsize(where))
        storages: dict[str, torch.storage.TypedStorage] = {}

        def storage(pid: tuple) -> torch.storage.TypedStorage:
            kind, storage_type, key, _location, numel = pid
            if kind != "storage":
                raise CorruptFileError(where, f"unknown persistent id {kind!r} in data.pkl")
            dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
            if key not in storages:
                nbytes = numel * dtype.itemsize
                info = z.getinfo(f"{root}data/{key}")
                if info.file_size < nbytes:
                    raise CorruptFileError(where, f"storage {key} holds {info.file_size} bytes, {nbytes} needed")
                if info.compress_type == zipfile.ZIP_STORED:  # torch writes stored entries: map them
                    start = _zip_data_offset(where, info)
                    untyped = mapped[start:start + nbytes]
                else:
                    untyped = torch.frombuffer(bytearray(z.read(info)[:nbytes]), dtype=torch.uint8).untyped_storage()
                storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
            return storages[key]

        return RestrictedUnpickler(io.BytesIO(z.read(pkl)), where, storage, script=script).load()


def _zip_data_offset(where: str, info: zipfile.ZipInfo) -> int:
    with open(where, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CorruptFileError(where, f"bad zip local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _load_legacy(where: str) -> object:
    """Pre-zip torch serialization (or a bare pickle) by the restricted unpickler; read whole, not mapped.

    Layout: pickles of the magic number, protocol version, sys info, the object (storages as persistent
    ids), the list of storage keys; then each storage as an 8-byte little-endian element count + raw bytes.
    """
    storages: dict[str, torch.Tensor] = {}

    def storage(pid: tuple) -> torch.storage.TypedStorage:
        kind, storage_type, key, _location, numel, view = pid
        if kind != "storage":
            raise UnsupportedFormatError(where, f"legacy persistent id {kind!r} (pickled modules) is not supported")
        if view is not None:
            raise UnsupportedFormatError(where, "legacy storage views (torch < 1.0) are not supported")
        if key not in storages:
            storages[key] = torch.empty(numel, dtype=storage_type.dtype)
        return torch.storage.TypedStorage(wrap_storage=storages[key].untyped_storage(), dtype=storage_type.dtype,
                                          _internal=True)

    with open(where, "rb") as f:
        first = RestrictedUnpickler(f, where).load()
        if not (isinstance(first, int) and first == _LEGACY_MAGIC):
            return first  # a bare pickle: the object itself
        RestrictedUnpickler(f, where).load()  # protocol version
        sys_info = RestrictedUnpickler(f, where).load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise UnsupportedFormatError(where, "big-endian legacy torch file")
        obj = RestrictedUnpickler(f, where, storage).load()
        for key in RestrictedUnpickler(f, where).load():
            buf = storages[key].view(torch.uint8).numpy()
            count = f.read(8)
            if len(count) < 8 or struct.unpack("<q", count)[0] != storages[key].numel() or f.readinto(buf) != buf.size:
                raise CorruptFileError(where, f"file ends inside storage {key} (truncated?)")
    return obj


def find_tensors(obj: object, where: str = "") -> list[tuple[str, torch.Tensor]]:
    """The weight tensors of a checkpoint object, named by the rule in the module docstring.

    Parameters
    ----------
    obj : object
        What :func:`load_checkpoint` returned.
    where : str
        File path, for logs.

    Returns
    -------
    list of (str, torch.Tensor)
        In the order the walk meets them. Only strided tensors; numpy float16/32/64 arrays converted.
    """
    found = _walk(obj)
    root: tuple = ()
    while True:
        containers = {p[len(root)] for p, _ in found if p[:len(root)] == root and len(p) > len(root) + 1}
        preferred = next((k for k in STATE_DICT_KEYS if k in containers), None)
        if preferred is None:
            break
        root += (preferred,)
    dropped = [".".join(map(str, p)) for p, _ in found if p[:len(root)] != root]
    if dropped:
        log.info("%s: using the state dict at %r; ignoring tensors beside it: %s",
                 where, ".".join(map(str, root)), ", ".join(dropped[:5]) + (" …" if len(dropped) > 5 else ""))
    named: dict[str, torch.Tensor] = {}
    for path, tensor in found:
        if path[:len(root)] == root:
            named.setdefault(".".join(map(str, path[len(root):])), tensor)
    return list(named.items())


def _walk(obj: object) -> list[tuple[tuple, torch.Tensor]]:
    """Every (path, tensor) under obj, depth-first in order; each container visited once."""
    found, seen, stack = [], set(), [((), obj)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, torch.Tensor):
            found.append((path, _tensor_kind(node)))
            continue
        if isinstance(node, Unreadable):
            found.append((path, node))
            continue
        if isinstance(node, np.ndarray):
            if node.dtype.type in _NUMPY_FLOATS:
                found.append((path, _from_numpy(node)))
            continue
        if isinstance(node, dict):
            children = list(node.items())
        elif isinstance(node, (list, tuple)):
            children = list(enumerate(node))
        elif isinstance(node, (argparse.Namespace, ScriptObject)):
            children = list(vars(node).items())
        else:
            continue
        if id(node) in seen:  # shared or cyclic containers: walk once
            continue
        seen.add(id(node))
        stack += [(path + (k,), v) for k, v in reversed(children)
                  if isinstance(v, (torch.Tensor, np.ndarray)) or not (isinstance(k, str) and _NOT_WEIGHTS.search(k))]
    return found


def _tensor_kind(t: torch.Tensor) -> torch.Tensor | Unreadable:
    """A dense tensor to analyze, or an :class:`Unreadable` saying why there is none."""
    if t.is_nested:
        return Unreadable("strided nested tensor" if t.layout == torch.strided else "jagged nested tensor")
    if type(t).__name__ == "DTensor" and hasattr(t, "to_local"):
        mesh = getattr(t, "device_mesh", None)
        whole = (mesh is not None and mesh.size() == 1) or all(type(p).__name__ == "Replicate" for p in t.placements)
        return t.to_local() if whole else Unreadable("DTensor shard (its other shards live on other devices)",
                                                                 understood=False)
    return t


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    return torch.from_numpy(a if a.flags.writeable else a.copy())


@register_reader("torch", [".bin", ".pt", ".pth", ".ckpt", ".jit"], variants=[".bin"], rules=[
    FileRule(("pytorch_model.bin",), index="pytorch_model.bin.index.json", priority=30),
    FileRule(("pytorch_model-*-of-*.bin", "pytorch_model*.bin"), priority=40),
    FileRule(("*.pth", "*.pt", "*.ckpt", "*.bin", "*.jit"), priority=80)])
def open_torch(path: str | os.PathLike) -> WeightSet:
    """Open a torch checkpoint (or TorchScript archive) safely and list its weight tensors.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    WeightSet
        ``TensorEntry.load()`` returns the CPU tensor, detached, of its stored dtype. Zip archives are
        memory-mapped, so memory stays bounded by what is loaded; a legacy (pre-zip) file is read whole.

    Raises
    ------
    UnsafeFileError, CorruptFileError, UnsupportedFormatError
        See :func:`load_checkpoint`.
    """
    where = os.fspath(path)
    tensors = find_tensors(load_checkpoint(where), where)
    entries = [_entry(name, t, where) for name, t in tensors]
    log.debug("%s: %d tensors", where, len(entries))
    return WeightSet(files=[where], format="torch", entries=lambda: iter(entries), close=entries.clear)


def _entry(name: str, t: torch.Tensor | Unreadable, where: str) -> TensorEntry:
    if isinstance(t, Unreadable):
        why = f"{t.kind}: not a weight matrix" if t.understood else t.kind
        return TensorEntry(name, (), "", where, lambda: torch.empty(0), skip_reason=why, understood=t.understood)
    dtype = str(t.dtype).removeprefix("torch.")
    if t.layout != torch.strided:
        layout = str(t.layout).removeprefix("torch.")
        if t.numel() > MAX_DENSIFY:
            return TensorEntry(name, tuple(t.shape), dtype, where, lambda: torch.empty(0),
                               skip_reason=f"{layout} tensor of {t.numel()} elements: too large to densify")
        return TensorEntry(name, tuple(t.shape), dtype, where, functools.partial(_densify, t))
    storage = (where, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
    return TensorEntry(name, tuple(t.shape), dtype, where, functools.partial(torch.Tensor.detach, t),
                       storage=storage if t.numel() else None)


def _densify(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to_dense()
