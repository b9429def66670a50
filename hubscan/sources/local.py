"""Local source: a weight file, a Hugging Face layout folder, or a folder of such models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from hubscan.errors import NoWeightsError, PathNotFoundError
from hubscan.refs import ModelRef, local_fingerprint

def _is_weight_file(p: Path) -> bool:
    from hubscan.weights import weight_suffixes  # the readers' registry: one list of what is a weight file

    return p.is_file() and p.suffix.lower() in weight_suffixes()


def _is_model_dir(p: Path) -> bool:
    """One model in a folder: Hugging Face layout (config.json, a sharded index, model.safetensors /
    pytorch_model.bin) or a single weight file. A folder of several unrelated weight files is not
    one model: each file is."""
    if not p.is_dir():
        return False
    children = list(p.iterdir())
    weights = [c for c in children if _is_weight_file(c)]
    if any(c.name.endswith(".index.json") or c.name == "model_index.json" for c in children):
        return True  # sharded, or a diffusers pipeline (its components in sub-folders are one model)
    if weights and ((p / "config.json").is_file() or any(c.name in ("model.safetensors", "pytorch_model.bin")
                                                         for c in weights)):
        return True
    return len(weights) == 1


def local_metadata(path: Path) -> dict:
    """model_type / architectures from a folder's ``config.json`` when present."""
    cfg = path / "config.json" if path.is_dir() else path.parent / "config.json"
    meta: dict = {"library_name": None, "model_type": None, "architectures": []}
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
            meta["model_type"] = data.get("model_type")
            meta["architectures"] = list(data.get("architectures") or [])
        except (ValueError, OSError):
            pass
    return meta


def resolve_local(ref: ModelRef) -> tuple[ModelRef, dict]:
    """Pin a local ref: the files it would read and their fingerprint (size + mtime).

    Raises
    ------
    NoWeightsError
        No such file or folder, or no weight files in it.
    """
    path = Path(ref.id)
    if not path.exists():
        raise PathNotFoundError(ref.id, "no such file or folder")
    files = [path] if path.is_file() else sorted(c for c in path.rglob("*") if _is_weight_file(c)
                                                 or c.name.endswith(".index.json"))
    if not files:
        raise NoWeightsError(ref.id, "no weight files found")
    return ModelRef("local", str(path), local_fingerprint(files), tuple(str(f) for f in files)), local_metadata(path)


def list_local(root: str | os.PathLike) -> Iterator[tuple[ModelRef, dict]]:
    """Enumerate a folder of models: the folder itself if it is one model (HF layout), else each
    weight file and each model sub-folder below it (recursively, a model folder is not entered).

    Yields
    ------
    (ModelRef, dict)
        Unresolved refs (``id`` = path) and metadata from ``config.json``.

    Raises
    ------
    NoWeightsError
        ``root`` does not exist.
    """
    root = Path(os.path.abspath(root))  # ids are absolute paths: the same files, the same key from any cwd
    if not root.exists():
        raise PathNotFoundError(str(root), "no such folder")
    if _is_weight_file(root) or (_is_model_dir(root) and len([c for c in root.iterdir() if c.is_dir()]) == 0) \
            or (root / "config.json").is_file() or (root / "model_index.json").is_file():
        yield ModelRef("local", str(root)), local_metadata(root)
        return
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if _is_weight_file(child):
            yield ModelRef("local", str(child)), local_metadata(child)
        elif _is_model_dir(child):
            yield ModelRef("local", str(child)), local_metadata(child)
        elif child.is_dir():
            yield from list_local(child)
