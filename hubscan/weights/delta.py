"""Fine-tune deltas: a model's tensors paired with a base model's, read as ΔW = W − W_base.

Pairing rule (WeightWatcher 0.7.7's ``base_model=`` pairs layers by name and accepts a transposed
shape; hubscan pairs by exact name and shape):

* a model tensor whose name the base also holds, with the same shape → one entry, same name, whose
  tensor is ΔW = W − W_base in float64; with the same shape transposed, ΔW = W − W_baseᵀ;
* a model tensor the base lacks, or whose shape differs → the entry with a ``skip_reason`` ("no
  tensor of this name in the base model" / "shape … differs from the base's …"): one row, skipped,
  never analyzed as a plain W among deltas (WW analyzes such layers as W, mixing W and ΔW rows);
* a base tensor the model lacks → its entry with ``skip_reason`` "only in the base model" (so every
  tensor of both models ends in exactly one row);
* a pair holding NaN or ±inf (in the model's tensor, the base's or both) → failed once read with
  :class:`~hubscan.errors.NonFiniteError` naming which (``non-finite values (NaN or inf) in the base
  model's weights``), checked before the distances' decompositions (ARPACK and LAPACK fail on them);
* a pair whose ΔW is exactly zero (a tensor the fine-tune left alone) → skipped once read,
  "unchanged from base" (:data:`UNCHANGED`): nothing to measure, nothing failed. A low-rank ΔW (a
  merged LoRA, rank r ≪ M) is analyzed: its norms, rank and lambda_max are measured, its alpha is null
  when fewer than 2 eigenvalues pass the fit's threshold ("rank collapse", :mod:`hubscan.esd.powerlaw`).

Streaming: the base's entries are listed (headers only); a base tensor is read when its partner is,
so memory stays at about one tensor of each model plus ΔW.

Distances (per pair, computed when the pair is read, into the entry's ``extras``): with ΔW and W_base
flattened to 2-D as (shape[0], −1),

* ``delta_W`` = ‖ΔW‖_F (WW ``distances(model_1, model_2)``'s ``delta_W``, method ``raw``/``euclidean``),
* ``delta_W_rel`` = ‖ΔW‖_F / ‖W_base‖_F,
* ``delta_spectral_rel`` = ‖ΔW‖₂ / ‖W_base‖₂ (largest singular values, ARPACK ``svds`` with k = 1;
  a dense SVD below 3 columns).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np
import torch

from hubscan.errors import NonFiniteError, SkippedTensor
from hubscan.weights.base import TensorEntry, WeightKind, WeightSet

#: The skip reason of a pair whose ΔW is exactly zero.
UNCHANGED = "unchanged from base"
#: Skip reasons that say the model and its base do not match (not a choice: nothing measured because of them
#: makes the model ``failed``, :meth:`hubscan.analysis.Analysis.result`).
NOT_IN_BASE = "no tensor of this name in the base model"
ONLY_IN_BASE = "only in the base model"
SHAPE_DIFFERS = "differs from the base's"  # in "shape [64, 32] differs from the base's [32, 32]"


def base_mismatch(reason: str | None) -> bool:
    """Whether a row's skip reason is a mismatch between a model and its base (a name or a shape)."""
    return bool(reason) and (reason in (NOT_IN_BASE, ONLY_IN_BASE) or SHAPE_DIFFERS in reason)


@dataclasses.dataclass(frozen=True)
class DeltaEntry(TensorEntry):
    """ΔW of one pair; ``extras`` receives the distances when the tensor is loaded."""

    extras: dict = dataclasses.field(default_factory=dict, compare=False)


def spectral_norm(X: torch.Tensor) -> float:
    """‖X‖₂, the largest singular value of X flattened to (shape[0], −1), in float64.

    Uses ARPACK (``scipy.sparse.linalg.svds``, k = 1, tol = 0: to working precision) — O(N·M) per
    iteration instead of a full SVD.
    """
    from scipy.sparse.linalg import svds

    A = X.reshape(X.shape[0], -1).to(torch.float64).numpy()
    if min(A.shape) < 3 or not np.any(A):
        return float(np.linalg.norm(A, 2)) if A.size else 0.0
    return float(svds(A, k=1, return_singular_vectors=False, solver="arpack", random_state=0)[0])


def _nonfinite_in(W: torch.Tensor, Wb: torch.Tensor) -> str:
    """What holds the NaN or ±inf of a non-finite ΔW = W − W_base: ``the weights`` (the model's, the words
    of a plain model's row), ``the base model's weights``, both, or neither (ΔW itself, float64 overflow)."""
    holders = [who for who, t in (("the weights", W), ("the base model's weights", Wb))
               if not bool(torch.isfinite(t).all())]
    return " and ".join(holders) or "ΔW = W − W_base (float64 overflow)"


def distances(delta: torch.Tensor, base: torch.Tensor) -> dict:
    """The distance columns of one pair (module docstring); NaN where W_base is zero."""
    fro_d = float(torch.linalg.vector_norm(delta.to(torch.float64)))
    fro_b = float(torch.linalg.vector_norm(base.to(torch.float64)))
    sn_b = spectral_norm(base)
    return {"delta_W": fro_d, "delta_W_rel": fro_d / fro_b if fro_b > 0 else math.nan,
            "delta_spectral_rel": spectral_norm(delta) / sn_b if sn_b > 0 else math.nan}


def open_delta(model: WeightSet, base: WeightSet) -> WeightSet:
    """Pair a model's tensors with a base model's (module docstring).

    Parameters
    ----------
    model, base : WeightSet
        Both opened (any reader, any source).

    Returns
    -------
    WeightSet
        Entries in the model's order, then the base-only tensors; ``missing`` of both; closing it
        closes both; ``format`` is ``delta:<model format>``, ``kind`` :attr:`WeightKind.DELTA`.
    """
    from hubscan.weights.layouts import resolve_layouts

    # decoded before pairing: a quantized model's ΔW is dequantized W − W_base, its scales no rows
    base_entries = {e.name: e for e in resolve_layouts(base.entries(), base.config)}
    seen = set()

    def pair(e: TensorEntry) -> TensorEntry:
        if e.skip_reason is not None or len(e.shape) < 2:
            return e  # a layout hubscan does not decode (its own skipped row), or a vector (no row)
        b = base_entries.get(e.name)
        if b is None:
            return dataclasses.replace(e, skip_reason=NOT_IN_BASE)
        shape, bshape = tuple(e.shape), tuple(b.shape)
        if bshape != shape and not (len(shape) == 2 and bshape == shape[::-1]):
            return dataclasses.replace(e, skip_reason=f"shape {list(shape)} {SHAPE_DIFFERS} {list(bshape)}")
        extras: dict = {}

        def load():
            W = e.load().to(torch.float64)
            Wb = b.load().to(torch.float64)
            if tuple(Wb.shape) != tuple(W.shape):
                Wb = Wb.T
            d = W - Wb
            if not bool(torch.isfinite(d).all()):  # before svds / LAPACK, which fail on them (text on stderr)
                raise NonFiniteError(_nonfinite_in(W, Wb))
            if not bool(torch.any(d)):
                raise SkippedTensor(e.name, UNCHANGED)
            if d.dim() >= 2:
                extras.update(distances(d, Wb))
            return d

        fields = {f.name: getattr(e, f.name) for f in dataclasses.fields(TensorEntry)}
        return DeltaEntry(**dict(fields, load=load), extras=extras)

    def entries() -> Iterator[TensorEntry]:
        for e in resolve_layouts(model.entries(), model.config):
            seen.add(e.name)
            yield pair(e)
        for name, b in base_entries.items():
            if name not in seen and not b.skip_reason and len(b.shape) >= 2:
                yield dataclasses.replace(b, skip_reason=ONLY_IN_BASE)

    def close() -> None:
        model.close()
        base.close()

    return WeightSet(files=list(model.files) + list(base.files), format="delta:" + model.format, entries=entries,
                     missing=list(model.missing) + [(f"base:{n}", r) for n, r in base.missing], close=close,
                     stats=model.stats, config=model.config, kind=WeightKind.DELTA, types=model.types)
