"""Which files of a model are its weights, and how a shard index maps tensors to files — decided once.

Local folders, hub listings and hub caches all go through :func:`choose_weight_files` (on a list of
paths relative to the model's root) and :func:`parse_shard_index`, so a model gives the same files, and so
the same rows, wherever it is read from.

The rule: the readers' :class:`FileRule` s (each reader declares its own with
:func:`hubscan.weights.register_reader`), by priority — lowest first, first match wins:

* below :data:`COMPONENTS` (50), rules for the files of one folder, tried at the model's root:
  10 ``model.safetensors.index.json`` (sharded), ``model.safetensors``; 20 ``model-*-of-*.safetensors``,
  ``*.safetensors``; 30 ``pytorch_model.bin.index.json``, ``pytorch_model.bin``; 40 ``pytorch_model*.bin``;
* 50 **components**: no weight file at the root, but sub-folders that hold such files (diffusers'
  ``unet/``, ``transformer/``, ``text_encoder/``, ``vae/``): each sub-folder chosen by the rules below 50
  on its own files; tensor names get the folder as prefix (``unet/conv_in.weight``);
  **modules** — a sentence-transformers model (``modules.json`` at the root) keeps the root's files (its
  transformer) and adds, as components, the module folders ``SentenceTransformer.save`` writes
  (:data:`MODULE_FOLDER`: ``2_Dense/model.safetensors`` → ``2_Dense/linear.weight``; ``1_Pooling`` holds
  none). The choice is made from paths alone (a hub listing pins a model without reading its files), so the
  folders are known by the name the library gives them, which is the ``path`` ``modules.json`` names;
* above 50, rules tried after components, at the root or (``anywhere``) in any folder, where an
  ``anywhere`` rule keeps one file set: 60 ONNX (``model.onnx``, ``onnx/model.onnx``, any ``*.onnx``;
  one graph), 70 GGUF (one model: its highest-precision file, all parts of a split file), 80 any ``*.pt``,
  ``*.pth``, ``*.ckpt``, ``*.bin``, ``*.jit`` at the root, 85 Keras / TensorFlow HDF5 and Flax msgpack
  at the root, and, by default, 90 (:data:`DEFAULT_PRIORITY`) any file of a reader that declared no rule
  of its own.

A diffusers pipeline (``model_index.json`` at the root) is read through its components even when single-file
checkpoints lie at its root too (``v1-5-pruned.safetensors``, ``sd_xl_base_1.0.safetensors``: copies of the
components, often several): each matrix is counted once, from the components; the root copies are among the
files not read (:func:`files_not_read`).

**Split files** (``<stem>-00001-of-00003.<ext>``, as ``gguf-split`` and shard writers name them) are one file
set: an ``anywhere`` rule keeps all parts of the set it chooses. **Copies** (FileRule ``copies``): files an
``anywhere`` rule finds that its reader says are one model (a GGUF repository's quantizations,
``model-Q4_K_M.gguf``, ``model-Q8_0.gguf``, ``model-F16.gguf``) are copies of it: the best-ranked set is read,
the others are listed as not read.

**Formats hubscan recognises but does not read** (:data:`UNREAD_FORMATS`: OpenVINO IR, TensorFlow Lite,
SavedModel and TF.js, Core ML, CTranslate2, rust-bert, TensorRT, PaddlePaddle, NeMo archives) are never
taken for weights (an OpenVINO ``.bin`` is not a torch file); a model with nothing else is skipped with a
reason naming the format (:class:`~hubscan.errors.UnreadFormatError`).

Trainer side files (``training_args.bin``, ``optimizer.pt`` …) are never weights, and PEFT adapter files
(``adapter_model.*``) are chosen only when nothing else is (an adapter repository).

**Variants**: ``name.<variant><suffix>`` for the suffixes a reader declares ``variants`` for (``.safetensors``,
``.bin``: ``fp16``, ``bf16``, ``fp32``, ``ema``, ``non_ema`` …, diffusers' ``variant=``) are copies of
``name<suffix>`` in another precision — diffusers also names sharded ones ``name.<variant>-00001-of-00002<suffix>``
with the index ``name<suffix>.index.<variant>.json``: when the plain file (or index, or shards) exists the
variants are dropped; else one variant is kept, full precision first (``fp32``, then ``bf16``, ``fp16``, then
the others in name order) — a model is never counted twice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import posixpath
import re
from typing import Callable, Iterable

from hubscan.errors import CorruptFileError, NoWeightsError, UnreadFormatError

__all__ = ["FileRule", "COMPONENTS", "DEFAULT_PRIORITY", "file_rules", "main_weight_files", "NOT_WEIGHT_FILES",
           "ADAPTER_FILES", "MODULES_FILE", "MODULE_FOLDER", "choose_weight_files", "component_prefix", "SPLIT",
           "UNREAD_FORMATS", "unread_formats", "files_not_read", "unread_files", "one_model", "ShardIndex",
           "parse_shard_index", "sniff_format", "refuse_other_format"]


#: Priority of the components step (diffusers sub-folders): rules below it choose within one folder.
COMPONENTS = 50
#: Priority of the rule a reader gets when it declares none: any of its files at the root, after the built-ins.
DEFAULT_PRIORITY = 90


@dataclasses.dataclass(frozen=True)
class FileRule:
    """One step of the choice of a model's weight files, declared by a reader.

    Attributes
    ----------
    patterns : tuple of str
        Glob patterns of file paths (relative to the folder the rule looks in), tried in order.
    index : str or None
        The shard index that, when present, stands for the files (``model.safetensors.index.json``).
    anywhere : bool
        Match files in sub-folders too, and keep one file set (ONNX, GGUF): the first match, with all parts
        when it is a split file (:data:`SPLIT`). Only above :data:`COMPONENTS`.
    priority : int
        Place among every reader's rules, lowest first (module docstring); not :data:`COMPONENTS`.
    format : str
        The reader's format name (filled in when the reader registers).
    copies : callable (str) -> (str or None, tuple), optional
        With ``anywhere``: a matched file's model (None for a file that is not the model itself, e.g. a
        GGUF vision projector) and its rank (lowest read first, e.g. by precision). Files of one model are
        copies: the best-ranked file set of the model with the most file sets is read.
    """

    patterns: tuple
    index: str | None = None
    anywhere: bool = False
    priority: int = DEFAULT_PRIORITY
    format: str = ""
    copies: Callable[[str], tuple] | None = None

    def check(self) -> None:
        """Raises ValueError for a rule the choice cannot place (priority at or, with ``anywhere``, below
        :data:`COMPONENTS`)."""
        if self.priority == COMPONENTS or (self.anywhere and self.priority < COMPONENTS):
            raise ValueError(f"file rule {self.patterns}: priority {self.priority} (components are {COMPONENTS}; "
                             "an anywhere rule comes after them)")
        if self.copies is not None and not self.anywhere:
            raise ValueError(f"file rule {self.patterns}: copies are chosen among the files of an anywhere rule")


def file_rules() -> tuple[FileRule, ...]:
    """Every registered reader's rules, by priority (readers in registration order within one priority)."""
    from hubscan.weights import READERS

    return tuple(sorted((r for reader in READERS.values() for r in reader.rules), key=lambda r: r.priority))


#: A sentence-transformers model's list of modules; beside it, the folders :data:`MODULE_FOLDER` names.
MODULES_FILE = "modules.json"
#: The folder ``SentenceTransformer.save`` writes a module to — ``<idx>_<module class>`` (``1_Pooling``,
#: ``2_Dense``), the ``path`` its ``modules.json`` entry names (the module saved at the root has path ``""``).
MODULE_FOLDER = re.compile(r"^\d+_[^/]+$")

NOT_WEIGHT_FILES = ("training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
                    "rng_state*.pth")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_VARIANT_ORDER = ("fp32", "bf16", "fp16")
_DIFFUSERS_STEMS = ("diffusion_pytorch_model",)  # diffusers' weight file name, treated like model.safetensors


def main_weight_files() -> tuple[str, ...]:
    """The file names a sharded rule stands for when unsharded (``model.safetensors``, ``pytorch_model.bin``):
    one of them in a folder makes the folder a model (:mod:`hubscan.sources.local`)."""
    return tuple(p for r in file_rules() if r.index for p in r.patterns if not any(c in p for c in "*?["))


def _variant_patterns() -> tuple[re.Pattern, ...]:
    """``stem.<variant>[-0000k-of-0000n].<ext>[.index.json]`` and diffusers' ``stem.<ext>.index.<variant>.json``,
    for the suffixes the readers declare variants for."""
    from hubscan.weights import READERS

    exts = sorted({v.lstrip(".") for r in READERS.values() for v in r.variants})
    alt = "|".join(map(re.escape, exts)) or "(?!)"
    return (re.compile(rf"^(?P<stem>.+)\.(?P<variant>[A-Za-z0-9_]+)(?:-\d{{5}}-of-\d{{5}})?\.(?P<ext>{alt})"
                       rf"(?:\.index\.json)?$"),
            re.compile(rf"^(?P<stem>.+)\.(?P<ext>{alt})\.index\.(?P<variant>[A-Za-z0-9_]+)\.json$"))


def _is_side_file(path: str) -> bool:
    base = posixpath.basename(path)
    return any(fnmatch.fnmatch(base, p) for p in NOT_WEIGHT_FILES) or base.startswith("adapter_model.")


def _drop_variants(names: list[str]) -> list[str]:
    """Keep one file (or index) per stem: the plain one if present, else the preferred variant."""
    groups: dict[tuple, dict[str, list[str]]] = {}
    patterns = _variant_patterns()
    for n in names:
        if (m := next((m for p in patterns if (m := p.match(n)) is not None), None)) is not None:
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
    know (``model[.variant].safetensors``), and a kept variant's index ``X.index.<variant>.json`` → ``X.index.json``
    (when no plain index is there); returns alias → real name."""
    alias = {}
    for n in names:
        a = re.sub(r"\.index\.[A-Za-z0-9_]+\.json$", ".index.json", n)
        a = n if a in names else a
        for stem in _DIFFUSERS_STEMS:
            if a.startswith(stem + "."):
                a = "model" + a[len(stem):]
            if a.startswith(stem) and a.endswith(".bin") and "." not in a[len(stem):-4]:
                a = "pytorch_model" + a[len(stem):]
        alias[a] = n
    return alias


def _choose_root(names: list[str], rules: tuple[FileRule, ...]) -> tuple[tuple[str, ...], str] | None:
    """The rules below :data:`COMPONENTS` on the files of one folder (no sub-folders): (files, format) or None."""
    alias = _normalise_diffusers(_drop_variants(names))
    for rule in rules:
        if rule.priority > COMPONENTS:
            break
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
    UnreadFormatError
        No weight file hubscan reads, but files of a format it recognises and does not read
        (:data:`UNREAD_FORMATS`; the message names the format).
    NoWeightsError
        No weight file of a known format.
    """
    from hubscan.weights import READERS, reader_for

    names = [p for p in paths if not _is_side_file(p) or posixpath.basename(p).startswith("adapter_model.")]
    top = [n for n in names if "/" not in n]
    if adapter:
        for a in ADAPTER_FILES:
            if a in top:
                return (a,), reader_for(a).name
        raise NoWeightsError(where, "no adapter_model.* file")
    rules = file_rules()
    unread = unread_formats(names)
    taken = {f for files in unread.values() for f in files}
    weights = [n for n in names if not posixpath.basename(n).startswith("adapter_model.") and n not in taken]
    root = _choose_root([n for n in weights if "/" not in n], rules)
    components, formats = [], set()
    modules = root is not None and MODULES_FILE in top and "model_index.json" not in top
    if root is None or "model_index.json" in top or modules:  # diffusers: components, not root copies
        for folder in sorted({n.split("/", 1)[0] for n in weights if n.count("/") == 1}):
            if modules and not MODULE_FOLDER.match(folder):
                continue
            got = _choose_root([n.split("/", 1)[1] for n in weights if n.startswith(folder + "/") and n.count("/") == 1],
                               rules)
            if got is not None:
                components += [f"{folder}/{f}" for f in got[0]]
                formats.add(got[1])
    if modules:  # sentence-transformers: the transformer at the root, then its other modules' weights
        return root[0] + tuple(components), "+".join(sorted({root[1], *formats}))
    if components:
        return tuple(components), "+".join(sorted(formats))
    if root is not None:
        return root
    for rule in (r for r in rules if r.priority > COMPONENTS):
        pool = weights if rule.anywhere else [n for n in weights if "/" not in n]
        for pattern in rule.patterns:
            hits = sorted(f for f in pool if fnmatch.fnmatch(f, pattern))
            if hits:
                return (_one_set(hits, rule) if rule.anywhere else tuple(hits)), rule.format
    if any(posixpath.basename(n).startswith("adapter_model.") for n in names):
        return choose_weight_files(names, where, adapter=True)
    if unread:
        raise UnreadFormatError(where, "; ".join(f"{fmt} ({', '.join(files[:3])}{' …' if len(files) > 3 else ''})"
                                                 for fmt, files in unread.items())
                                + " — a format hubscan recognises but does not read")
    raise NoWeightsError(where, f"no weight files found ({', '.join(READERS)})")


#: Parts of one split file: ``<stem>-00001-of-00003.<ext>`` (``gguf-split``, and shard writers generally).
SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})(?P<ext>\.[A-Za-z0-9_]+)$")


def _set_key(path: str) -> str:
    """The file set a path belongs to: a split part's set (``stem-*-of-N.ext`` in its folder), else the path."""
    folder, base = posixpath.split(path)
    m = SPLIT.match(base)
    return posixpath.join(folder, f"{m['stem']}-*-of-{m['count']}{m['ext']}") if m else path


def _one_set(hits: list[str], rule: FileRule) -> tuple[str, ...]:
    """The file set an ``anywhere`` rule keeps among its (sorted) hits: the first set, or, with ``copies``, the
    best-ranked set of the model with the most sets (a model of None, e.g. a projector, only when alone)."""
    if rule.copies is None:
        key = _set_key(hits[0])
        return tuple(h for h in hits if _set_key(h) == key)
    models: dict = {}
    for h in hits:
        model, rank = rule.copies(h)
        models.setdefault(model, []).append((rank, _set_key(h), h))
    model = min(models, key=lambda m: (m is None, -len({k for _, k, _ in models[m]}), m or ""))
    _, key, _ = min(models[model])
    return tuple(h for _, k, h in sorted(models[model]) if k == key)


#: Formats hubscan recognises but does not read: name → how their files are known (a glob on the file name,
#: or ``(glob, sibling glob)``: the file counts only with a sibling matching the second glob in its folder).
UNREAD_FORMATS = {
    "OpenVINO IR": (("*.xml", "{stem}.bin"),),
    "TensorFlow Lite": ("*.tflite",),
    "TensorFlow SavedModel": ("saved_model.pb", "variables.data-*-of-*", "variables.index"),
    "TensorFlow.js": (("model.json", "group*-shard*of*.bin"), ("group*-shard*of*.bin", "model.json")),
    "Core ML": ("*.mlmodel", "*.mlpackage"),
    "CTranslate2": (("model.bin", "*vocabulary.*"),),
    "rust-bert": ("*.ot",),
    "TensorRT": ("*.engine", "*.plan", "*.trt"),
    "PaddlePaddle": ("*.pdparams", "*.pdmodel", "*.pdiparams"),
    "NeMo": ("*.nemo",),
}


def unread_formats(paths: Iterable[str]) -> dict[str, list[str]]:
    """The files of formats hubscan recognises but does not read (:data:`UNREAD_FORMATS`).

    Parameters
    ----------
    paths : iterable of str
        ``/``-separated paths (a listing); a ``.mlpackage`` folder's files count as Core ML.

    Returns
    -------
    dict of str to list of str
        Format name → its files (both files of an OpenVINO ``.xml`` / ``.bin`` pair), in listing order.
    """
    paths = list(paths)
    by_folder: dict[str, list[str]] = {}
    for p in paths:
        folder, base = posixpath.split(p)
        by_folder.setdefault(folder, []).append(base)
    found: dict[str, list[str]] = {}
    for p in paths:
        folder, base = posixpath.split(p)
        for fmt, signs in UNREAD_FORMATS.items():
            for sign in signs:
                glob, sibling = sign if isinstance(sign, tuple) else (sign, None)
                in_package = glob == "*.mlpackage" and ".mlpackage/" in p
                if not (fnmatch.fnmatch(base.lower(), glob) or in_package):
                    continue
                if sibling is not None:
                    want = sibling.format(stem=posixpath.splitext(base)[0])
                    pair = [posixpath.join(folder, b) for b in by_folder[folder] if b != base and fnmatch.fnmatch(b, want)]
                    if not pair:
                        continue
                    found.setdefault(fmt, []).extend(f for f in [p, *pair] if f not in found.get(fmt, []))
                elif p not in found.get(fmt, []):
                    found.setdefault(fmt, []).append(p)
    return found


def _is_weight_like(path: str) -> bool:
    from hubscan.weights import weight_suffixes

    base = posixpath.basename(path).lower()
    return base.endswith(weight_suffixes()) and not _is_side_file(path) and not base.startswith("adapter_model.")


def files_not_read(paths: Iterable[str], chosen: Iterable[str]) -> tuple[str, ...]:
    """The weight files of a model that its choice leaves unread: copies of what is read (other formats,
    precision variants, other GGUF quantizations, single-file checkpoints beside diffusers components) and
    files of formats hubscan does not read.

    Parameters
    ----------
    paths : iterable of str
        The model's listing (``/``-separated paths relative to its root).
    chosen : iterable of str
        What :func:`choose_weight_files` chose from it.

    Returns
    -------
    tuple of str
        Sorted. Not listed: the chosen files, the shards of a chosen index (``S-*-of-*.E`` beside
        ``S.E.index.json``), the other parts of a chosen split file, Trainer side files and adapters.
    """
    paths = list(paths)
    chosen = set(chosen)
    covered = set(chosen) | {_set_key(c) for c in chosen}
    shard_globs = [posixpath.join(posixpath.dirname(c), f"{m[1]}-*-of-*.{m[2]}")
                   for c in chosen if (m := re.match(r"^(.+)\.([A-Za-z0-9_]+)\.index\.json$", posixpath.basename(c)))]
    unread = {f for files in unread_formats(paths).values() for f in files}
    return tuple(sorted(p for p in paths if (_is_weight_like(p) or p in unread) and p not in covered
                        and _set_key(p) not in covered and not any(fnmatch.fnmatch(p, g) for g in shard_globs)))


def unread_files(paths: Iterable[str], where: str = "") -> list[str]:
    """:func:`files_not_read` of a listing under its own choice (all its weight-like files when nothing is
    chosen, e.g. only an OpenVINO IR): what a model's ``files_not_read`` column holds."""
    paths = list(paths)
    try:
        chosen, _ = choose_weight_files(paths, where)
    except NoWeightsError:
        chosen = ()
    return list(files_not_read(paths, chosen))


def one_model(names: Iterable[str]) -> bool:
    """Whether files found side by side (one folder, no ``config.json``) are one model's: all parts of one
    split file, or copies of one model by an ``anywhere`` rule's ``copies`` (GGUF quantizations). The local
    source lists such a folder as one model (else each file is its own model)."""
    names = list(names)
    if not names:
        return False
    if len({_set_key(n) for n in names}) == 1:
        return True
    for rule in file_rules():
        if rule.copies is not None and all(any(fnmatch.fnmatch(n, p) for p in rule.patterns) for n in names):
            return len({rule.copies(n)[0] for n in names}) == 1
    return False


def component_prefix(path: str, chosen: Iterable[str]) -> str:
    """The tensor-name prefix of a chosen file: ``"<folder>/"`` for a component's or a module's file (a chosen
    file in a sub-folder), else ``""`` (root files, an index's shards, and the file an ``anywhere`` rule
    found, e.g. ONNX in ``onnx/``, keep their names)."""
    from hubscan.weights import READERS

    chosen = list(chosen)
    anywhere = tuple(s for r in READERS.values() if any(rule.anywhere for rule in r.rules) for s in r.suffixes)
    if any(c.lower().endswith(anywhere) for c in chosen) or "/" not in path:
        return ""
    return path.rsplit("/", 1)[0] + "/"


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
