"""FARMS: the ESD of fixed-aspect-ratio submatrices (Hu, Goel, Killiakov & Yang, "Eigenspectrum Analysis
of Neural Networks without Aspect Ratio Bias", ICML 2025, PMLR 267:24290; arXiv 2506.06280).

The ESD's shape depends on the aspect ratio Q of W (Marchenko–Pastur), so alphas of layers of
different shapes are biased relative to each other. FARMS fixes Q: it pools the eigenvalues of a
grid of submatrices of one shape m × (Q·m) and fits the power law to that pooled ESD.

Sampling, as the authors' published code (github.com/HUST-AI-HYZ/FARMS, ``LLM_Pruning/lib/
sampling.py`` ``fixed_sampling``, their defaults in ``esd_utils_farms.net_esd_estimator_farms``):
for W of shape (rows, cols) as stored,

* m = min(num_row_samples, rows, cols) (default 100), n = ⌊m·Q⌋ (Q = 2.0); a window narrower than n
  where cols < n (the slice is cut at the matrix edge, as their slicing does);
* steps r = max(1, (rows − m) // (k − 1)), c = max(1, (cols − n) // (k − 1)) with k = 10 windows per
  dimension; windows i = 0 … min(k, max(1, (rows − m)//r + 1)) − 1 (likewise for columns), starting
  at min(i·r, rows − m) and min(j·c, cols − n);
* the pooled ESD = every window's squared singular values, sorted.

hubscan computes the windows' eigenvalues as one batched float64 Gram ``eigvalsh`` (the authors:
float32 ``svdvals`` per window) and fits the pooled ESD with its standard fit (the ``alpha``
column's, honouring ``fix_fingers``). Only 2-D matrices (dense, embedding); convolutions get null.
Checked against the authors' code on the same matrices: ``tests/test_farms.py`` docstring.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_ROW_SAMPLES = 100
Q_RATIO = 2.0
OPS_PER_DIM = 10


def farms_windows(rows: int, cols: int, num_row_samples: int = NUM_ROW_SAMPLES, q_ratio: float = Q_RATIO,
                  ops_per_dim: int = OPS_PER_DIM) -> list[tuple[int, int, int, int]]:
    """The submatrix windows (row_start, row_stop, col_start, col_stop) FARMS pools (module docstring)."""
    m = min(num_row_samples, rows, cols)
    n = int(m * q_ratio)
    r = max(1, (rows - m) // (ops_per_dim - 1))
    c = max(1, (cols - n) // (ops_per_dim - 1))
    nr = min(ops_per_dim, max(1, (rows - m) // r + 1))
    nc = min(ops_per_dim, max(1, (cols - n) // c + 1))
    out = []
    for i in range(nr):
        for j in range(nc):
            r0, c0 = min(i * r, rows - m), min(j * c, cols - n)
            # cols < n: their start is negative and Python slicing [c0:c0 + n] then counts from the end
            out.append((r0, r0 + m) + (slice(c0, c0 + n).indices(cols)[:2]))
    return out


def farms_esd(W: torch.Tensor, num_row_samples: int = NUM_ROW_SAMPLES, q_ratio: float = Q_RATIO,
              ops_per_dim: int = OPS_PER_DIM) -> tuple[np.ndarray, int]:
    """The pooled ESD of W's fixed-aspect-ratio submatrices.

    Parameters
    ----------
    W : torch.Tensor, shape (rows, cols), any float dtype
        As stored (no transposition: the windows are m rows × Q·m columns of the stored matrix).
    num_row_samples, q_ratio, ops_per_dim : int, float, int
        The authors' defaults (100, 2.0, 10).

    Returns
    -------
    (ndarray of float64, int)
        The pooled eigenvalues, ascending (windows × min(m, n) values), and the number of windows.
    """
    from hubscan.esd.eigen import gram_eigvalsh_batched

    wins = farms_windows(W.shape[0], W.shape[1], num_row_samples, q_ratio, ops_per_dim)
    mats = [W[a:b, c:d] for a, b, c, d in wins]
    evs = gram_eigvalsh_batched([m.contiguous() for m in mats], chunk=16)
    return np.sort(np.concatenate(evs)), len(wins)
