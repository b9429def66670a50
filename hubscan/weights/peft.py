"""LoRA adapters (PEFT layout): each adapted module read as its update ΔW = s · B·A, not as two factors.

A PEFT adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or
``adapter_model.bin``) with, per adapted module ``<m>``, the factors
``base_model.model.<m>.lora_A.weight`` (r × in) and ``…lora_B.weight`` (out × r)
(embeddings: ``lora_embedding_A`` (r × num_embeddings) and ``lora_embedding_B`` (dim × r)).

Rules
-----
* One entry per adapted module, named ``<m>.lora_BA`` (WeightWatcher 0.7.7's ``peft=True`` renames
  ``lora_A`` to ``lora_BA``), shape (out, in), whose tensor is ΔW = s · B·A in float64
  (embeddings: (s · B·A)ᵀ, shape (num_embeddings, dim), as the embedding's weight).
* Scaling s as PEFT applies it (``peft.tuners.lora.layer.LoraLayer.update_layer``):
  s = lora_alpha / r, or lora_alpha / √r with ``use_rslora``; per-module ``rank_pattern`` /
  ``alpha_pattern`` entries override r / lora_alpha for the modules whose name ends with the key
  (PEFT's ``(.*\\.)?key$`` match). **WW 0.7.7 omits s** (its ``lora_BA`` is the bare B·A):
  its eigenvalues are hubscan's divided by s²; with lora_alpha = r the two coincide.
* The entry carries ``rank`` = r: ΔW has rank ≤ r, so its ESD is the top r eigenvalues only (WW uses
  a truncated SVD with r components). N, M are those of ΔW.
* With a base model (:func:`open_adapter` ``base=``), each module also yields the adapted weight
  W + ΔW under the base weight's own name (``<m>.weight``), full ESD (WW's ``lora_W_plus_AB``);
  a module whose base weight is absent or of another shape goes into ``missing``.
* Tensors that are not LoRA factors (``modules_to_save`` copies, biases …) are yielded unchanged;
  a factor without its partner goes into ``missing`` (the model is then ``incomplete``);
  DoRA magnitude vectors are 1-D and so, like every 1-D tensor, not matrices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import torch

from hubscan.errors import CorruptFileError
from hubscan.weights.base import TensorEntry, WeightKind, WeightSet

ADAPTER_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."
_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<emb>embedding_)?(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$")


@dataclasses.dataclass(frozen=True)
class LowRankEntry(TensorEntry):
    """A tensor known to have rank ≤ ``rank`` (its ESD is its top ``rank`` eigenvalues)."""

    rank: int = 0


def is_adapter(chosen: Iterable[str]) -> bool:
    """Whether a model is a PEFT adapter, from the weight files chosen for it
    (:func:`hubscan.weights.files.choose_weight_files`): all ``adapter_model.*`` at its root. The one rule of
    every source (a hub repository, a local folder, the file ``adapter_model.safetensors`` itself): such a
    model is read as ΔW = s·B·A with the ``adapter_config.json`` beside the files; without that config its
    factors are analyzed as stored (the source says so in the log)."""
    from hubscan.weights.files import ADAPTER_FILES

    chosen = list(chosen)
    return bool(chosen) and all(f in ADAPTER_FILES for f in chosen)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """The parts of ``adapter_config.json`` that fix ΔW's scale.

    Attributes
    ----------
    r : int
        Default rank.
    lora_alpha : float
        Default alpha.
    use_rslora : bool
        Scale by alpha/√r instead of alpha/r (Kalajdzievski 2023, rsLoRA).
    rank_pattern, alpha_pattern : dict of str to number
        Per-module overrides, keyed by a module-name suffix.
    """

    r: int
    lora_alpha: float
    use_rslora: bool = False
    rank_pattern: dict = dataclasses.field(default_factory=dict)
    alpha_pattern: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "LoraConfig":
        """Read ``adapter_config.json``.

        Raises
        ------
        CorruptFileError
            Not JSON, not a LoRA adapter, or r / lora_alpha missing or not positive.
        """
        where = os.fspath(path)
        try:
            cfg = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CorruptFileError(where, f"not a readable adapter config ({e})") from e
        if not isinstance(cfg, dict):
            raise CorruptFileError(where, "not a JSON object")
        kind = str(cfg.get("peft_type", "LORA")).upper()
        if kind != "LORA":
            raise CorruptFileError(where, f"adapter type {kind} is not LoRA (hubscan reads LoRA adapters)")
        r, alpha = cfg.get("r"), cfg.get("lora_alpha")
        if not isinstance(r, int) or r <= 0 or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise CorruptFileError(where, f"r = {r!r} and lora_alpha = {alpha!r} must be positive numbers")
        return cls(r=r, lora_alpha=float(alpha), use_rslora=bool(cfg.get("use_rslora", False)),
                   rank_pattern=dict(cfg.get("rank_pattern") or {}), alpha_pattern=dict(cfg.get("alpha_pattern") or {}))

    def _override(self, pattern: dict, module: str, default):
        for key, value in pattern.items():
            if re.fullmatch(rf"(.*\.)?{key}", module):
                return value
        return default

    def rank(self, module: str) -> int:
        """r of one module (``rank_pattern`` first)."""
        return int(self._override(self.rank_pattern, module, self.r))

    def scale(self, module: str) -> float:
        """s = lora_alpha / r (``use_rslora``: lora_alpha / √r) of one module."""
        r = self.rank(module)
        alpha = float(self._override(self.alpha_pattern, module, self.lora_alpha))
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def lora_delta(A: torch.Tensor, B: torch.Tensor, scale: float, embedding: bool = False) -> torch.Tensor:
    """ΔW = scale · B·A in float64 (embedding factors: its transpose).

    Parameters
    ----------
    A : torch.Tensor, shape (r, in)
    B : torch.Tensor, shape (out, r)
    scale : float
    embedding : bool
        ``lora_embedding_A/B``: the result is (s·B·A)ᵀ, shape (num_embeddings, dim).

    Raises
    ------
    ValueError
        The inner dimensions differ.
    """
    if A.dim() != 2 or B.dim() != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(f"LoRA factors do not multiply: B {tuple(B.shape)} · A {tuple(A.shape)}")
    delta = scale * (B.to(torch.float64) @ A.to(torch.float64))
    return delta.T.contiguous() if embedding else delta


def open_adapter(adapter: WeightSet, config: LoraConfig, base: WeightSet | None = None) -> WeightSet:
    """Wrap an adapter's tensors so that each adapted module is one ΔW entry (module docstring).

    Parameters
    ----------
    adapter : WeightSet
        The adapter file(s), opened by :func:`hubscan.weights.open_weights`.
    config : LoraConfig
    base : WeightSet, optional
        The base model; adds the adapted weights W + ΔW.

    Returns
    -------
    WeightSet
        ``format`` is ``lora+<adapter format>`` and ``kind`` ``WeightKind.ADAPTER``; ``missing`` lists unpaired factors and adapted modules
        without a matching base weight. Closing it closes ``base`` too.
    """
    factors: dict[str, dict] = {}
    plain: list[TensorEntry] = []
    for e in adapter.entries():
        m = _FACTOR.match(e.name)
        if m is None:
            plain.append(e)
            continue
        module = m.group("module")
        module = module[len(_PREFIX):] if module.startswith(_PREFIX) else module
        slot = factors.setdefault(module, {"emb": bool(m.group("emb"))})
        slot[m.group("ab")] = e
    missing = list(adapter.missing)
    pairs = []
    for module, slot in factors.items():
        if "A" in slot and "B" in slot:
            pairs.append((module, slot))
        else:
            lone = slot.get("A") or slot.get("B")
            missing.append((lone.name, "LoRA factor without its partner (lora_A / lora_B)"))
    base_entries = {e.name: e for e in base.entries()} if base is not None else {}

    def base_weight(module: str) -> TensorEntry | None:
        if module + ".weight" in base_entries:
            return base_entries[module + ".weight"]
        hits = [n for n in base_entries if n.endswith("." + module + ".weight")]
        return base_entries[hits[0]] if len(hits) == 1 else None

    adapted = []
    for module, slot in pairs:
        if base is None:
            continue
        A, B, emb = slot["A"], slot["B"], slot["emb"]
        shape = (A.shape[1], B.shape[0]) if emb else (B.shape[0], A.shape[1])
        w = base_weight(module)
        if w is None:
            missing.append((module + ".weight", "adapted module has no weight in the base model"))
        elif tuple(w.shape) not in (shape, shape[::-1]):
            missing.append((w.name, f"base weight shape {tuple(w.shape)} does not fit the LoRA update {shape}"))
        else:
            adapted.append((module, slot, w))

    read: dict = {}

    def factors_of(module, slot):
        """A and B of a module, read once (ΔW and W + ΔW both use them; the factors are small: r rows)."""
        if module not in read:
            read[module] = (slot["A"].load(), slot["B"].load())
        return read[module] if base is not None else read.pop(module)

    def delta_entry(module, slot) -> LowRankEntry:
        A, B, emb = slot["A"], slot["B"], slot["emb"]
        shape = (A.shape[1], B.shape[0]) if emb else (B.shape[0], A.shape[1])
        s = config.scale(module)
        return LowRankEntry(name=module + ".lora_BA", shape=shape, dtype="float64", file=A.file,
                            load=lambda: lora_delta(*factors_of(module, slot), s, emb), rank=min(A.shape[0], *shape))

    def plus_entry(module, slot, w) -> TensorEntry:
        emb = slot["emb"]
        s = config.scale(module)

        def load():
            W = w.load().to(torch.float64)
            d = lora_delta(*factors_of(module, slot), s, emb)
            return W + (d if tuple(W.shape) == tuple(d.shape) else d.T)

        return TensorEntry(name=w.name, shape=tuple(w.shape), dtype="float64", file=w.file, load=load)

    def entries() -> Iterator[TensorEntry]:
        for e in plain:
            yield e
        for module, slot in pairs:
            yield delta_entry(module, slot)
        for module, slot, w in adapted:
            yield plus_entry(module, slot, w)

    def close() -> None:
        adapter.close()
        if base is not None:
            base.close()

    return WeightSet(files=list(adapter.files) + (list(base.files) if base is not None else []),
                     format="lora+" + adapter.format, entries=entries, missing=missing, close=close,
                     stats=adapter.stats, kind=WeightKind.ADAPTER)
