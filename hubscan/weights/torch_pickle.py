"""Torch checkpoints (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.jit``), loaded without executing code.

Loading
    Every checkpoint is read by :class:`RestrictedUnpickler`, a pure-Python unpickler (CPython's
    ``pickle._Unpickler``) whose ``find_class`` resolves only allow-listed globals: :data:`SAFE_GLOBALS`
    (``argparse.Namespace``, ``pathlib`` paths, numpy arrays/scalars/dtypes, ``collections`` containers,
    ``builtins`` containers) plus torch's own weights-only list. Storages are served from the zip archive
    (memory-mapped, ``<root>/data/<key>``) or from a legacy (pre-zip) file's body, read whole. It handles
    every pickle protocol. A global outside the allow-list raises :class:`~hubscan.errors.UnsafeFileError`
    naming it. ``torch.load``, ``weights_only=False`` and plain ``pickle.load`` are never used: torch's
    weights-only loader allows ``builtins.bytearray``, storage and legacy tensor constructors without
    bounding their arguments (a 33 KB file asking for ``bytearray(1_500_000_000)`` costs 1.5 GB there).
    TorchScript archives (a zip with ``constants.pkl``/``code/``; any suffix) hold code. Their ``data.pkl``
    is read by the same restricted unpickler, with every ``__torch__.*`` class replaced by an inert
    :class:`ScriptObject` that only stores its attributes: the tensors come out, no TorchScript runs. An
    archive this cannot read is refused with ``UnsupportedFormatError("TorchScript archives hold code; not
    loaded (<why>)")``.

Memory
    What a checkpoint makes the loader allocate is charged to the file's
    :func:`~hubscan.weights.base.memory_budget` (twice its size plus 128 MiB); a file that would go over it
    is refused (:class:`~hubscan.errors.CorruptFileError`) before the allocation. Charged: the pickle's own
    bytes (read into memory, decoded strings), each opcode run (:data:`OPCODE_BYTES`: more than the object
    it builds), a compressed zip entry's expanded size, each legacy storage, and each call of an allowed
    callable in proportion to what it allocates from its arguments (:func:`call_bytes`: ``bytearray(n)``,
    ``torch.UntypedStorage(n)``, ``torch.FloatTensor(*sizes)``, numpy ``_reconstruct``/``ndarray`` shapes,
    ``scalar`` dtypes and array states, ``_rebuild_qtensor`` sizes, ``_rebuild_device_tensor_from_*`` conversions, any
    container built from an iterable). Sparse tensors' indices are validated after loading, as
    ``torch.load`` does, and a sparse tensor is densified only when its dense form fits the same budget.

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
    CSC / BSR / BSC tensors are densified when read (skipped when the dense form exceeds the memory budget).
    ``DTensor`` s (allowed by torch itself under ``weights_only`` once ``torch.distributed.tensor`` is
    imported, which registers them) give their local tensor when it is the whole tensor (one-device mesh or
    replicated), else they are skipped. Nested tensors (strided or jagged) have no matrix: skipped with
    the reason; the jagged kind's rebuild function is not allow-listed by torch, so the restricted
    unpickler resolves it to an inert stand-in (:class:`Unreadable`) instead of calling it.
"""

from __future__ import annotations

import argparse
import builtins
import codecs
import collections
import functools
import io
import logging
import math
import os
import pathlib
import pickle
import re
import struct
import warnings
import zipfile
import zlib

import numpy as np
import torch
import torch.jit._pickle

from hubscan.errors import CorruptFileError, HubscanError, UnsafeFileError, UnsupportedFormatError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet, memory_budget
from hubscan.weights.files import SNIFF_BYTES, refuse_other_format

__all__ = ["SAFE_GLOBALS", "STATE_DICT_KEYS", "RestrictedUnpickler", "ScriptObject", "load_checkpoint",
           "find_tensors", "open_torch", "call_bytes", "OPCODE_BYTES"]

log = logging.getLogger(__name__)

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params",
                   "weights", "ema", "model_ema", "state_dict_ema")
_NOT_WEIGHTS = re.compile(r"optim|sched|scaler", re.IGNORECASE)
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's pre-zip serialization starts with this pickled int
_NUMPY_FLOATS = (np.float16, np.float32, np.float64)
#: Bytes charged per pickle opcode run, at least what it creates (CPython sizes with their GC header: an
#: empty list 72 bytes, a dict 80, a set 232, a memo entry about 100): 256 for an opcode that makes a
#: container or calls, 128 for one that adds a memo entry, 64 for any other (a scalar, a stack slot).
OPCODE_BYTES = {**{op[0]: 256 for op in (pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_SET, pickle.LIST,
                                          pickle.DICT, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3,
                                          pickle.FROZENSET, pickle.OBJ, pickle.INST, pickle.NEWOBJ,
                                          pickle.NEWOBJ_EX, pickle.REDUCE, pickle.BUILD)},
                **{op[0]: 128 for op in (pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE)}}
#: Bytes charged per item a call may build from an iterable argument, or per element of a tensor whose
#: element size is not known before the call (complex128, the largest).
ITEM_BYTES = 16


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


class _Budget:
    """The bytes a checkpoint may still make the loader allocate (module docstring, "Memory")."""

    def __init__(self, where: str, file_size: int):
        self.where, self.size = where, file_size
        self.limit = self.left = memory_budget(file_size)

    def charge(self, nbytes: int, what: str) -> None:
        """Take ``nbytes`` from the budget, or raise CorruptFileError naming ``what`` when it has not got them."""
        if nbytes > self.left:
            total, limit = _size(self.limit - self.left + nbytes), _size(self.limit)
            amount = total if total != limit else f"more than {limit}"  # just over: the same when rounded
            raise CorruptFileError(self.where, f"{what} would allocate {amount}; a {_size(self.size)} checkpoint may "
                                               f"use {limit} (twice its size plus 128 MiB): refused")
        self.left -= nbytes


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _elements(shape: object) -> int:
    """The number of elements of a shape given as a pickle passes it (an int or a sequence of ints); 0 for
    anything else (the callee then refuses it itself)."""
    dims = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else (shape,)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        return 0
    return math.prod(dims)


def _itemsize(dtype: object) -> int:
    try:
        return np.dtype(dtype).itemsize or ITEM_BYTES
    except Exception:  # noqa: BLE001 - not a numpy dtype: the largest element
        return ITEM_BYTES


def _is_torch_class(func: object) -> bool:
    """A torch class a pickle may call to allocate: storages, legacy tensor types (``torch.FloatTensor``),
    ``torch.Tensor`` and its subclasses."""
    return isinstance(func, type) and (func.__module__ or "").startswith("torch")


def call_bytes(func: object, args: tuple, kwargs: dict | None = None) -> int:
    """An upper bound of the bytes calling ``func(*args, **kwargs)`` allocates beyond its arguments, for
    the allowed callables a pickle may call (module docstring, "Memory").

    Parameters
    ----------
    func : callable
        An allow-listed global (or a class whose ``__new__`` a NEWOBJ opcode calls).
    args : tuple
    kwargs : dict, optional

    Returns
    -------
    int
        ``bytearray(n)``: n; numpy ``_reconstruct(cls, shape, dtype)`` and ``ndarray(shape, dtype)`` without
        a buffer: elements × item size; numpy ``scalar(dtype, …)``: the dtype's item size; a torch class
        called with sizes (``torch.UntypedStorage(n)``, ``torch.FloatTensor(a, b)``): elements × 16;
        ``_rebuild_qtensor``: its size's elements × 4;
        ``_rebuild_device_tensor_from_numpy/cpu_tensor``: elements × 16; ``_rebuild_from_type_v2(f, t, a, s)``:
        that of ``f(*a)``; ``_codecs.encode(s, enc)`` (protocol 2's bytes): ``len(s)`` for latin-1, 4 ×
        ``len(s)`` otherwise; a container built from iterables (``list``, ``dict``, ``set`` …,
        ``collections.*``): 16 bytes per item of each list, tuple, dict, set, str or bytes argument
        (``list(b"...")`` makes one slot per byte); any other call: the lengths of those arguments (a copy).
    """
    kwargs = kwargs or {}
    sized = [len(a) for a in (*args, *kwargs.values()) if isinstance(a, _SIZED)]
    if func is torch._tensor._rebuild_from_type_v2 and len(args) >= 3 and isinstance(args[2], tuple):
        return call_bytes(args[0], args[2])
    if func is _RECONSTRUCT and len(args) >= 3:
        return _elements(args[1]) * _itemsize(args[2])
    if func is _SCALAR and args:  # a scalar of the dtype, zeroed when no bytes are given
        return _itemsize(args[0])
    if func is np.ndarray and args and (len(args) < 3 or args[2] is None) and "buffer" not in kwargs:
        return _elements(args[0]) * _itemsize(args[1] if len(args) > 1 else kwargs.get("dtype", float))
    if func is torch._utils._rebuild_qtensor and len(args) >= 3:
        return _elements(args[2]) * 4
    if func in (torch._utils._rebuild_device_tensor_from_numpy, torch._utils._rebuild_device_tensor_from_cpu_tensor) \
            and args and hasattr(args[0], "shape"):
        return _elements(tuple(args[0].shape)) * ITEM_BYTES
    if func is codecs.encode and args and isinstance(args[0], str):
        encoding = str(args[1] if len(args) > 1 else "utf-8").lower().replace("-", "").replace("_", "")
        return len(args[0]) * (1 if encoding in ("latin1", "iso88591", "l1") else 4)
    if func is bytearray and args and isinstance(args[0], int):
        return max(args[0], 0)
    if _is_torch_class(func) and args and all(isinstance(a, int) for a in args):
        return _elements(args) * ITEM_BYTES
    if isinstance(func, type) and issubclass(func, _CONTAINERS):
        return sum(sized) * ITEM_BYTES
    return sum(sized)


_SIZED = (list, tuple, dict, set, frozenset, str, bytes, bytearray)
_CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque)  # Counter, OrderedDict, defaultdict: dicts


def _describe(func: object, args: tuple) -> str:
    """``module.name(arg, …)`` for messages, each argument short."""
    def short(a: object) -> str:
        if isinstance(a, (list, tuple, dict, set, frozenset, str, bytes, bytearray)):
            return f"<{type(a).__name__} of {len(a)}>" if len(a) > 4 else repr(a)[:40]
        if isinstance(a, (int, float, torch.Size)):
            return repr(a)[:40]
        return _name(a) if callable(a) and hasattr(a, "__qualname__") else f"<{type(a).__name__}>"
    return f"{_name(func)}({', '.join(map(short, args))})"


def _name(obj: object) -> str:
    return f"{getattr(obj, '__module__', '') or ''}.{getattr(obj, '__qualname__', type(obj).__name__)}".lstrip(".")


_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_RECONSTRUCT, _SCALAR = _MULTIARRAY._reconstruct, _MULTIARRAY.scalar


class RestrictedUnpickler(pickle._Unpickler):
    """A pure-Python unpickler that resolves only allow-listed globals and charges what it allocates to a
    memory budget (module docstring).

    Parameters
    ----------
    file : binary file
    where : str
        The file's path, for messages.
    persistent_load : callable (tuple) -> object, optional
        Resolves torch storage references; without it a storage reference is a corrupt file.
    script : bool
        Resolve ``__torch__.*`` classes to a fresh :class:`ScriptObject` subclass (TorchScript archives).
    budget : _Budget, optional
        Shared by the pickles of one file; by default that of an empty file (128 MiB).

    Raises
    ------
    UnsafeFileError
        From ``load()``, when the pickle names a global outside the allow-list.
    CorruptFileError
        From ``load()``, when it would allocate more than the budget.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # opcode -> method, the calling ones checked (below)

    def __init__(self, file, where: str, persistent_load=None, script: bool = False, budget: _Budget | None = None):
        super().__init__(file, encoding="utf-8")
        self._where, self._script, self._storage = where, script, persistent_load
        self._budget = budget if budget is not None else _Budget(where, 0)

    def find_class(self, module: str, name: str) -> object:
        key = f"{module}.{name}"
        if module.startswith("torch.distributed.") and key not in _allowed():  # DTensor & co.: registered by
            _register_torch_safe_types()  # torch on import (2-3 s), so imported only when a pickle names them
            _allowed.cache_clear()
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

    def _call(self, func: object, args: tuple, kwargs: dict | None = None) -> None:
        """Charge a call the pickle is about to make (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ)."""
        try:
            nbytes = call_bytes(func, args, kwargs)
        except TypeError:  # arguments of the wrong kind: the callee refuses them itself
            nbytes = 0
        if nbytes:
            self._budget.charge(nbytes, _describe(func, args))

    def load_reduce(self):
        self._call(self.stack[-2], tuple(self.stack[-1]))
        super().load_reduce()

    def load_newobj(self):
        self._call(self.stack[-2], tuple(self.stack[-1]))
        super().load_newobj()

    def load_newobj_ex(self):
        self._call(self.stack[-3], tuple(self.stack[-2]), dict(self.stack[-1]))
        super().load_newobj_ex()

    def _instantiate(self, klass, args):
        self._call(klass, tuple(args))
        super()._instantiate(klass, args)

    def load_build(self):
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) >= 3:
            self._budget.charge(_elements(state[1]) * _itemsize(state[2]), f"numpy array state of shape {state[1]}")
        super().load_build()

    for _op, _method in ((pickle.REDUCE, load_reduce), (pickle.NEWOBJ, load_newobj), (pickle.NEWOBJ_EX, load_newobj_ex),
                         (pickle.BUILD, load_build)):
        dispatch[_op[0]] = _method
    del _op, _method


def _charge_opcodes(dispatch: dict) -> None:
    """Wrap every opcode method to charge :data:`OPCODE_BYTES` (64 when not listed) before it runs."""
    def charged(method, cost):
        def run(self):
            budget = self._budget
            if cost > budget.left:
                budget.charge(cost, "the pickle's objects")
            budget.left -= cost
            method(self)
        return run

    for op, method in list(dispatch.items()):
        dispatch[op] = charged(method, OPCODE_BYTES.get(op, 64))


_charge_opcodes(RestrictedUnpickler.dispatch)


def load_checkpoint(path: str | os.PathLike, damaged: dict | None = None) -> object:
    """Unpickle a torch checkpoint safely, within its memory budget (see module docstring).

    Parameters
    ----------
    path : str or os.PathLike
    damaged : dict, optional
        Given, a zip archive's storage whose bytes do not match their CRC-32 does not fail the file: it is
        recorded here (its first byte's address, ``untyped_storage().data_ptr()`` of the tensors on it → the
        reason) and its tensors still come out, their bytes as stored — for :func:`open_torch` to fail those
        tensors alone. Without it, such a storage raises ``CorruptFileError``.

    Returns
    -------
    object
        The checkpoint object; tensors are CPU, memory-mapped for zip archives.

    Raises
    ------
    UnsafeFileError
        A global outside the allow-list.
    CorruptFileError
        Not a readable torch checkpoint (truncated zip, bad magic number, missing storage …), or one that
        would make the loader allocate more than its memory budget.
    UnsupportedFormatError
        A TorchScript archive whose data.pkl the restricted unpickler cannot read; big-endian data; storage
        views of torch < 1.0.
    """
    where = os.fspath(path)
    _sniff(where)
    budget = _Budget(where, os.path.getsize(where))
    if not zipfile.is_zipfile(where):
        return _guarded(_load_legacy, where, budget)
    with zipfile.ZipFile(where) as z:
        if _is_torchscript(z):
            try:
                return _guarded(_load_zip, where, z, budget, script=True)
            except HubscanError as e:
                raise UnsupportedFormatError(where, f"TorchScript archives hold code; not loaded ({e.reason})") from e
        return _guarded(_load_zip, where, z, budget, damaged=damaged)


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


def _guarded(loader, where: str, *args, **kw) -> object:
    """Run a loader: hubscan's own errors as they are, anything else as an unreadable checkpoint; the sparse
    tensors it built are validated as ``torch.load`` does (indices inside their size: ``to_dense`` would
    otherwise read out of bounds)."""
    try:
        with warnings.catch_warnings():  # torch's notices about its own API (TypedStorage, quantized tensors
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")  # deprecated) say
            obj = loader(where, *args, **kw)                                          # nothing of the file
        with torch.sparse.check_sparse_tensor_invariants():  # turns the check on
            torch._utils._validate_loaded_sparse_tensors()
        return obj
    except HubscanError:
        raise
    except Exception as e:
        raise CorruptFileError(where, f"not a readable torch checkpoint: {_reason(e)}") from e
    finally:
        torch._utils._sparse_tensors_to_validate.clear()


def _reason(e: BaseException) -> str:
    """The informative line of an exception message (torch's messages carry paragraphs of advice)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if isinstance(e, OSError):
        return f"unreadable ({e.strerror or 'I/O error'}; truncated or damaged?)"
    if isinstance(e, (EOFError, pickle.UnpicklingError)):
        return f"the pickle ends early or is damaged (truncated?): {lines[-1] if lines else 'no data'}"
    return lines[-1] if lines else type(e).__name__


def _is_torchscript(z: zipfile.ZipFile) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _read_entry(where: str, z: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, what: str,
                mapped: torch.UntypedStorage | None = None) -> bytes:
    """An archive entry's bytes, its expanded size charged first (a compressed entry may expand 1000-fold).

    ``zipfile`` checks the CRC-32 its header records; an archive written without CRC-32s (``mapped`` given:
    torch's ``compute_crc32=False`` stores every entry, CRC 0) is read from the mapped file unchecked."""
    budget.charge(info.file_size, f"{what} ({info.file_size} bytes once expanded)")
    if mapped is not None and info.compress_type == zipfile.ZIP_STORED:
        return bytes(_view(where, what, mapped, _zip_data_offset(where, info), info.file_size))
    try:
        return z.read(info)
    except zipfile.BadZipFile as e:
        if "CRC" not in str(e):
            raise
        raise CorruptFileError(where, f"{what}: its bytes do not match the CRC-32 the archive records (the file is "
                                      "damaged)") from None


def _view(where: str, what: str, mapped: torch.UntypedStorage, start: int, nbytes: int) -> np.ndarray:
    """Bytes [start, start + nbytes) of a mapped file, as a uint8 array (no copy).

    Raises
    ------
    CorruptFileError
        The range runs past the file's end.
    """
    if start + nbytes > mapped.nbytes():
        raise CorruptFileError(where, f"{what} runs past the end of the file (truncated?)")
    return torch.empty(0, dtype=torch.uint8).set_(mapped, start, (nbytes,)).numpy()


def _load_zip(where: str, z: zipfile.ZipFile, budget: _Budget, script: bool = False,
              damaged: dict | None = None) -> object:
    """A torch zip archive (``<root>/data.pkl`` + ``<root>/data/<key>``) by the restricted unpickler.

    Every entry read is checked against the CRC-32 its zip header records (``torch.load`` checks none: damaged
    weights would be analyzed as they are; zlib reads ~2–3 GB/s), unless the archive records none (torch's
    ``torch.utils.serialization.config.save.compute_crc32 = False`` writes 0 for every entry). A damaged
    storage raises, or with ``damaged`` (:func:`load_checkpoint`) is recorded there."""
    pkl = next((n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")), None)
    if pkl is None:
        raise CorruptFileError(where, "zip archive without <root>/data.pkl: not a torch checkpoint")
    root = pkl[: -len("data.pkl")]
    mapped = torch.UntypedStorage.from_file(where, shared=False, nbytes=os.path.getsize(where))
    checked = any(i.CRC for i in z.infolist() if i.file_size)
    if not checked:
        log.info("%s: the archive records no CRC-32s (saved with compute_crc32=False): its bytes are not checked",
                 where)
    unchecked = None if checked else mapped
    if root + "byteorder" in z.namelist():
        order = _read_entry(where, z, z.getinfo(root + "byteorder"), budget, "byteorder", unchecked)
        if order.strip() != b"little":
            raise UnsupportedFormatError(where, "big-endian torch archive")
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
                data = _view(where, f"storage {key}", mapped, start, info.file_size)
                untyped = mapped[start:start + nbytes]
                if checked and zlib.crc32(data) != info.CRC:
                    why = f"storage {key}: its bytes do not match the CRC-32 the archive records (the file is damaged)"
                    if damaged is None:
                        raise CorruptFileError(where, why)
                    damaged[untyped.data_ptr()] = why
            else:
                raw = bytearray(_read_entry(where, z, info, budget, f"storage {key}", unchecked)[:nbytes])
                untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
            storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return storages[key]

    data = _read_entry(where, z, z.getinfo(pkl), budget, "data.pkl", unchecked)
    return RestrictedUnpickler(io.BytesIO(data), where, storage, script=script, budget=budget).load()


def _zip_data_offset(where: str, info: zipfile.ZipInfo) -> int:
    with open(where, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CorruptFileError(where, f"bad zip local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _load_legacy(where: str, budget: _Budget) -> object:
    """Pre-zip torch serialization (or a bare pickle) by the restricted unpickler; read whole, not mapped.

    Layout: pickles of the magic number, protocol version, sys info, the object (storages as persistent
    ids), the list of storage keys; then each storage as an 8-byte little-endian element count + raw bytes.
    The pickles' bytes are charged to the budget, and each storage before it is allocated.
    """
    storages: dict[str, torch.Tensor] = {}
    budget.charge(budget.size, "the pickles")  # what their strings and bytes can decode to

    def storage(pid: tuple) -> torch.storage.TypedStorage:
        kind, storage_type, key, _location, numel, view = pid
        if kind != "storage":
            raise UnsupportedFormatError(where, f"legacy persistent id {kind!r} (pickled modules) is not supported")
        if view is not None:
            raise UnsupportedFormatError(where, "legacy storage views (torch < 1.0) are not supported")
        if key not in storages:
            nbytes = numel * storage_type.dtype.itemsize
            if nbytes > budget.size:
                raise CorruptFileError(where, f"storage {key} claims {nbytes} bytes; the file holds {budget.size}")
            budget.charge(nbytes, f"storage {key}")
            storages[key] = torch.empty(numel, dtype=storage_type.dtype)
        return torch.storage.TypedStorage(wrap_storage=storages[key].untyped_storage(), dtype=storage_type.dtype,
                                          _internal=True)

    with open(where, "rb") as f:
        def load(persistent_load=None) -> object:
            return RestrictedUnpickler(f, where, persistent_load, budget=budget).load()

        first = load()
        if not (isinstance(first, int) and first == _LEGACY_MAGIC):
            return first  # a bare pickle: the object itself
        load()  # protocol version
        sys_info = load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise UnsupportedFormatError(where, "big-endian legacy torch file")
        obj = load(storage)
        for key in load():
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
            # a bare tensor (the file holds the tensor itself, no container) is named after its file
            name = ".".join(map(str, path[len(root):])) or os.path.splitext(os.path.basename(where))[0] or "tensor"
            named.setdefault(name, tensor)
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
    damaged: dict[int, str] = {}  # a damaged storage fails its tensors, not the file
    tensors = find_tensors(load_checkpoint(where, damaged), where)
    budget = memory_budget(os.path.getsize(where))
    entries = [_entry(name, t, where, budget, damaged) for name, t in tensors]
    log.debug("%s: %d tensors", where, len(entries))
    return WeightSet(files=[where], format="torch", entries=lambda: iter(entries), close=entries.clear)


def _entry(name: str, t: torch.Tensor | Unreadable, where: str, budget: int, damaged: dict | None = None
           ) -> TensorEntry:
    if isinstance(t, Unreadable):
        why = f"{t.kind}: not a weight matrix" if t.understood else t.kind
        return TensorEntry(name, (), "", where, lambda: torch.empty(0), skip_reason=why, understood=t.understood)
    dtype = str(t.dtype).removeprefix("torch.")
    why = next((damaged[p] for p in _storage_ptrs(t) if p in damaged), None) if damaged else None
    if why is not None:  # its bytes are not those saved: this tensor fails, the file's others are analyzed
        return TensorEntry(name, tuple(t.shape), dtype, where, functools.partial(_damaged, where, why))
    if t.is_quantized:  # qint8 / quint8 / qint32 (eager-mode quantization): torch's own dequantize, float32
        scheme = str(t.qscheme()).removeprefix("torch.")
        return TensorEntry(name, tuple(t.shape), dtype, where, functools.partial(_dequantized, t),
                           layout=f"{dtype} {scheme}")
    if t.layout != torch.strided:
        layout = str(t.layout).removeprefix("torch.")
        dense = t.numel() * t.element_size()
        if dense > budget:
            return TensorEntry(name, tuple(t.shape), dtype, where, lambda: torch.empty(0),
                               skip_reason=f"{layout} tensor of {t.numel()} elements: its dense form "
                                           f"({_size(dense)}) is more than this file may use ({_size(budget)})")
        return TensorEntry(name, tuple(t.shape), dtype, where, functools.partial(_densify, t))
    storage = (where, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
    return TensorEntry(name, tuple(t.shape), dtype, where, functools.partial(torch.Tensor.detach, t),
                       storage=storage if t.numel() else None)


def _damaged(where: str, why: str) -> torch.Tensor:
    raise CorruptFileError(where, why)


def _storage_ptrs(t: torch.Tensor) -> list[int]:
    """The first-byte addresses of the storages a tensor's values come from (a sparse tensor's values and
    indices; a dense or quantized tensor's one storage)."""
    if t.layout == torch.strided:
        return [t.untyped_storage().data_ptr()]
    out = []
    for part in ("_values", "_indices", "values", "crow_indices", "col_indices", "ccol_indices", "row_indices"):
        try:
            out.append(getattr(t, part)().untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # not a part of this layout
            pass
    return out


def _dequantized(t: torch.Tensor) -> torch.Tensor:
    """(q − zero_point) · scale, per tensor or per channel, as float32 (``torch.Tensor.dequantize``)."""
    return t.detach().dequantize().float()


def _densify(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to_dense()
