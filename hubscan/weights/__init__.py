"""Weight readers: open a weight file, or a folder of them, as a lazy :class:`~hubscan.weights.base.WeightSet`.

Readers register themselves by file suffix (as timm registers models): a reader module decorates its
``open(path) -> WeightSet`` function with :func:`register_reader` and is imported at the bottom of this
file, so a new format is one new module plus one import line.

Folders follow the Hugging Face layout. The first of these that exists is read:

1. ``model.safetensors.index.json`` (sharded safetensors), 2. ``model.safetensors``, 3. ``*.safetensors``,
4. ``pytorch_model.bin.index.json`` (sharded torch), 5. ``pytorch_model.bin``, 6. ``pytorch_model*.bin``,
7. any ``*.pt``, ``*.pth``, ``*.bin``, ``*.ckpt`` (Trainer side files such as ``training_args.bin`` or
   ``optimizer.pt`` are not weights and are left out).

Sharded index
    Each tensor the index names is yielded from the shard the index points to. A tensor whose shard is
    absent, or whose shard does not hold it, goes into ``WeightSet.missing`` with the reason. Tensors a
    shard holds that the index does not name are yielded too (the files are the truth; the index is only a
    map) unless a tensor of that name was already yielded. A corrupt shard raises, like a corrupt file.
Several files without an index
    They are read as one set, tensor names as stored. If any name occurs in more than one file (e.g. the
    folds of a cross-validated model), every name is prefixed with its file name: ``v3_fold0.pt/emb.weight``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from hubscan.errors import CorruptFileError, NoWeightsError, UnsupportedFormatError
from hubscan.weights.base import TensorEntry, WeightSet

__all__ = ["TensorEntry", "WeightSet", "open_weights", "register_reader", "reader_for", "readers"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Reader:
    """A registered reader: its format name and its ``open(path) -> WeightSet`` function."""

    name: str
    open: Callable[[str], WeightSet]


_READERS: dict[str, Reader] = {}  # lower-case suffix with its dot -> reader

_FOLDER_CANDIDATES: tuple = (  # in order of preference: an index file name, or a tuple of glob patterns
    "model.safetensors.index.json", ("model.safetensors",), ("*.safetensors",),
    "pytorch_model.bin.index.json", ("pytorch_model.bin",), ("pytorch_model*.bin",),
    ("*.pt", "*.pth", "*.bin", "*.ckpt"),
)
_NOT_WEIGHT_FILES = {"training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt"}


def register_reader(name: str, suffixes: Iterable[str]) -> Callable:
    """Decorator registering ``open(path: str) -> WeightSet`` as the reader of files with these suffixes.

    Parameters
    ----------
    name : str
        Format name reported in ``WeightSet.format`` (``safetensors``, ``torch`` …).
    suffixes : iterable of str
        File suffixes with their dot (``.safetensors``); matched case-insensitively. A suffix registered
        again is taken over by the newer reader.
    """

    def decorate(open_fn: Callable[[str], WeightSet]) -> Callable[[str], WeightSet]:
        for suffix in suffixes:
            _READERS[suffix.lower()] = Reader(name, open_fn)
        return open_fn

    return decorate


def readers() -> dict[str, Reader]:
    """The registry: suffix -> :class:`Reader` (a copy)."""
    return dict(_READERS)


def reader_for(path: str | os.PathLike) -> Reader:
    """The reader registered for a file's suffix.

    Raises
    ------
    UnsupportedFormatError
        No reader is registered for the suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _READERS:
        known = ", ".join(sorted(_READERS))
        raise UnsupportedFormatError(os.fspath(path),
                                     f"unsupported file type {suffix or '(none)'!r} (hubscan reads {known})")
    return _READERS[suffix]


def open_weights(path: str | os.PathLike) -> WeightSet:
    """Open a weight file or a model folder as a lazy set of tensors.

    Parameters
    ----------
    path : str or os.PathLike
        A weight file (suffix picks the reader) or a folder in Hugging Face layout (see module docstring).

    Returns
    -------
    WeightSet
        With at least one entry; ``missing`` lists tensors a sharded index names but that are not there.
        Use it as a context manager (or call ``close``) to release file handles.

    Raises
    ------
    UnsupportedFormatError
        Unknown file suffix, or a format hubscan refuses to read (TorchScript code).
    NoWeightsError
        No such path, a folder without weight files ("no weight files found"), or files without any weight
        tensor ("no weight tensors").
    CorruptFileError
        A malformed file or index.
    UnsafeFileError
        A pickle that would need globals outside the allow-list.
    """
    where = os.fspath(path)
    p = Path(path)
    if p.is_dir():
        weights = _open_folder(p)
    elif p.is_file():
        weights = reader_for(p).open(where)
    else:
        raise NoWeightsError(where, "no such file or folder")
    if next(iter(weights.entries()), None) is None:
        weights.close()
        lost = f"; the {len(weights.missing)} tensors its index names are missing" if weights.missing else ""
        raise NoWeightsError(weights.files[0] if len(weights.files) == 1 else where, "no weight tensors" + lost)
    return weights


def _open_folder(folder: Path) -> WeightSet:
    for candidate in _FOLDER_CANDIDATES:
        if isinstance(candidate, str):
            if (folder / candidate).is_file():
                return _open_sharded(folder / candidate)
            continue
        files = sorted({f for pattern in candidate for f in folder.glob(pattern)
                        if f.is_file() and f.name not in _NOT_WEIGHT_FILES})
        if files:
            return _open_files(files)
    raise NoWeightsError(os.fspath(folder), "no weight files found")


def _open_files(files: list[Path]) -> WeightSet:
    """Several unindexed files as one set; names prefixed by file name if any name repeats across files."""
    sets = [reader_for(f).open(os.fspath(f)) for f in files]
    if len(sets) == 1:
        return sets[0]
    names = [e.name for s in sets for e in s.entries()]
    prefix = len(names) != len(set(names))
    if prefix:
        log.info("tensor names repeat across %d files: naming tensors <file name>/<name>", len(files))

    def entries() -> Iterator[TensorEntry]:
        for s in sets:
            for e in s.entries():
                yield dataclasses.replace(e, name=f"{Path(e.file).name}/{e.name}") if prefix else e

    return _union(sets, entries, [])


def _open_sharded(index: Path) -> WeightSet:
    where = os.fspath(index)
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptFileError(where, f"not a valid shard index ({type(e).__name__}: {e})") from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptFileError(where, "weight_map is not a mapping of tensor name to shard file name")
    sets, missing = [], []
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard:
            raise CorruptFileError(where, f"shard {shard!r} is not a file name in the model folder")
        wanted = [name for name, s in weight_map.items() if s == shard]
        shard_path = index.parent / shard
        if not shard_path.is_file():
            missing += [(name, f"its shard file {shard} is absent") for name in wanted]
            continue
        shard_set = reader_for(shard_path).open(os.fspath(shard_path))
        present = {e.name for e in shard_set.entries()}
        missing += [(name, f"its shard file {shard} does not contain it") for name in wanted if name not in present]
        sets.append(shard_set)
    for name, reason in missing:
        log.warning("%s: tensor %s is missing: %s", where, name, reason)

    def entries() -> Iterator[TensorEntry]:
        seen = set()
        for s in sets:
            for e in s.entries():
                if weight_map.get(e.name, Path(e.file).name) == Path(e.file).name and e.name not in seen:
                    seen.add(e.name)
                    yield e

    return _union(sets, entries, missing)


def _union(sets: list[WeightSet], entries: Callable[[], Iterator[TensorEntry]], missing: list) -> WeightSet:
    def close() -> None:
        for s in sets:
            s.close()

    formats = sorted({s.format for s in sets})
    return WeightSet(files=[f for s in sets for f in s.files], format="+".join(formats) or "none",
                     entries=entries, missing=missing, close=close)


# Reader modules register themselves on import; a new format is one more line here.
from hubscan.weights import safetensors as _safetensors  # noqa: E402,F401
from hubscan.weights import torch_pickle as _torch_pickle  # noqa: E402,F401
from hubscan.weights import onnx as _onnx  # noqa: E402,F401
from hubscan.weights import gguf as _gguf  # noqa: E402,F401
