"""The 5+1 phases of training (Martin & Mahoney, "Implicit Self-Regularization in Deep Neural
Networks", JMLR 22(165), 2021, §5, Table 3 / Fig. 11): each layer's ESD is classified as
random-like, bleeding-out, bulk+spikes, bulk-decay, heavy-tailed or rank-collapse.

The paper defines the phases by the shape of the ESD and gives no operational thresholds. hubscan's
rules use theory for what theory fixes and thresholds fitted on simulated ensembles of each phase
for the rest (``jobs/calibrate_phases.py`` generates :data:`hubscan.esd.ensembles.ENSEMBLES` at
1000×500, 2000×1000 and 4000×2000 with several seeds and writes the confusion matrix and the
feature ranges behind each threshold to ``docs/phases.md``). Applied in this order:

1. ``rank-collapse`` — "large mass at λ = 0": rank_loss ≥ ``RANK_COLLAPSE_FRAC`` (10 %) of the
   eigenvalues. Calibrated: 0 % on every full-rank ensemble, 50 % on the rank-M/2 one.
2. ``heavy-tailed`` (very heavy) — alpha < ``VERY_HEAVY_ALPHA`` = 2: the paper's VHT class
   (μ < 2, where its §3 Table 1 gives alpha ≈ 1 + μ/2 < 2).
3. ``random-like`` — no eigenvalue beyond the MP edge λ+ plus the Tracy–Widom margin
   (num_spikes = 0; :mod:`hubscan.esd.mp`: λ > λ+ + √(Q^(−1/2) λ+^(2/3) M^(−2/3)), WW's margin,
   the TW fluctuation scale of the largest eigenvalue of a Wishart matrix, Johnstone 2001).
4. ``heavy-tailed`` (i.i.d. heavy-tailed elements) — outliers exist and the elements of W have a
   tail index μ̂ < ``ELEMENT_MU`` = 4 (Hill estimator on the largest 1 % of |w|, Hill 1975): the
   Heavy-Tailed-MP universality classes of the paper's Table 1 (μ < 4; μ > 4 is the MP class). Such
   matrices are heavy-tailed by construction, whatever their outliers look like at a given size
   (the rule that makes ±Pareto μ = 2.5 and Student-t ν = 3 never bulk+spikes).
   Outliers of matrices with light-tailed elements come from structure (correlations, learned
   directions); for them:
5. ``bleeding-out`` — all outliers just past the edge: λ_max < ``BLEED_RATIO``·λ+ (1.6).
   Theory: a rank-one signal of strength θ above the BBP threshold (Baik–Ben Arous–Péché 2005;
   Benaych-Georges & Nadakuditi 2012) sits at λ = (1 + t²)(c + t²)/t² in units where
   λ+ = (1 + √c)² (t = θ c^(1/4), c = M/N); near the threshold it is within a few % of λ+
   (θ = 1.3, c = 1/2: 1.07 λ+). Calibrated: bleeding-out ensembles ≤ 1.2 λ+, every other one with
   outliers ≥ 2.1 λ+; 1.6 is their geometric middle.
6. ``bulk+spikes`` — outliers well separated from the bulk: at least one outlier beyond
   ``BLEED_RATIO``·λ+ and at most ``NEAR_EDGE_TOLERANCE`` (1) between the TW margin and
   ``BLEED_RATIO``·λ+ (a gap between the bulk edge and the spikes, the BBP picture of a few strong
   signals). The tolerance of one admits the largest bulk eigenvalue crossing the margin, which the
   margin (one TW scale) allows: calibrated, 2 of 15 matrices with 3 strong spikes had exactly one
   eigenvalue at 1.04 λ+; bulk-decay ensembles have ≥ 10 there.
7. Otherwise eigenmass continues from the bulk edge out to λ_max: ``heavy-tailed`` when
   alpha ≤ ``HEAVY_ALPHA`` = 1.21·4 − 0.03 = 4.81 (the authors' calibration α ≈ 1.21μ − 0.03,
   2 < μ < 3.5, evaluated at the MHT/WHT boundary μ = 4) and ``bulk-decay`` above it (the
   paper's weakly heavy-tailed shape: "HT eigenmass above the bulk edge, some bulk-edge decay").

When the power-law fit failed, the alpha rules are skipped (a continuing tail is then bulk-decay);
when no MP fit is available the phase is ``unknown``. Without ``element_mu`` (None) rule 4 is skipped.
A degenerate spectrum (zero, constant, rank-1, c·I: no tail to fit) is not classified at all: the
``phase`` metric (:mod:`hubscan.esd.metrics`) is null for it, the row's reason saying why.
"""

from __future__ import annotations

import math

import numpy as np

#: The phase names, in the paper's order (+ rank-collapse).
PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed", "rank-collapse")

RANK_COLLAPSE_FRAC = 0.10
VERY_HEAVY_ALPHA = 2.0
ELEMENT_MU = 4.0
BLEED_RATIO = 1.6
HEAVY_ALPHA = 1.21 * 4.0 - 0.03
NEAR_EDGE_TOLERANCE = 1
#: Share of the largest |w| the Hill estimator of the element tail index uses.
HILL_FRACTION = 0.01
#: Elements the estimator reads at most: larger tensors are read with a regular stride (a systematic
#: sample has the elements' distribution, so the same tail index; memory and time stay O(4M)).
HILL_MAX_ELEMS = 1 << 22


def element_tail_index(W, fraction: float = HILL_FRACTION) -> float:
    """Hill's estimator of the tail index μ of the elements |w| of a weight matrix (Hill 1975).

    μ̂ = 1 / mean(ln(x_(i) / x_(k))) over the k = ⌈fraction · n⌉ largest |w| (x_(k) the smallest of
    them). For i.i.d. Pareto(μ) elements μ̂ → μ; Gaussian elements give a large μ̂ (≈ 9 at 1 % of
    10⁶ elements). Tensors above :data:`HILL_MAX_ELEMS` elements are read with a stride.

    The k largest are selected in the stored precision (float32 for 16-bit and 8-bit floats: exact) and
    only they are widened to float64: a candidate set a ≥ t, t the (1 − 2·fraction) quantile of a 1-in-64
    subsample, holds them whenever it has k or more elements (checked; else the whole array is
    partitioned), so the selection reads each element about twice instead of sorting.

    Parameters
    ----------
    W : array-like (numpy or torch), any shape
        The weights (zeros are ignored).
    fraction : float
        Share of the elements in the tail, in (0, 1).

    Returns
    -------
    float
        μ̂ (inf when the k largest are all equal, NaN when fewer than 2 nonzero elements).
    """
    step = max(1, -(-math.prod(W.shape) // HILL_MAX_ELEMS))
    if hasattr(W, "detach"):  # torch (imported by its caller): as numpy, a view, widened only below float32
        import torch
        W = W.detach().to("cpu")
        W = (W if W.dtype in (torch.float32, torch.float64) else W.float()).numpy()
    x = np.asarray(W)
    if step > 1:
        x = x.reshape(-1)[::step]
    a = np.abs(x, order="C").reshape(-1)
    n = len(a) - int(np.count_nonzero(a == 0))  # (faster than counting nonzero floats)
    k = math.ceil(fraction * n)
    if n < 2 or k < 2:
        return math.nan
    cand = a
    if len(a) >= 4096:
        sub = a[::64]
        t = np.partition(sub, int(len(sub) * (1 - 2 * fraction)))[int(len(sub) * (1 - 2 * fraction))]
        above = a[a >= t]
        if len(above) >= k:
            cand = above
    top = np.partition(cand, len(cand) - k)[len(cand) - k:].astype(np.float64)
    mean_log = float(np.mean(np.log(top / top.min())))
    return math.inf if mean_log == 0 else 1.0 / mean_log


def classify_phase(*, evals: np.ndarray, rank_loss: int, alpha: float, num_spikes: int | None,
                   lambda_plus: float | None, element_mu: float | None = None) -> str:
    """Classify a layer into one of the 5+1 phases (rules in the module docstring).

    Parameters
    ----------
    evals : ndarray of float, shape (n,)
        The ESD, ascending.
    rank_loss : int
        Numerically zero eigenvalues.
    alpha : float
        Power-law exponent (NaN when the fit failed).
    num_spikes : int or None
        Eigenvalues beyond the MP edge plus Tracy–Widom margin (None without an MP fit).
    lambda_plus : float or None
        MP bulk edge, same units as ``evals`` (None without an MP fit).
    element_mu : float or None
        Tail index of the elements of W (:func:`element_tail_index`).

    Returns
    -------
    str
        One of :data:`PHASES`, or ``unknown``.
    """
    n = len(evals)
    if n > 0 and rank_loss >= RANK_COLLAPSE_FRAC * n:
        return "rank-collapse"
    has_alpha = alpha is not None and math.isfinite(alpha)
    if has_alpha and alpha < VERY_HEAVY_ALPHA:
        return "heavy-tailed"
    if num_spikes is None or lambda_plus is None or not math.isfinite(lambda_plus) or lambda_plus <= 0:
        return "unknown"
    if num_spikes == 0:
        return "random-like"
    if element_mu is not None and element_mu < ELEMENT_MU:
        return "heavy-tailed"
    lambda_max = float(evals[-1])
    if lambda_max < BLEED_RATIO * lambda_plus:
        return "bleeding-out"
    far = int(n - np.searchsorted(evals, BLEED_RATIO * lambda_plus, side="left"))
    if far >= 1 and num_spikes - far <= NEAR_EDGE_TOLERANCE:
        return "bulk+spikes"
    if has_alpha and alpha <= HEAVY_ALPHA:
        return "heavy-tailed"
    return "bulk-decay"
