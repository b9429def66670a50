"""Which files of a model are its weights, and how a shard index maps tensors to files — decided once.

Local folders, hub listings and hub caches all go through :func:`choose_weight_files` (on a list of
paths relative to the model's root) and :func:`parse_shard_index`, so a model gives the same files, and so
the same rows, wherever it is read from.

The rule (:data:`FILE_RULES`, first match wins; each reader declares its suffixes with
:func:`hubscan.weights.register_reader`)

1. ``model.safetensors.index.json`` (sharded), ``model.safetensors``; 2. ``model-*-of-*.safetensors``,
   ``*.safetensors``; 3. ``pytorch_model.bin.index.json``, ``pytorch_model.bin``; 4. ``pytorch_model*.bin``;
   — all at the root.
5. **Components**: no weight file at the root, but sub-folders that hold safetensors / ``.bin`` weights
   (diffusers' ``unet/``, ``transformer/``, ``text_encoder/``, ``vae/``): each sub-folder chosen by rules
   1–4 on its own files; tensor names get the folder as prefix (``unet/conv_in.weight``).
6. ONNX (``model.onnx``, ``onnx/model.onnx``, any ``*.onnx``; one graph), 7. GGUF (one file), anywhere.
8. Any ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.bin``, ``*.jit`` at the root.

Trainer side files (``training_args.bin``, ``optimizer.pt`` …) are never weights, and PEFT adapter files
(``adapter_model.*``) are chosen only when nothing else is (an adapter repository).

**Variants**: ``name.<variant>.safetensors`` / ``.bin`` (``fp16``, ``bf16``, ``fp32``, ``ema``, ``non_ema`` …,
diffusers' ``variant=``) are copies of ``name.safetensors`` in another precision: when the plain file
exists the variants are dropped; else one variant is kept, full precision first (``fp32``, then ``bf16``,
``fp16``, then the others in name order) — a model is never counted twice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import posixpath
import re
from typing import Iterable

from hubscan.errors import CorruptFileError, NoWeightsError

__all__ = ["FILE_RULES", "NOT_WEIGHT_FILES", "ADAPTER_FILES", "choose_weight_files", "component_prefix",
           "ShardIndex", "parse_shard_index", "sniff_format", "refuse_other_format"]


@dataclasses.dataclass(frozen=True)
class FileRule:
    """One step of the choice: a reader format, glob patterns of files and the index that shards them."""

    format: str
    patterns: tuple
    index: str | None = None
    anywhere: bool = False  # patterns match files in sub-folders too (ONNX, GGUF)


FILE_RULES = (
    FileRule("safetensors", ("model.safetensors",), "model.safetensors.index.json"),
    FileRule("safetensors", ("model-*-of-*.safetensors", "*.safetensors")),
    FileRule("torch", ("pytorch_model.bin",), "pytorch_model.bin.index.json"),
    FileRule("torch", ("pytorch_model-*-of-*.bin", "pytorch_model*.bin")),
    FileRule("components", ()),
    FileRule("onnx", ("model.onnx", "onnx/model.onnx", "*.onnx"), anywhere=True),
    FileRule("gguf", ("*.gguf",), anywhere=True),
    FileRule("torch", ("*.pth", "*.pt", "*.ckpt", "*.bin", "*.jit")),
)
NOT_WEIGHT_FILES = ("training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
                    "rng_state*.pth")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_VARIANT = re.compile(r"^(?P<stem>.+)\.(?P<variant>[A-Za-z0-9_]+)\.(?P<ext>safetensors|bin)(?P<index>\.index\.json)?$")
_VARIANT_ORDER = ("fp32", "bf16", "fp16")
_DIFFUSERS_STEMS = ("diffusion_pytorch_model",)  # diffusers' weight file name, treated like model.safetensors


def _is_side_file(path: str) -> bool:
    base = posixpath.basename(path)
    return any(fnmatch.fnmatch(base, p) for p in NOT_WEIGHT_FILES) or base.startswith("adapter_model.")


def _drop_variants(names: list[str]) -> list[str]:
    """Keep one file (or index) per stem: the plain one if present, else the preferred variant."""
    groups: dict[tuple, dict[str, list[str]]] = {}
    for n in names:
        if (m := _VARIANT.match(n)) is not None:
            groups.setdefault((m["stem"], m["ext"]), {}).setdefault(m["variant"], []).append(n)
    drop = set()
    for (stem, ext), variants in groups.items():
        has_plain = any(n in (f"{stem}.{ext}", f"{stem}.{ext}.index.json") or fnmatch.fnmatch(n, f"{stem}-*-of-*.{ext}")
                        for n in names)
        keep = None if has_plain else min(variants, key=lambda v: (
            _VARIANT_ORDER.index(v) if v in _VARIANT_ORDER else len(_VARIANT_ORDER), v))
        drop |= {n for v, files in variants.items() if v != keep for n in files}
    return [n for n in names if n not in drop]


def _normalise_diffusers(names: list[str]) -> dict[str, str]:
    """diffusers names (``diffusion_pytorch_model[.variant].safetensors``) → the transformers names the rules
    know (``model[.variant].safetensors``); returns alias → real name."""
    alias = {}
    for n in names:
        a = n
        for stem in _DIFFUSERS_STEMS:
            if n.startswith(stem + "."):
                a = "model" + n[len(stem):]
            if n.startswith(stem) and n.endswith(".bin") and "." not in n[len(stem):-4]:
                a = "pytorch_model" + n[len(stem):]
        alias[a] = n
    return alias


def _choose_root(names: list[str]) -> tuple[tuple[str, ...], str] | None:
    """Rules 1–4 on the files of one folder (no sub-folders): (files, format) or None."""
    alias = _normalise_diffusers(_drop_variants(names))
    for rule in FILE_RULES[:4]:
        if rule.index and rule.index in alias:
            return (alias[rule.index],), rule.format
        for pattern in rule.patterns:
            hits = sorted(alias[a] for a in alias if fnmatch.fnmatch(a, pattern) and not a.endswith(".json"))
            if hits:
                return tuple(hits), rule.format
    return None


def choose_weight_files(paths: Iterable[str], where: str = "", adapter: bool = False) -> tuple[tuple[str, ...], str]:
    """Choose a model's weight files from the paths of its repository or folder (module docstring).

    Parameters
    ----------
    paths : iterable of str
        File paths relative to the model's root, ``/``-separated (a hub listing, or a folder walked).
    where : str
        The model, for messages.
    adapter : bool
        Choose only ``adapter_model.*`` (a PEFT adapter analyzed as its own model).

    Returns
    -------
    (files, format)
        The chosen paths (an index file alone when sharded) and the format (``safetensors``, ``torch``,
        ``onnx``, ``gguf``; ``+``-joined for components of several formats).

    Raises
    ------
    NoWeightsError
        No weight file of a known format.
    """
    names = [p for p in paths if not _is_side_file(p) or posixpath.basename(p).startswith("adapter_model.")]
    top = [n for n in names if "/" not in n]
    if adapter:
        for a in ADAPTER_FILES:
            if a in top:
                return (a,), ("safetensors" if a.endswith(".safetensors") else "torch")
        raise NoWeightsError(where, "no adapter_model.* file")
    weights = [n for n in names if not posixpath.basename(n).startswith("adapter_model.")]
    root = _choose_root([n for n in weights if "/" not in n])
    if root is not None:
        return root
    components, formats = [], set()
    folders = sorted({n.split("/", 1)[0] for n in weights if n.count("/") == 1})
    for folder in folders:
        got = _choose_root([n.split("/", 1)[1] for n in weights if n.startswith(folder + "/") and n.count("/") == 1])
        if got is not None:
            components += [f"{folder}/{f}" for f in got[0]]
            formats.add(got[1])
    if components:
        return tuple(components), "+".join(sorted(formats))
    for rule in FILE_RULES[5:]:
        pool = weights if rule.anywhere else [n for n in weights if "/" not in n]
        for pattern in rule.patterns:
            hits = sorted(f for f in pool if fnmatch.fnmatch(f, pattern))
            if hits:
                return (tuple(hits[:1]) if rule.anywhere else tuple(hits)), rule.format
    if any(posixpath.basename(n).startswith("adapter_model.") for n in names):
        return choose_weight_files(names, where, adapter=True)
    raise NoWeightsError(where, "no weight files found (safetensors, pytorch_model*.bin, ONNX, GGUF, .pt …)")


def component_prefix(path: str, chosen: Iterable[str]) -> str:
    """The tensor-name prefix of a chosen file: ``"<folder>/"`` when the choice is components (rule 5),
    else ``""`` (an index's shards, ONNX in ``onnx/`` and GGUF files keep their names)."""
    chosen = list(chosen)
    if any(c.endswith((".onnx", ".gguf")) for c in chosen) or "/" not in path:
        return ""
    return path.rsplit("/", 1)[0] + "/" if all("/" in c for c in chosen) else ""


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """A sharded checkpoint's index (``*.safetensors.index.json`` / ``pytorch_model.bin.index.json``).

    Attributes
    ----------
    weight_map : dict of str to str
        Tensor name → shard path relative to the index's folder (``/``-separated; may be in a sub-folder).
    where : str
        The index file, for messages.
    """

    weight_map: dict
    where: str

    def shards(self) -> list[str]:
        """The shard paths the index names, sorted."""
        return sorted(set(self.weight_map.values()))

    def wanted(self, shard: str) -> list[str]:
        """Tensor names the index places in ``shard``."""
        return [name for name, s in self.weight_map.items() if s == shard]

    def missing(self, shard: str, present: set | None) -> list[tuple[str, str]]:
        """(name, reason) of the tensors of ``shard`` that are not there (``present`` None: shard absent)."""
        if present is None:
            return [(name, f"its shard file {shard} is absent") for name in self.wanted(shard)]
        return [(name, f"its shard file {shard} does not contain it") for name in self.wanted(shard)
                if name not in present]

    def owns(self, name: str, shard: str) -> bool:
        """Whether tensor ``name`` found in ``shard`` is the one to read (the index places it there, or the
        index does not name it: the files are the truth, the index only a map)."""
        return self.weight_map.get(name, shard) == shard


def parse_shard_index(raw: bytes | str, where: str) -> ShardIndex:
    """Parse and validate a shard index.

    Parameters
    ----------
    raw : bytes or str
        The index file's content.
    where : str
        The index file (path or URL), for messages.

    Returns
    -------
    ShardIndex

    Raises
    ------
    CorruptFileError
        Not JSON with a ``weight_map`` of tensor name → shard path, or a shard path that leaves the index's
        folder (absolute, ``..``, backslashes).
    """
    try:
        weight_map = json.loads(raw)["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptFileError(where, f"not a valid shard index (no weight_map: {e})") from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptFileError(where, "weight_map is not a mapping of tensor name to shard file name")
    for shard in set(weight_map.values()):
        norm = posixpath.normpath(shard)
        if (not shard or shard.startswith("/") or "\\" in shard or norm.startswith("..")
                or ":" in shard.split("/")[0]):
            raise CorruptFileError(where, f"shard {shard!r} is not a file name in the model folder (or below it)")
    return ShardIndex(weight_map, where)


#: Bytes :func:`sniff_format` looks at.
SNIFF_BYTES = 16


def sniff_format(head: bytes) -> str | None:
    """What a file's first bytes say it is, for the message when its suffix and its content disagree
    (a checkpoint renamed, a page saved under a weight file's name).

    Parameters
    ----------
    head : bytes
        The file's first :data:`SNIFF_BYTES` bytes (fewer for a shorter file).

    Returns
    -------
    str or None
        ``"a safetensors file"``, ``"a zip archive (a torch checkpoint?)"``, ``"a pickle (a legacy torch
        checkpoint?)"``, ``"a GGUF file"``, ``"an HDF5 file (Keras?)"``, ``"text"``; None when the bytes
        match none of these. Magic numbers: zip ``PK\\x03\\x04`` (APPNOTE 4.3.7), pickle PROTO opcode
        ``\\x80`` + protocol 2–5 (PEP 3154), ``GGUF`` (ggml's gguf.md), HDF5's 8-byte signature; a safetensors
        file starts with a little-endian u64 header length followed by ``{`` (the format's README).
    """
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (a torch checkpoint?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (a legacy torch checkpoint?)"
    if head[:4] == b"GGUF":
        return "a GGUF file"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file (Keras?)"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return None


def refuse_other_format(head: bytes, where: str, not_this: str) -> None:
    """Raise when a file's first bytes are those of another binary format (:func:`sniff_format`).

    Parameters
    ----------
    head : bytes
        The file's first :data:`SNIFF_BYTES` bytes (or fewer).
    where : str
        The file, for the message.
    not_this : str
        The message's start, e.g. ``"not a GGUF file"``.

    Raises
    ------
    CorruptFileError
        ``"<not_this>: its first bytes are those of <kind>"``; nothing for text or unknown bytes (the
        reader says what it expected).
    """
    kind = sniff_format(head)
    if kind is not None and kind != "text":
        raise CorruptFileError(where, f"{not_this}: its first bytes are those of {kind}")
