"""Weight normalisation (Salimans & Kingma 2016): the effective weight W = g · v / ‖v‖ is analyzed.

``torch.nn.utils.parametrizations.weight_norm`` stores a weight as its direction ``v``
(``<m>.parametrizations.weight.original1``) and magnitude ``g`` (``original0``); the older
``torch.nn.utils.weight_norm`` as ``<m>.weight_v`` and ``<m>.weight_g`` (wav2vec2 / HuBERT / WavLM
``pos_conv_embed``, HiFi-GAN and EnCodec convolutions). The module computes, for the ``dim`` it was
normalised over, ``W = g · v / ‖v‖`` with the norm taken over every other axis: ``g`` has the size of
``v`` along ``dim`` and 1 elsewhere (torch ``_weight_norm`` / ``norm_except_dim``), so the axes to reduce
are those where ``g`` has size 1. The analysis reads W, as the model uses it (and as WeightWatcher sees it
once the parametrization is removed): ``v``'s entry loads W (its row's ``reason`` says so); ``g`` keeps
its own row, skipped as a weight-norm magnitude (it is no weight matrix).
"""

from __future__ import annotations

import dataclasses
import re

import torch

from hubscan.weights.base import TensorEntry
from hubscan.weights.layouts import register_scheme

#: The layout of an effective weight, as the row's ``reason`` shows it.
LAYOUT = "weight norm: effective weight g·v/‖v‖"
_PAIRS = ((re.compile(r"^(.*)\.parametrizations\.(\w+)\.original1$"), r"\1.parametrizations.\2.original0"),
          (re.compile(r"^(.*)_v$"), r"\1_g"))


def effective_weight(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """W = g · v / ‖v‖, the norm over the axes where ``g`` has size 1 (float32).

    Parameters
    ----------
    v : torch.Tensor
        The direction, any shape.
    g : torch.Tensor
        The magnitude: ``v``'s rank with size 1 on every reduced axis, or a scalar (norm over all of v).

    Raises
    ------
    ValueError
        ``g`` does not broadcast that way against ``v``.
    """
    v, g = v.float(), g.float()
    if g.dim() == 0 or g.numel() == 1:
        g = g.reshape([1] * v.dim())
    if g.dim() != v.dim() or any(a not in (1, b) for a, b in zip(g.shape, v.shape)):
        raise ValueError(f"weight-norm magnitude of shape {tuple(g.shape)} does not fit direction {tuple(v.shape)}")
    axes = [d for d in range(v.dim()) if g.shape[d] == 1]
    return g * v / v.pow(2).sum(dim=axes, keepdim=True).sqrt()


@register_scheme("weight norm")
def fold_weight_norm(by_name: dict) -> list[TensorEntry]:
    """v's entry loading the effective weight, for each float (v, g) pair whose shapes fit; g is not
    consumed (it keeps its own row)."""
    out = []
    for name, v in by_name.items():
        for pattern, g_name in _PAIRS:
            if not pattern.match(name):
                continue
            g = by_name.get(pattern.sub(g_name, name))
            if g is None or len(v.shape) < 2 or len(g.shape) not in (0, len(v.shape)) \
                    or any(a not in (1, b) for a, b in zip(g.shape, v.shape)) \
                    or not (v.dtype.startswith(("float", "bfloat")) and g.dtype.startswith(("float", "bfloat"))):
                continue
            out.append(dataclasses.replace(v, layout=LAYOUT, load=lambda v=v, g=g: effective_weight(v.load(), g.load())))
            break
    return out
