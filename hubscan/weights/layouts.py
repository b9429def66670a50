"""From the tensors a file stores to the tensors hubscan analyzes: companions folded in, ties found.

A checkpoint stores more than weight matrices. Quantized layers are a weight plus *companion* tensors
(scales, zero points, group indices, absmax …); a tied output head is the input embedding stored again
(or the same storage, in torch files); some entries cannot be read at all (a nested tensor, a dtype
hubscan does not know). :func:`resolve_layouts` takes a reader's entries (names, shapes and dtypes only:
nothing is read) and returns the entries the analysis plans rows for:

* Each registered **scheme** (:func:`register_scheme`, one per quantization layout, see
  :mod:`hubscan.weights.quantized`) folds its companions into the weight: the weight's entry loads the
  dequantized float tensor and names its companions (``TensorEntry.companions``); the companions get no
  row. A scheme that recognises a layout it does not decode marks the weight skipped
  ``quantized (<scheme>)`` with ``understood=False`` (the model is then ``incomplete``).
* Integer tensors of rank ≥ 2 left over (not int64/uint64/bool buffers) are skipped ``quantized (<dtype>)``,
  not understood.
* **Ties** (:func:`mark_ties`): entries sharing one torch storage (same bytes, offset, shape and strides)
  are one tensor; an output head (``lm_head.weight``, ``embed_out.weight``, ``output.weight``) with the
  shape and dtype of an input embedding is compared with it when read, and skipped ``tied to <name>``
  when equal. The kept copy is the input embedding (or, without one, the first in file order), so a model
  gives the same rows whether it stores a tied head once, twice, or as shared storage.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Callable, Iterable

import torch

from hubscan.errors import SkippedTensor
from hubscan.registry import Registry
from hubscan.weights.base import TensorEntry

__all__ = ["SCHEMES", "register_scheme", "schemes", "resolve_layouts", "mark_ties", "folded", "not_understood"]

log = logging.getLogger(__name__)

#: A scheme: ``fold(entries by name) -> replacement entries`` (each naming the companions it consumed);
#: a scheme registered with ``config=True`` is called ``fold(entries by name, config)``.
Scheme = Callable[..., list]

#: The quantization-scheme registry: name → fold function, in the order they run.
SCHEMES: Registry[Scheme] = Registry("quantization scheme")

_INTEGER_BUFFERS = {"int64", "uint64", "bool"}
_HEAD = re.compile(r"(^|\.)(lm_head|embed_out|output)\.weight$")
_INPUT_EMBEDDING = re.compile(r"(embed_tokens|wte|word_embeddings|tok_embeddings|token_embd|shared)\.weight$")


def register_scheme(name: str, *, config: bool = False) -> Callable[[Scheme], Scheme]:
    """Decorator registering a quantization layout's ``fold`` function under ``name``.

    ``fold(by_name)`` receives the entries not yet claimed by an earlier scheme (name → TensorEntry) and
    returns new entries for the weights it recognises, each with ``companions`` set to the names it
    folded in (those are then removed from the set). Schemes run in registration order; a name
    registered again is replaced (with a :class:`~hubscan.registry.RegistryWarning`).

    With ``config=True`` the scheme is called ``fold(by_name, config)``: ``config`` is the model's
    ``config.json`` (``WeightSet.config``, a dict) or None, for layouts whose parameters only the config
    states (MLX's bits and group size).
    """

    def decorate(fold: Scheme) -> Scheme:
        fold.needs_config = config
        return SCHEMES.register(name, fold, module=fold.__module__)

    return decorate


def schemes() -> list[str]:
    """Names of the registered schemes, in the order they run."""
    return list(SCHEMES)


def folded(entry: TensorEntry, companions: Iterable[str], shape: tuple, layout: str,
           load: Callable[[], torch.Tensor]) -> TensorEntry:
    """The entry of a weight decoded from ``entry`` and its companions.

    Parameters
    ----------
    entry : TensorEntry
        The stored weight (its ``dtype`` stays the stored one, e.g. ``int32`` or ``float8_e4m3fn``).
    companions : iterable of str
        Names of the tensors folded in.
    shape : tuple of int
        Shape of the decoded float tensor ``load`` returns.
    layout : str
        How it is decoded (``fp8 block-scaled 128×128`` …), for the row.
    load : callable () -> torch.Tensor
        Reads the stored tensors and returns the decoded float32 tensor.
    """
    return dataclasses.replace(entry, shape=tuple(int(s) for s in shape), companions=tuple(companions),
                               layout=layout, load=load)


def not_understood(entry: TensorEntry, companions: Iterable[str], reason: str) -> TensorEntry:
    """The entry of a weight in a layout hubscan recognises but does not decode: skipped with ``reason``."""
    return dataclasses.replace(entry, companions=tuple(companions), skip_reason=reason, understood=False)


def resolve_layouts(entries: Iterable[TensorEntry], config: dict | None = None) -> list[TensorEntry]:
    """The entries to plan rows for: companions folded into their weights, ties marked (module docstring).

    Parameters
    ----------
    entries : iterable of TensorEntry
        A reader's entries, in file order (only names, shapes and dtypes are looked at).
    config : dict, optional
        The model's ``config.json`` (``WeightSet.config``), for the schemes that need it.

    Returns
    -------
    list of TensorEntry
        In file order of the weights; companion entries removed (named in their weight's
        ``companions``); undecodable layouts with ``skip_reason`` and ``understood=False``.
    """
    entries = list(entries)
    replaced: dict[str, TensorEntry] = {}
    consumed: set[str] = set()
    for name, fold in SCHEMES.items():
        free = {e.name: e for e in entries if e.name not in consumed and e.name not in replaced}
        for new in (fold(free, config) if getattr(fold, "needs_config", False) else fold(free)):
            replaced[new.name] = new
            consumed.update(new.companions)
    out = []
    for e in entries:
        if e.name in consumed:
            continue
        e = replaced.get(e.name, e)
        if (e.skip_reason is None and not e.layout and len(e.shape) >= 2 and not _is_float(e.dtype)
                and e.dtype not in _INTEGER_BUFFERS):
            e = dataclasses.replace(e, skip_reason=f"quantized ({e.dtype})", understood=False)
        out.append(e)
    return mark_ties(out)


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "half", "double", "complex"))


def mark_ties(entries: list[TensorEntry]) -> list[TensorEntry]:
    """Mark tied copies (shared storage now; equal content of head and embedding when read).

    Returns
    -------
    list of TensorEntry
        Same order; a twin sharing storage gets ``skip_reason = "tied to <kept name>"``; an output head
        that may equal an input embedding gets a ``load`` that raises :class:`~hubscan.errors.SkippedTensor`
        ``tied to <name>`` when it does (checked by reading both: the embedding is read twice).
    """
    def keep_order(e: TensorEntry) -> tuple:
        return (bool(_HEAD.search(e.name)), not _INPUT_EMBEDDING.search(e.name))

    groups: dict[tuple, list[TensorEntry]] = {}
    for e in entries:
        if e.storage is not None and e.skip_reason is None:
            groups.setdefault(e.storage, []).append(e)
    tied: dict[str, str] = {}
    for group in groups.values():
        if len(group) > 1:
            kept = min(group, key=keep_order)
            tied.update({e.name: kept.name for e in group if e is not kept})
    embeddings = [e for e in entries if _INPUT_EMBEDDING.search(e.name) and e.skip_reason is None
                  and e.name not in tied]
    out = []
    for e in entries:
        if e.name in tied:
            e = dataclasses.replace(e, skip_reason=f"tied to {tied[e.name]}")
        elif _HEAD.search(e.name) and e.skip_reason is None:
            twin = next((m for m in embeddings if m.shape == e.shape and m.dtype == e.dtype and m is not e), None)
            if twin is not None:
                e = dataclasses.replace(e, load=_tie_check(e, twin))
        out.append(e)
    return out


def _tie_check(head: TensorEntry, embedding: TensorEntry) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        tensor = head.load()
        if torch.equal(tensor, embedding.load()):
            raise SkippedTensor(head.name, f"tied to {embedding.name}")
        return tensor

    return load


# The schemes register themselves on import (a new quantization layout is one more function there).
from hubscan.weights import quantized as _quantized  # noqa: E402,F401
from hubscan.weights import weight_norm as _weight_norm  # noqa: E402,F401
