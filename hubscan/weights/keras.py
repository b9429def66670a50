"""Keras / TensorFlow HDF5 reader: ``tf_model.h5`` (transformers' TF checkpoints), Keras ``.h5`` / ``.weights.h5``
and Keras 3 ``.keras`` archives, read with h5py — datasets only: nothing the file holds is run (a full-model
``.h5``'s ``model_config`` and a ``.keras`` archive's ``config.json`` are never read).

Layouts
    * Keras 2 weights (``Model.save_weights``, what transformers' ``save_pretrained`` writes as ``tf_model.h5``):
      the root (or a full-model file's ``model_weights`` group) names its layers in the ``layer_names``
      attribute; layer ``L``'s variables are the datasets under ``L/``, whose paths below ``L`` are the TF
      variable names (``tf_bert_model/bert/encoder/layer_._0/attention/self/query/kernel:0``).
    * Keras 3 ``.keras``: a zip archive whose ``model.weights.h5`` holds ``layers/<layer>/vars/<i>``.
    * Any other HDF5 file: every dataset, named by its path.

Names (transformers 4's ``convert_tf_weight_name_to_pt_weight_name``, gone from transformers 5, restated here)
    ``:0`` dropped; a ``$1___$2`` level becomes ``$2``; ``_._`` is a level separator (TF lists →
    ``nn.ModuleList`` indices); levels joined by ``.``; in a Keras 2 file the first level of the variable name
    (the model's name scope, ``tf_bert_model``) is dropped; the last level ``kernel`` / ``embeddings`` /
    ``gamma`` → ``weight``, ``beta`` → ``bias``, ``moving_mean`` / ``moving_variance`` → ``running_mean`` /
    ``running_var``, ``depthwise_kernel`` / ``pointwise_kernel`` → ``depthwise.weight`` / ``pointwise.weight``.
    So ``tf_bert_model/bert/encoder/layer_._0/attention/self/query/kernel:0`` is
    ``bert.encoder.layer.0.attention.self.query.weight``, as in the PyTorch checkpoint of a model with a head
    (a bare ``BertModel``'s PyTorch names lack the ``bert.`` prefix). Keras 3 names stay as stored
    (``layers.dense.vars.0``): the archive does not name its variables.

Orientation
    TF stores a Dense kernel (in, out), a Conv1D kernel (k, in, out) and a Conv2D kernel (kh, kw, in, out);
    entries load them in PyTorch's orientation — (out, in), (out, in, k), (out, in, kh, kw) — as
    transformers' ``apply_transpose`` does (by the name ``kernel``; in a Keras 3 archive, whose variables are
    unnamed, 3-D and 4-D variables are taken as Conv kernels and 2-D ones kept as stored). A transpose leaves
    the eigenvalues of WᵀW unchanged: the ESD is the same.

Safety and memory
    Only hard links are followed: a soft link is another name of an object (left out), an external link
    (another file) is listed in ``WeightSet.missing``, not followed. A dataset whose data lives in external
    files, or a virtual dataset, is refused (:class:`~hubscan.errors.UnsafeFileError`). A dataset whose
    size (shape × item size) exceeds what the file can justify (:func:`~hubscan.weights.base.memory_budget`:
    twice the file's size plus a slack, compression included) is refused at open
    (:class:`~hubscan.errors.CorruptFileError`), before anything is read. A ``.keras`` archive's member is
    read in place (stored) or through the zip stream (deflated), never extracted whole.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import zipfile

import numpy as np
import torch

from hubscan.errors import CorruptFileError, UnsafeFileError, UnsupportedFormatError
from hubscan.weights import FileRule, register_reader
from hubscan.weights.base import TensorEntry, WeightSet, memory_budget
from hubscan.weights.files import SNIFF_BYTES, refuse_other_format

__all__ = ["open_keras", "tf_name_to_pt", "tf_to_pt_layout"]

log = logging.getLogger(__name__)

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KERAS3_WEIGHTS = "model.weights.h5"
_RENAME = {"kernel": "weight", "embeddings": "weight", "gamma": "weight", "beta": "bias",
           "moving_mean": "running_mean", "moving_variance": "running_var",
           "depthwise_kernel": "depthwise.weight", "pointwise_kernel": "pointwise.weight"}
_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")
_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}


def tf_name_to_pt(name: str, drop_scope: bool) -> tuple[str, bool]:
    """A TF variable name as the PyTorch name transformers gives it (module docstring, "Names").

    Parameters
    ----------
    name : str
        ``/``-separated, e.g. ``tf_bert_model/bert/encoder/layer_._0/output/dense/kernel:0``.
    drop_scope : bool
        Drop the first level (the model's name scope, in a Keras 2 weights file).

    Returns
    -------
    (str, bool)
        The name (``bert.encoder.layer.0.output.dense.weight``) and whether the variable is a kernel (TF
        orientation: see :func:`tf_to_pt_layout`).
    """
    name = name.replace(":0", "")
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)
    name = re.sub(r"//+", "/", name.replace("_._", "/")).strip("/")
    levels = name.split("/")
    if drop_scope and len(levels) > 1:
        levels = levels[1:]
    kernel = levels[-1] in _KERNELS
    levels[-1] = _RENAME.get(levels[-1], levels[-1])
    return ".".join(levels), kernel


def tf_to_pt_layout(shape: tuple) -> tuple[int, ...] | None:
    """The axis permutation that takes a TF kernel of ``shape`` to PyTorch's orientation.

    Returns
    -------
    tuple of int or None
        (1, 0) for a Dense kernel (in, out); (2, 1, 0) for Conv1D (k, in, out); (3, 2, 0, 1) for Conv2D
        (kh, kw, in, out) (transformers' ``apply_transpose``, TF → PyTorch); None for other ranks.
    """
    return {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1)}.get(len(shape))


class _Member(io.RawIOBase):
    """A stored (uncompressed) zip member read in place: seek/read within its bytes of the archive."""

    def __init__(self, path: str, start: int, size: int):
        self._f = open(path, "rb")
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._size + offset}[whence]
        return self._pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self._size - self._pos))
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(memoryview(b)[:n]) if n else 0
        self._pos += got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


def _keras_archive(where: str) -> tuple[object, list]:
    """The ``model.weights.h5`` of a ``.keras`` archive as a file object (and what to close)."""
    try:
        archive = zipfile.ZipFile(where)
        info = archive.getinfo(_KERAS3_WEIGHTS)
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptFileError(where, f"not a readable .keras archive: {e}") from e
    except KeyError:
        raise CorruptFileError(where, f"a .keras archive without {_KERAS3_WEIGHTS}") from None
    if info.compress_type == zipfile.ZIP_STORED:
        with open(where, "rb") as f:  # the member's data follows its local header (APPNOTE 4.3.7)
            f.seek(info.header_offset)
            local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise CorruptFileError(where, f"{_KERAS3_WEIGHTS}: its local zip header is missing")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        if start + info.file_size > os.path.getsize(where):
            raise CorruptFileError(where, f"{_KERAS3_WEIGHTS} runs past the end of the archive (truncated?)")
        member = _Member(where, start, info.file_size)
        return member, [member, archive]
    member = archive.open(info)
    return member, [member, archive]


@register_reader("keras", [".h5", ".hdf5", ".keras"], rules=[
    FileRule(("tf_model.h5", "tf_model-*-of-*.h5", "*.keras", "*.weights.h5", "*.h5", "*.hdf5"), priority=85)])
def open_keras(path: str | os.PathLike) -> WeightSet:
    """Open a Keras / TensorFlow HDF5 file or a ``.keras`` archive as a lazy set of its variables.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    WeightSet
        One entry per dataset (hard links, in path order), named and oriented as PyTorch names them (module
        docstring); a dataset of a dtype hubscan does not read (strings, compound, bfloat16 stored as
        opaque) is an entry skipped ``unknown dtype``. ``missing`` lists external links (not followed).

    Raises
    ------
    CorruptFileError
        Not HDF5 (or not a zip with ``model.weights.h5``), unreadable by HDF5, a dataset larger than the file
        can justify.
    UnsafeFileError
        A dataset stored in external files, or a virtual dataset.
    UnsupportedFormatError
        h5py is not installed.
    """
    where = os.fspath(path)
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError(where, "reading HDF5 / Keras files needs h5py (pip install 'hubscan[formats]')") from e
    size = os.path.getsize(where)
    with open(where, "rb") as f:
        head = f.read(SNIFF_BYTES)
    to_close: list = []
    if where.lower().endswith(".keras"):
        if head[:4] != b"PK\x03\x04":
            refuse_other_format(head, where, "not a .keras archive")
            raise CorruptFileError(where, "not a .keras archive (not a zip file)")
        source, to_close = _keras_archive(where)
    elif head[:8] != _HDF5_MAGIC:
        refuse_other_format(head, where, "not an HDF5 file")
        raise CorruptFileError(where, f"not an HDF5 file (starts with {head[:8]!r})")
    else:
        source = where
    try:
        h5 = h5py.File(source, "r")
    except (OSError, ValueError) as e:
        for c in to_close:
            c.close()
        raise CorruptFileError(where, f"HDF5 cannot read it: {' '.join(str(e).split())}") from e
    to_close.insert(0, h5)
    try:
        entries, missing = _entries(h5, where, size)
    except BaseException:
        for c in to_close:
            c.close()
        raise

    def close() -> None:
        for c in to_close:
            c.close()

    log.debug("%s: %d tensors", where, len(entries))
    return WeightSet(files=[where], format="keras", entries=lambda: iter(entries), missing=missing, close=close)


def _entries(h5, where: str, size: int) -> tuple[list[TensorEntry], list]:
    import h5py

    root = h5["model_weights"] if isinstance(h5.get("model_weights", getlink=False), h5py.Group) else h5
    keras2 = "layer_names" in root.attrs
    datasets, missing = [], []

    def walk(group, prefix: str, depth: int) -> None:
        if depth > 64:
            raise CorruptFileError(where, f"groups nested more than 64 deep at {prefix!r}")
        for key in sorted(group.keys()):
            link = group.get(key, getlink=True)
            path = f"{prefix}{key}"
            if isinstance(link, h5py.ExternalLink):
                missing.append((path, f"an external link to {link.filename}:{link.path}: not followed"))
            elif isinstance(link, h5py.HardLink):
                obj = group[key]
                if isinstance(obj, h5py.Group):
                    walk(obj, path + "/", depth + 1)
                elif isinstance(obj, h5py.Dataset):
                    datasets.append((path, obj))
    walk(root, "", 0)
    budget = memory_budget(size)
    entries = []
    for path, ds in datasets:
        if ds.external or ds.is_virtual:
            raise UnsafeFileError(where, f"dataset {path!r} keeps its data outside the file "
                                         f"({'virtual dataset' if ds.is_virtual else 'external storage'}): not read")
        shape = tuple(int(d) for d in ds.shape)
        dtype = ds.dtype.name if ds.dtype.kind in "fiub" else str(ds.dtype)
        nbytes = math.prod(shape) * ds.dtype.itemsize
        if nbytes > budget:
            raise CorruptFileError(where, f"dataset {path!r} of shape {list(shape)} {dtype} needs {nbytes:,} bytes, "
                                          f"more than a {size:,}-byte file can hold")
        if keras2 and "/" in path:
            name, kernel = tf_name_to_pt(path.split("/", 1)[1], drop_scope=True)
        else:
            name, kernel = tf_name_to_pt(path, drop_scope=False)
            kernel = kernel or (path.split("/")[-2:-1] == ["vars"] and len(shape) in (3, 4))
        perm = tf_to_pt_layout(shape) if kernel else None
        out_shape = tuple(shape[i] for i in perm) if perm else shape
        if dtype not in _DTYPES:
            entries.append(TensorEntry(name, out_shape, dtype, where, lambda: torch.empty(0),
                                       skip_reason=f"unknown dtype {dtype} (hubscan cannot decode it)", understood=False))
            continue
        entries.append(TensorEntry(name, out_shape, dtype, where, lambda ds=ds, perm=perm, path=path: _load(ds, perm, where, path)))
    names = [e.name for e in entries]
    if len(names) != len(set(names)):  # two variables mapped to one name: keep the stored paths
        entries = [TensorEntry(p, e.shape, e.dtype, e.file, e.load, skip_reason=e.skip_reason, understood=e.understood)
                   for (p, _), e in zip(datasets, entries)]
    return entries, missing


def _load(ds, perm: tuple | None, where: str, path: str) -> torch.Tensor:
    try:
        array = np.asarray(ds[()])
    except (OSError, ValueError, RuntimeError) as e:
        raise CorruptFileError(where, f"dataset {path!r} is unreadable: {' '.join(str(e).split())}") from e
    tensor = torch.from_numpy(np.ascontiguousarray(array).reshape(ds.shape))
    return tensor.permute(*perm).contiguous() if perm else tensor
