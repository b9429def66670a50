"""The detX = 1 condition of SETOL and its Effective Rank Gap (ERG), as WeightWatcher 0.7.7 computes them.

SETOL (Martin & Hinrichs, "SETOL: A Semi-Empirical Theory of (Deep) Learning", arXiv 2507.17912)
predicts that in an ideal layer the eigenvalues of the power-law tail satisfy det X̃ = Π λ̃ = 1,
where λ̃ are the eigenvalues rescaled to mean 1. The tail the condition selects is compared with
the power-law tail the alpha fit selects; their difference is the ERG.

Definition (WW 0.7.7 ``apply_detX`` / ``RMT_Util.detX_constraint`` / ``rescale_eigenvalues``,
reproduced number for number), λ = the layer's pooled ESD sorted ascending, n = len(λ):

* λ̃ = λ · n / Σλ                                      (rescaled to mean 1, ``Wscale² = n/Σλ``)
* going down from the top, idx = n−1, n−2, …, 1: the first idx with Π_{j≥idx} λ̃_j < 1 gives
  ``num_ERG_spikes`` = n − idx and ``detX_idx`` = idx;
  if no idx ≥ 1 qualifies, num_ERG_spikes = n and detX_idx = 1 (WW's loop variable after the loop);
  n < 2 or λ̃_0 ≥ λ̃_{n−1} gives 0 and idx 0;
* ``detX_val`` = λ_{detX_idx} (the ESD's own units), ``detX_val_unrescaled`` = λ̃_{detX_idx}
  (WW's names, kept although they read the wrong way round: "unrescaled" is the rescaled value);
* ``ERG_gap`` = num_ERG_spikes − num_pl_spikes (num_pl_spikes of the alpha fit).

The products are taken as suffix sums of ln λ̃ (one reversed ``numpy.cumsum``; WW recomputes
``np.prod`` per idx, O(n²)): Π < 1 ⟺ Σ ln < 0. They select the same idx unless the product lies
within rounding of 1, and they cannot overflow where a product of large top eigenvalues would
(zero eigenvalues give ln 0 = −∞, i.e. a product 0 < 1, as in WW).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class DetX:
    """The detX condition of one ESD.

    Attributes
    ----------
    num_ERG_spikes : int
        Eigenvalues in the tail that satisfies det X̃ = 1 (WW's ``detX_num``).
    detX_idx : int
        Index into the ascending ESD of the tail's smallest eigenvalue.
    detX_val : float
        That eigenvalue, in the ESD's units (NaN for an empty ESD).
    detX_val_unrescaled : float
        The same eigenvalue rescaled to mean 1 (WW's name).
    """

    num_ERG_spikes: int
    detX_idx: int
    detX_val: float
    detX_val_unrescaled: float


def detx_condition(evals: np.ndarray) -> DetX:
    """Find the tail of an ESD whose rescaled determinant crosses 1.

    Parameters
    ----------
    evals : ndarray of float64, shape (n,)
        Eigenvalues sorted ascending (the pooled ESD, zeros included, as WW's ``ww_layer.evals``).
        An empty or all-zero ESD gives 0 spikes and NaN values.

    Returns
    -------
    DetX
        See the module docstring for the definition (WW 0.7.7 ``apply_detX``).
    """
    lam = np.asarray(evals, dtype=np.float64)
    n = len(lam)
    total = float(np.sum(lam))
    if n == 0 or not total > 0:  # empty or all-zero ESD: no mean-1 rescaling, no tail
        return DetX(0, 0, math.nan, math.nan)
    scale2 = (math.sqrt(n) / math.sqrt(total)) ** 2
    rescaled = scale2 * lam
    if n < 2 or not rescaled[0] < rescaled[-1]:
        num, idx = 0, 0
    else:
        with np.errstate(divide="ignore"):
            suffix = np.cumsum(np.log(rescaled)[::-1])[::-1]   # suffix[i] = ln Π_{j≥i} λ̃_j
        below = np.flatnonzero(suffix[1:] < 0.0) + 1           # candidate idx ≥ 1
        if len(below):
            idx = int(below[-1])                             # the first one met going down
            num = n - idx
        else:
            num, idx = n, 1
    return DetX(num_ERG_spikes=num, detX_idx=idx, detX_val=float(rescaled[idx] / scale2),
                detX_val_unrescaled=float(rescaled[idx]))


def erg_gap(detx: DetX, num_pl_spikes: int | None) -> float:
    """``ERG_gap`` = num_ERG_spikes − num_pl_spikes (WW 0.7.7; NaN without a power-law tail count)."""
    if num_pl_spikes is None:
        return math.nan
    return float(detx.num_ERG_spikes - int(num_pl_spikes))
