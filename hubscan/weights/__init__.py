"""Weight readers: open a weight file, or a folder of them, as a lazy :class:`~hubscan.weights.base.WeightSet`.

Readers register themselves (as timm registers models): a reader module decorates its
``open(path) -> WeightSet`` function with :func:`register_reader`, declaring its suffixes, the rules by which
its files are found among a model's files (with their priority among the formats) and its precision
variants. :mod:`hubscan.weights.files` derives the choice of a model's weight files from these
declarations, so a new format is one new module (imported by the list at the bottom of this file, or by
the user's code: a survey imports it in its actors too).

Folders follow the Hugging Face layout: which files are read is decided by
:func:`hubscan.weights.files.choose_weight_files` (the same rule as for hub repositories: safetensors, then
``pytorch_model*.bin``, then components in sub-folders (diffusers), ONNX, GGUF, other torch files; one
precision variant; Trainer side files left out), over the folder's files and those one level below.

Sharded index
    Each tensor the index names is yielded from the shard the index points to (a path relative to the
    index's folder, sub-folders allowed; parsed by :func:`hubscan.weights.files.parse_shard_index`). A tensor whose shard is
    absent, or whose shard does not hold it, goes into ``WeightSet.missing`` with the reason. Tensors a
    shard holds that the index does not name are yielded too (the files are the truth; the index is only a
    map) unless a tensor of that name was already yielded. A corrupt shard raises, like a corrupt file.
Several files without an index
    They are read as one set, tensor names as stored. If any name occurs in more than one file (e.g. the
    folds of a cross-validated model), every name is prefixed with its file name: ``v3_fold0.pt/emb.weight``.
Components (files in sub-folders, diffusers)
    Each tensor name is prefixed with its folder: ``unet/conv_in.weight``, ``text_encoder/fc.weight``; a
    sharded component (``transformer/diffusion_pytorch_model.safetensors.index.json``) is read through its
    index, its tensors prefixed the same way (``transformer/blocks.0.attn.to_q.weight``).
Split files
    A reader may read a whole split set from one part (GGUF: ``m-00001-of-00003.gguf``); a chosen part already
    read that way is not opened again.
Config
    ``WeightSet.config`` is the model's ``config.json`` (:func:`model_config`): quantization schemes that need
    it (MLX) and module typing read it.

What the analysis sees is :func:`hubscan.weights.layouts.resolve_layouts` of a set's entries (quantization
companions folded into their weights, tied copies marked).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

from hubscan.errors import (NoWeightsError, PathNotFoundError, UnreadFormatError, UnsupportedFormatError,
                            storable, undecodable_path)
from hubscan.registry import Registry, RegistryWarning
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.files import FileRule

__all__ = ["TensorEntry", "WeightSet", "Reader", "READERS", "FileRule", "open_weights", "register_reader", "reader_for",
           "readers", "weight_suffixes", "folder_listing", "open_chosen", "model_config", "folder_config"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Reader:
    """A registered reader.

    Attributes
    ----------
    name : str
        Format name (``WeightSet.format``: ``safetensors``, ``torch`` …).
    open : callable (str) -> WeightSet
        Opens one file.
    suffixes : tuple of str
        File suffixes it reads, lower case with their dot.
    rules : tuple of FileRule
        How its files are found among a model's files (:mod:`hubscan.weights.files`), each with its
        priority among the formats' rules.
    variants : tuple of str
        Suffixes whose files also come as precision variants ``name.<variant><suffix>`` (``fp16``,
        ``bf16`` …; one of them is chosen, :func:`hubscan.weights.files.choose_weight_files`).
    """

    name: str
    open: Callable[[str], WeightSet]
    suffixes: tuple = ()
    rules: tuple = ()
    variants: tuple = ()


#: The reader registry: format name → :class:`Reader`, in registration order.
READERS: Registry[Reader] = Registry("reader")


def register_reader(name: str, suffixes: Iterable[str], *, rules: Iterable[FileRule] | None = None,
                    variants: Iterable[str] = ()) -> Callable:
    """Decorator registering ``open(path: str) -> WeightSet`` as the reader of a format.

    Parameters
    ----------
    name : str
        Format name reported in ``WeightSet.format`` (``safetensors``, ``torch`` …).
    suffixes : iterable of str
        File suffixes with their dot (``.safetensors``); matched case-insensitively.
    rules : iterable of FileRule, optional
        Which of a model's files are this format's weights, each with its priority among the other
        formats' rules (:class:`~hubscan.weights.files.FileRule`). Default: any file with one of
        ``suffixes`` at the model's root, after every built-in format
        (:data:`~hubscan.weights.files.DEFAULT_PRIORITY`).
    variants : iterable of str
        Suffixes whose files come as precision variants (``model.fp16.safetensors``).

    Warns
    -----
    hubscan.registry.RegistryWarning
        ``name`` was registered before, or a suffix is another reader's: the new reader takes it over.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    rules = tuple(rules) if rules is not None else (FileRule(tuple("*" + s for s in suffixes)),)
    for rule in rules:
        rule.check()

    def decorate(open_fn: Callable[[str], WeightSet]) -> Callable[[str], WeightSet]:
        for suffix, other in _by_suffix().items():
            if suffix in suffixes and other.name != name:
                warnings.warn(f"suffix {suffix} of reader {other.name!r} ({READERS.module_of(other.name)}) taken "
                              f"over by reader {name!r} ({open_fn.__module__})", RegistryWarning, stacklevel=2)
        named = tuple(dataclasses.replace(r, format=name) for r in rules)
        READERS.register(name, Reader(name, open_fn, suffixes, named, tuple(v.lower() for v in variants)),
                         module=open_fn.__module__)
        return open_fn

    return decorate


def _by_suffix() -> dict[str, Reader]:
    key = READERS.generation
    if _SUFFIXES.get("key") != key:
        _SUFFIXES.update(key=key, map={s: r for r in READERS.values() for s in r.suffixes})  # later readers win
    return _SUFFIXES["map"]


_SUFFIXES: dict = {}


def readers() -> dict[str, Reader]:
    """Suffix → the :class:`Reader` registered for it (a copy; :data:`READERS` is the registry by name)."""
    return dict(_by_suffix())


def weight_suffixes() -> tuple[str, ...]:
    """Every suffix a reader is registered for (``.safetensors``, ``.bin``, ``.pt`` …, ``.jit``), sorted."""
    return tuple(sorted(_by_suffix()))


def reader_for(path: str | os.PathLike) -> Reader:
    """The reader registered for a file's suffix.

    Raises
    ------
    UnsupportedFormatError
        No reader is registered for the suffix.
    """
    suffix = Path(path).suffix.lower()
    by_suffix = _by_suffix()
    if suffix not in by_suffix:
        known = ", ".join(sorted(by_suffix))
        raise UnsupportedFormatError(os.fspath(path),
                                     f"unsupported file type {suffix or '(none)'!r} (hubscan reads {known})")
    return by_suffix[suffix]


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
    UnreadFormatError
        A file, or a folder's only weights, of a format hubscan recognises but does not read (OpenVINO …).
    NoWeightsError
        No such path, a folder without weight files ("no weight files found"), or files without any weight
        tensor ("no weight tensors"); :class:`~hubscan.errors.PathNotFoundError` for a path, or a chosen file,
        whose name is not valid UTF-8 (:func:`~hubscan.errors.undecodable_path`: not read).
    CorruptFileError
        A malformed file or index.
    UnsafeFileError
        A pickle that would need globals outside the allow-list.
    """
    where = os.fspath(path)
    p = Path(path)
    if not (p.is_dir() or p.is_file()):
        from hubscan.refs import not_found_reason
        raise PathNotFoundError(storable(where), not_found_reason(where))
    if (undecodable := undecodable_path(where)) is not None:
        raise undecodable
    if p.is_dir():
        weights = _open_folder(p)
    else:
        from hubscan.weights.files import unread_formats

        for fmt in unread_formats([p.name]):
            raise UnreadFormatError(where, f"{fmt} is a format hubscan recognises but does not read")
        weights = reader_for(p).open(where)
    if next(iter(weights.entries()), None) is None:
        weights.close()
        lost = f"; the {len(weights.missing)} tensors its index names are missing" if weights.missing else ""
        raise NoWeightsError(weights.files[0] if len(weights.files) == 1 else where, "no weight tensors" + lost)
    return _count_bytes(weights)


def _count_bytes(weights: WeightSet) -> WeightSet:
    """``stats["bytes_read"]`` of a local read: the bytes of every tensor loaded (readers that
    fetch over the network count their own)."""
    if "bytes_read" in weights.stats:
        return weights
    weights.stats["bytes_read"] = 0
    entries = weights.entries

    def counted(e: TensorEntry) -> TensorEntry:
        def load():
            t = e.load()
            weights.stats["bytes_read"] += int(t.numel() * t.element_size()) if hasattr(t, "element_size") else 0
            return t
        return dataclasses.replace(e, load=load)

    weights.entries = lambda: (counted(e) for e in entries())
    return weights


def folder_listing(folder: str | os.PathLike) -> list[str]:
    """The files of a model folder and of its immediate sub-folders, as ``/``-separated relative paths
    (hidden entries left out): what :func:`~hubscan.weights.files.choose_weight_files` chooses from."""
    folder = Path(folder)
    out = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() or _unreadable(child):  # listed: opening it says what it is (a dangling link …)
            out.append(child.name)
        elif child.is_dir():
            out += [f"{child.name}/{g.name}" for g in sorted(child.iterdir())
                    if (g.is_file() or _unreadable(g)) and not g.name.startswith(".")]
    return out


def _unreadable(path: Path) -> bool:
    """A dangling link, or something there that is neither a file nor a folder (a named pipe, a socket)."""
    return (path.is_symlink() and not path.exists()) or (path.exists() and not path.is_file() and not path.is_dir())


def open_chosen(root: str | os.PathLike, chosen: Iterable[str], open_file: Callable[[str], WeightSet] | None = None,
                read_text: Callable[[str], str] | None = None) -> WeightSet:
    """Open the files :func:`~hubscan.weights.files.choose_weight_files` chose, as one set.

    Parameters
    ----------
    root : str or path
        The model's folder (local path; the chosen paths are relative to it).
    chosen : iterable of str
        The chosen paths: weight files and shard indexes (components get their folder as name prefix, a
        component's index too).
    open_file, read_text : callable, optional
        How to open one weight file / read one text file given its path relative to ``root`` (default:
        the local readers / ``Path.read_text``); a remote reader passes its own.

    Returns
    -------
    WeightSet
        ``missing`` gathers the tensors each index names that are absent.
    """
    chosen = list(chosen)
    open_file = open_file or functools.partial(_open_local, os.fspath(root))
    read_text = read_text or (lambda rel: Path(root, rel).read_text(encoding="utf-8"))

    def open_one(rel: str) -> WeightSet:
        if rel.endswith(".index.json"):
            return _open_sharded(os.path.join(os.fspath(root), rel), read_text(rel), rel, open_file)
        return open_file(rel)

    return _open_files(chosen, open_one, os.fspath(root))


def _open_local(root: str, rel: str) -> WeightSet:
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        from hubscan.refs import not_found_reason
        raise NoWeightsError(storable(path), not_found_reason(path) if os.path.lexists(path) else "no such file")
    if (undecodable := undecodable_path(path)) is not None:
        raise undecodable
    return reader_for(path).open(path)


def _open_folder(folder: Path) -> WeightSet:
    from hubscan.weights.files import choose_weight_files

    chosen, _ = choose_weight_files(folder_listing(folder), os.fspath(folder))
    weights = open_chosen(folder, chosen)
    weights.config = folder_config(folder, chosen)
    return weights


def model_config(read_json: Callable[[str], object], chosen: Iterable[str]) -> dict | None:
    """A model's ``config.json`` (``WeightSet.config``): the root's, else, for weights in sub-folders (diffusers
    components), ``{"components": {folder: its config.json}}``; None when there is none or it is not a JSON
    object (never an error: what needs it then says what it lacks).

    Parameters
    ----------
    read_json : callable (str) -> object
        Reads a JSON file given its path relative to the model's root; None when absent or unreadable.
    chosen : iterable of str
        The chosen weight files (their folders are the components).
    """
    def read(rel: str) -> dict | None:
        found = read_json(rel)
        return found if isinstance(found, dict) else None

    if (root := read("config.json")) is not None:
        return root
    subs = sorted({c.split("/", 1)[0] for c in chosen if "/" in c})
    components = {s: cfg for s in subs if (cfg := read(f"{s}/config.json")) is not None}
    return {"components": components} if components else None


def folder_config(folder: str | os.PathLike, chosen: Iterable[str]) -> dict | None:
    """:func:`model_config` of a local model folder."""
    def read_json(rel: str) -> object:
        try:
            return json.loads(Path(folder, rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    return model_config(read_json, chosen)


def _open_files(files: list[str], open_file: Callable[[str], WeightSet], root: str = "") -> WeightSet:
    """Several unindexed files as one set: components named ``<folder>/<name>``; otherwise names prefixed by
    file name if any name repeats across files. A file a reader already read with another (a split part) is
    not opened again."""
    from hubscan.weights.files import component_prefix

    sets, opened, covered = [], [], set()
    for f in files:
        if os.path.realpath(os.path.join(root, f)) in covered:
            continue
        ws = open_file(f)
        sets.append(ws)
        opened.append(f)
        covered |= {os.path.realpath(os.path.join(root, g)) for g in ws.files}
    if len(sets) == 1 and not component_prefix(opened[0], files):
        return sets[0]
    folders = [component_prefix(f, files) for f in opened]
    names = [folder + e.name for s, folder in zip(sets, folders) for e in s.entries()]
    prefix = len(names) != len(set(names))
    if prefix:
        log.info("tensor names repeat across %d files: naming tensors <file name>/<name>", len(opened))

    def entries() -> Iterator[TensorEntry]:
        for s, folder in zip(sets, folders):
            for e in s.entries():
                name = f"{Path(e.file).name}/{e.name}" if prefix else folder + e.name
                yield dataclasses.replace(e, name=name) if name != e.name else e

    missing = [(folder + name, reason) for s, folder in zip(sets, folders) for name, reason in s.missing]
    return _union(sets, entries, missing)


def _open_sharded(where: str, raw: str, index_rel: str, open_file: Callable[[str], WeightSet]) -> WeightSet:
    from hubscan.weights.files import parse_shard_index

    index = parse_shard_index(raw, where)
    folder = index_rel.rsplit("/", 1)[0] + "/" if "/" in index_rel else ""
    sets, missing, shard_of = [], [], {}
    for shard in index.shards():
        try:
            shard_set = open_file(folder + shard)
        except NoWeightsError:
            missing += index.missing(shard, None)
            continue
        present = {e.name for e in shard_set.entries()}
        missing += index.missing(shard, present)
        sets.append(shard_set)
        shard_of[id(shard_set)] = shard
    for name, reason in missing:
        log.warning("%s: tensor %s is missing: %s", where, name, reason)

    def entries() -> Iterator[TensorEntry]:
        seen = set()
        for s in sets:
            for e in s.entries():
                if index.owns(e.name, shard_of[id(s)]) and e.name not in seen:
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
from hubscan.weights import keras as _keras  # noqa: E402,F401
from hubscan.weights import flax as _flax  # noqa: E402,F401
