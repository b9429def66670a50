"""Local source: a weight file, a Hugging Face layout folder, or a folder of such models.

Odd folders
    A folder is walked once per real directory: symbolic links are followed after the real tree, and a
    link to a directory already walked (``self_loop -> .``, ``loop_up -> ..``) adds nothing; a link to a
    model already listed (an alias) is that model, listed once under its real path. A dangling link is
    listed, and fails to resolve with the reason (``a symbolic link to X, which does not exist``). A file or
    folder whose name is not UTF-8 is listed with its bytes escaped (``bad\\xffutf8_model``: an id that can
    be printed and stored) and fails to resolve with the reason; the other models are unaffected. An
    ONNX model's external data files (``model.onnx`` + ``weights.bin``) are part of it, not models of their own.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterator

from hubscan.errors import (HubscanError, NoWeightsError, PathNotFoundError, SeveralModelsError, storable,
                            undecodable_path)
from hubscan.refs import ModelRef, local_fingerprint, not_found_reason
from hubscan.sources import register_source

log = logging.getLogger(__name__)


def _is_weight_file(p: Path) -> bool:
    from hubscan.weights import weight_suffixes  # the readers' registry: what they read is what is listed
    from hubscan.weights.files import unread_formats  # and what they recognise but do not read (then skipped)

    return p.is_file() and (p.suffix.lower() in weight_suffixes() or bool(unread_formats([p.name])))


def _external_data(children: list[Path]) -> set[Path]:
    """The files among ``children`` (one folder's entries) that an ONNX model there names as its external
    data: part of that model, not weights of their own. The graphs are read only when the folder holds
    other weight files beside its ``.onnx`` files (a ``.bin`` may be either)."""
    models = [c for c in children if c.suffix.lower() == ".onnx" and c.is_file()]
    if not models or sum(_is_weight_file(c) for c in children) <= len(models):
        return set()
    from hubscan.weights.onnx import external_data_files

    named = set()
    for m in models:
        try:
            named |= {Path(f) for f in external_data_files(m)}
        except HubscanError:  # an unreadable graph: reading the model will say why
            continue
    return named & set(children)


def _weights(children: list[Path]) -> list[Path]:
    """The weight files among one folder's entries (ONNX external data left out)."""
    weights = [c for c in children if _is_weight_file(c)]
    return [w for w in weights if w not in _external_data(children)] if len(weights) > 1 else weights


def _is_model_dir(p: Path) -> bool:
    """One model in a folder: Hugging Face layout (config.json, a sharded index, model.safetensors /
    pytorch_model.bin), a single weight file (an ONNX model's external data files are part of it), or the
    parts / quantizations of one file (GGUF, :func:`~hubscan.weights.files.one_model`). A folder of several
    unrelated weight files is not one model: each file is."""
    from hubscan.weights.files import main_weight_files, one_model  # the rules choose_weight_files applies

    if not p.is_dir():
        return False
    children = list(p.iterdir())
    weights = _weights(children)
    if any(c.name.endswith(".index.json") or c.name == "model_index.json" for c in children):
        return True  # sharded, or a diffusers pipeline (its components in sub-folders are one model)
    if weights and ((p / "config.json").is_file() or any(c.name in main_weight_files() for c in weights)):
        return True
    return len(weights) == 1 or one_model([c.name for c in weights])


def local_metadata(path: Path) -> dict:
    """model_type / architectures from a folder's ``config.json`` when present; ``family``: the model_type,
    else :func:`local_family` of the name; ``files_not_read``: a folder's weight files its choice leaves
    unread (:func:`hubscan.weights.files.unread_files`)."""
    from hubscan.weights import folder_listing
    from hubscan.weights.files import unread_files

    cfg = path / "config.json" if path.is_dir() else path.parent / "config.json"
    meta: dict = {"library_name": None, "model_type": None, "architectures": []}
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
            meta["model_type"] = storable(data["model_type"]) if isinstance(data.get("model_type"), str) else None
            meta["architectures"] = [storable(str(a)) for a in data.get("architectures") or []]
        except (ValueError, OSError, TypeError, AttributeError):
            pass
    meta["family"] = meta["model_type"] or local_family(storable(os.fspath(path)))
    meta["files_not_read"] = unread_files(folder_listing(path), os.fspath(path)) if path.is_dir() else []
    return meta


def anchor(path: str | os.PathLike) -> tuple[str, str | None]:
    """The id and root of a single local path (``hubscan analyze PATH``, a ``list:`` line).

    A path inside the current directory gets an id relative to it (``out/hub/x.pt``, whatever way it
    was typed: ``./out/hub/x.pt``, its absolute path …) — the path a researcher sees and writes in an
    accuracy CSV. A path outside it keeps the path as given (normalised), since a relative id would start
    with ``..``.

    Returns
    -------
    (id, root)
        ``root`` is the current directory, or None when ``id`` is the path as given.
    """
    text = os.fspath(path)
    cwd = os.getcwd()
    rel = os.path.relpath(os.path.abspath(text), cwd)
    if rel != os.curdir and not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
        return rel.replace(os.sep, "/"), cwd
    return os.path.normpath(text), None


def local_family(path: str) -> str:
    """A local model's family from its name: the file name without its version / size / fold tokens,
    else its folder's name (``proteinmpnn_v_48_020.pt`` → ``proteinmpnn``, ``silero_vad_16k.safetensors``
    → ``silero_vad``, ``v3_fold0.pt`` → its folder)."""
    path = path.rstrip("/")
    stem = os.path.splitext(os.path.basename(path))[0]
    tokens = []
    for tok in stem.split("_"):
        if re.fullmatch(r"(v\d*|\d.*|fold\d*|v\d+_fold\d+)", tok.lower()):
            break
        tokens.append(tok)
    return "_".join(tokens) or os.path.basename(os.path.dirname(path)) or stem


def _pinned_root(ref: ModelRef) -> ModelRef:
    if ref.root is not None:
        return ref
    rid, root = anchor(ref.id)
    return ModelRef("local", rid, ref.revision, ref.files, root=root)


def resolve_local(ref: ModelRef) -> tuple[ModelRef, dict]:
    """Pin a local ref: the files it would read (relative to ``root``) and their fingerprint (name, size,
    mtime).

    Raises
    ------
    NoWeightsError
        No such file or folder, or no weight files in it.
    """
    ref = _pinned_root(ref)
    path = Path(ref.path)
    if not path.exists():
        raise _not_found(path)
    files = [path] if path.is_file() else sorted(c for c in path.rglob("*") if _is_weight_file(c)
                                                 or c.name.endswith(".index.json"))
    if not files:
        raise NoWeightsError(ref.path, "no weight files found")
    undecodable = [storable(os.path.relpath(f, path)) for f in files if storable(f.name) != f.name]
    if undecodable:
        raise PathNotFoundError(storable(ref.path), f"the name of {undecodable[0]} is not valid UTF-8 (shown with its "
                                                    "bytes escaped): rename it to analyze the model")
    base = ref.root or os.curdir
    rel = tuple(os.path.relpath(f, base).replace(os.sep, "/") if ref.root else os.fspath(f) for f in files)
    return ModelRef("local", ref.id, local_fingerprint(files), rel, root=ref.root), local_metadata(path)


def _not_found(path: Path) -> PathNotFoundError:
    """Why a listed path cannot be opened: a dangling link, a name listed escaped, or no such path."""
    if path.is_symlink():
        return PathNotFoundError(storable(os.fspath(path)), f"a symbolic link to {storable(os.readlink(path))}, "
                                                            "which does not exist (a dangling link)")
    listed = os.listdir(path.parent) if path.parent.is_dir() else []
    if (real := next((n for n in listed if storable(n) == path.name != n), None)) is not None:
        return undecodable_path(os.fspath(path.parent / real))
    return PathNotFoundError(storable(os.fspath(path)), not_found_reason(path))


def _one_model(ref: ModelRef) -> None:
    """Refuse a folder that :func:`list_local` would enumerate as several models (pocketnet's five folds,
    a folder of unrelated checkpoints): read as one, their layers would share one summary.

    Raises
    ------
    SeveralModelsError
        ``ref`` names such a folder; the message names the first models and the survey command.
    """
    path = Path(ref.path)
    if not path.is_dir() or _is_model_dir(path):
        return
    models = [r.id for r, _ in list_local(path)]
    if len(models) > 1:
        raise SeveralModelsError(ref.id, f"a folder of {len(models)} models ({', '.join(models[:3])}"
                                         f"{', …' if len(models) > 3 else ''}): analyze one of them, or survey the "
                                         f"folder (hubscan survey --source local:{ref.id} --out DATASET)")


def list_local(root: str | os.PathLike) -> Iterator[tuple[ModelRef, dict]]:
    """Enumerate a folder of models: the folder itself if it is one model (HF layout), else each
    weight file and each model sub-folder below it (recursively, a model folder is not entered; symbolic
    links, dangling links and names that are not UTF-8 as the module docstring says).

    Yields
    ------
    (ModelRef, dict)
        Unresolved refs: ``id`` is the path relative to ``root`` (the file or folder name when ``root``
        is itself one model; bytes that are not UTF-8 escaped), ``ModelRef.root`` the absolute root;
        metadata from ``config.json``.

    Raises
    ------
    NoWeightsError
        ``root`` does not exist.
    """
    top = Path(os.path.abspath(root))
    if not top.exists():
        raise PathNotFoundError(os.fspath(root), "no such folder")
    if _is_weight_file(top) or (_is_model_dir(top) and not any(c.is_dir() for c in top.iterdir())) \
            or (top / "config.json").is_file() or (top / "model_index.json").is_file():
        yield ModelRef("local", storable(top.name), root=str(top.parent)), local_metadata(top)
        return
    yield from _walk(top)


def _walk(top: Path) -> list[tuple[ModelRef, dict]]:
    """The models below ``top`` (module docstring, "Odd folders"): the real tree depth-first in name order,
    then what its symbolic links add."""
    found, models, folders, links = [], set(), set(), []

    def ref(path: Path) -> ModelRef:
        return ModelRef("local", storable(os.path.relpath(path, top).replace(os.sep, "/")), root=str(top))

    def add(path: Path) -> None:
        real = os.path.realpath(path)
        if real in models:
            log.info("%s: a link to a model already listed: counted once", path)
            return
        models.add(real)
        found.append((ref(path), local_metadata(path)))

    def visit(folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in folders:  # a loop, or a second way into a folder already walked
            return
        folders.add(real)
        children = sorted(c for c in folder.iterdir() if not c.name.startswith("."))
        external = _external_data(children)
        for child in children:
            if child in external:
                continue
            if child.is_symlink():
                links.append(child)
            elif storable(child.name) != child.name:  # listed, escaped; resolving it says why it cannot be read
                if _is_weight_file(child) or child.is_dir():
                    found.append((ref(child), local_metadata(child)))
            elif _is_weight_file(child) or _is_model_dir(child):
                add(child)
            elif child.is_dir():
                visit(child)

    visit(top)
    for link in links:  # grows while linked folders are walked
        if not link.exists():
            found.append((ref(link), local_metadata(link)))  # dangling: resolving it says so
        elif _is_weight_file(link) or _is_model_dir(link):
            add(link)
        elif link.is_dir():
            visit(link)
    return found


@register_source(plain=True)
class LocalSource:
    """Files and folders: ``local:PATH`` or a plain path; ``--source local:DIR`` surveys a folder of models.

    Ids are paths relative to the surveyed folder (``pocketnet/v3_fold0.pt``), so a dataset moves with
    its files and reads the same on every machine; the revision is the files' fingerprint. A single path
    (``hubscan analyze PATH``) gets an id relative to the current directory (see :func:`anchor`).
    """

    name = "local"
    spec = "local:DIR"
    filters = ()

    def parse(self, body: str) -> ModelRef:
        if not body:
            raise ValueError("empty model reference")
        return ModelRef("local", body)

    def enumerate(self, arg, *, client, limit=None):
        return itertools.islice(list_local(arg), limit)

    def resolve(self, ref, client):
        return resolve_local(ref)

    def open(self, ref, client):
        from hubscan.weights import open_weights
        ref = _pinned_root(ref)
        _one_model(ref)
        return open_weights(ref.path)

    def adapter_config(self, ref, client):
        """The ``adapter_config.json`` of a PEFT adapter — a folder whose chosen weight files are
        ``adapter_model.*``, or such a file itself (:func:`hubscan.weights.peft.is_adapter`, the hub source's
        rule too) — read from beside its files; None for any other model, and for an adapter without its
        config (logged: the factors are then analyzed as stored, as the hub source does)."""
        from hubscan.weights import folder_listing
        from hubscan.weights.files import choose_weight_files
        from hubscan.weights.peft import ADAPTER_CONFIG, LoraConfig, is_adapter

        path = Path(_pinned_root(ref).path)
        folder, chosen = (path, choose_weight_files(folder_listing(path), os.fspath(path))[0]) if path.is_dir() \
            else (path.parent, (path.name,))
        if not is_adapter(chosen):
            return None
        if not (folder / ADAPTER_CONFIG).is_file():
            log.warning("%s: no %s beside it: LoRA factors analyzed as stored, not as ΔW = s·B·A", path,
                        ADAPTER_CONFIG)
            return None
        return LoraConfig.read(folder / ADAPTER_CONFIG)

    def open_model(self, ref, client):
        """Open first (a reader's error names the file), then pin."""
        ref = _pinned_root(ref)
        ws = self.open(ref, client)
        try:
            pinned, meta = resolve_local(ref)
        except HubscanError:
            pinned, meta = ref, {}
        return ws, pinned, meta
