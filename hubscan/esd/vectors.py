"""Eigenvector localization metrics, as WeightWatcher 0.7.7's ``analyze(vectors=True)``.

For each eigenvector v of X = WᵀW (or WWᵀ, the smaller side; every slice of a conv layer), WW's
``RMT_Util`` metrics (Martin & Mahoney, arXiv 1810.01075, §5 "eigenvector localization"):

* ``loc_ratio`` = ‖v‖₁ / ‖v‖_∞ (``localization_ratio``),
* ``part_ratio`` = ‖v‖₂ / ‖v‖₄ (``participation_ratio``),
* ``vec_entropy`` = −Σ p ln p over a 100-bin ``numpy.histogram(|v| − mean|v|, density=True)``,
  p = (h + 1e-10)/√(2π) normalised to sum 1 (``discrete_entropy``).

The eigenvectors are split into the power-law tail (the ``num_pl_spikes`` largest eigenvalues, those
≥ xmin) and the bulk (the rest); per part, the mean and variance (``numpy.var``, ddof 0) of each
metric give the 12 columns ``{bulk,tail}_{mean,var}_{vec_entropy,loc_ratio,part_ratio}`` (WW's names).
WW splits by comparing its own ``eig`` eigenvalues with xmin, so an eigenvalue equal to xmin can fall
on either side by rounding; hubscan splits by count. Eigenvectors come from ``torch.linalg.eigh`` of
the float64 Gram matrix (WW: ``scipy.linalg.eig``); metrics depend on |v| only, so signs do not matter.
Cost: one more eigen-decomposition with vectors per layer (≈ 2–3× ``eigvalsh``) plus O(M²).
"""

from __future__ import annotations

import math

import numpy as np
import torch

_EPSILON = 1e-10
NAMES = ("vec_entropy", "loc_ratio", "part_ratio")
COLUMNS = tuple(f"{part}_{stat}_{name}" for part in ("bulk", "tail") for stat in ("mean", "var") for name in NAMES)


def _discrete_entropy(V: np.ndarray, bins: int = 100) -> np.ndarray:
    out = np.empty(V.shape[1])
    for j in range(V.shape[1]):
        a = np.abs(V[:, j])
        h = np.histogram(a - a.mean(), density=True, bins=bins)[0]
        p = (h + _EPSILON) / math.sqrt(2 * math.pi)
        p = p / p.sum()
        out[j] = -np.sum(p * np.log(p))
    return out


def vector_metrics(slices: torch.Tensor, num_tail: int) -> dict:
    """The 12 localization columns of one layer (module docstring).

    Parameters
    ----------
    slices : torch.Tensor, shape (rf, rows, cols)
        The layer's matrices (as given to :func:`hubscan.esd.eigen.compute_esd`, before ``eig_scale``,
        which scales eigenvalues but not eigenvectors).
    num_tail : int
        Eigenvectors in the tail: the power-law fit's ``num_pl_spikes``.

    Returns
    -------
    dict
        Column → float (NaN for an empty part).
    """
    if slices.dim() == 2:
        slices = slices.unsqueeze(0)
    evals, metrics = [], {n: [] for n in NAMES}
    for S in slices:
        S = S.to(torch.float64)
        G = S @ S.T if S.shape[0] <= S.shape[1] else S.T @ S
        ev, V = torch.linalg.eigh(G)
        V = V.numpy()
        evals.append(ev.numpy())
        metrics["vec_entropy"].append(_discrete_entropy(V))
        metrics["loc_ratio"].append(np.abs(V).sum(0) / np.abs(V).max(0))
        metrics["part_ratio"].append(np.linalg.norm(V, 2, axis=0) / np.linalg.norm(V, 4, axis=0))
    order = np.argsort(np.concatenate(evals), kind="stable")
    n = len(order)
    tail = order[n - num_tail:] if num_tail > 0 else order[:0]
    bulk = order[:n - num_tail] if num_tail > 0 else order
    out = {}
    for name in NAMES:
        data = np.concatenate(metrics[name])
        for part, ids in (("bulk", bulk), ("tail", tail)):
            out[f"{part}_mean_{name}"] = float(np.mean(data[ids])) if len(ids) else math.nan
            out[f"{part}_var_{name}"] = float(np.var(data[ids])) if len(ids) else math.nan
    return out
