"""The 5+1 phases of training (Martin & Mahoney, "Implicit Self-Regularization in Deep Neural
Networks", JMLR 22(165), 2021, §5 and Table 3 / Fig. 11): each layer's ESD is classified as
random-like, bleeding-out, bulk+spikes, bulk-decay, heavy-tailed or rank-collapse.

The paper defines the phases by the shape of the ESD; it gives no operational thresholds. hubscan's
rules, applied in this order, use the MP bulk fit (:mod:`hubscan.esd.mp`), the power-law alpha and
the rank loss:

1. ``rank-collapse`` — "large mass at λ = 0": rank_loss ≥ ``RANK_COLLAPSE_FRAC`` (10 %) of the
   eigenvalues.
2. ``heavy-tailed`` — very heavy tail, where the MP bulk is meaningless: alpha < 2 (the paper's
   "very heavy-tailed" class, μ < 2 ↔ alpha = 1 + μ/2 < 2, §3 Table 1).
3. ``random-like`` — "ESD well fit by MP": no eigenvalue beyond λ+ plus the Tracy–Widom margin
   (num_spikes = 0).
4. ``bleeding-out`` — "random-like, excluding eigenmass just above the bulk edge": every spike lies
   within ``BLEED_RATIO`` (2×) of λ+ (lambda_max < 2 λ+).
5. ``bulk+spikes`` — "random-like plus ≥ 1 well-separated spike": spikes beyond 2 λ+, but fewer than
   ``SPIKE_FRAC`` (2 %) of the eigenvalues (a few outliers, not a tail).
6. A tail (≥ 2 % of the eigenvalues beyond the edge): ``heavy-tailed`` when alpha ≤ 4 (the paper's
   moderately heavy-tailed class, 2 ≤ alpha ≤ 4) and ``bulk-decay`` when alpha > 4 (weakly
   heavy-tailed, §5: "HT eigenmass above the bulk edge, some bulk-edge decay").

When the power-law fit failed, steps that need alpha fall through to ``bulk-decay`` for a tail;
when no MP fit is available the phase is ``unknown``.
"""

from __future__ import annotations

import math

#: The phase names, in the paper's order (+ rank-collapse).
PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed", "rank-collapse")

RANK_COLLAPSE_FRAC = 0.10
BLEED_RATIO = 2.0
SPIKE_FRAC = 0.02
HEAVY_ALPHA = 4.0
VERY_HEAVY_ALPHA = 2.0


def classify_phase(*, num_evals: int, rank_loss: int, alpha: float, num_spikes: int | None,
                   lambda_max: float, lambda_plus: float | None) -> str:
    """Classify a layer into one of the 5+1 phases (rules in the module docstring).

    Parameters
    ----------
    num_evals : int
        Eigenvalues in the ESD (M·rf).
    rank_loss : int
        Numerically zero eigenvalues.
    alpha : float
        Power-law exponent (NaN when the fit failed).
    num_spikes : int or None
        Eigenvalues beyond the MP edge plus Tracy–Widom margin (None without an MP fit).
    lambda_max, lambda_plus : float
        Largest eigenvalue and MP bulk edge, same units (lambda_plus None without an MP fit).

    Returns
    -------
    str
        One of :data:`PHASES`, or ``unknown``.
    """
    if num_evals > 0 and rank_loss >= RANK_COLLAPSE_FRAC * num_evals:
        return "rank-collapse"
    has_alpha = alpha is not None and math.isfinite(alpha)
    if has_alpha and alpha < VERY_HEAVY_ALPHA:
        return "heavy-tailed"
    if num_spikes is None or lambda_plus is None or not math.isfinite(lambda_plus):
        return "unknown"
    if num_spikes == 0:
        return "random-like"
    if lambda_max < BLEED_RATIO * lambda_plus:
        return "bleeding-out"
    if num_spikes < SPIKE_FRAC * num_evals:
        return "bulk+spikes"
    if has_alpha and alpha <= HEAVY_ALPHA:
        return "heavy-tailed"
    return "bulk-decay"
