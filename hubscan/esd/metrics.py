"""Per-layer HTSR metrics and the model summary, with WeightWatcher 0.7.7's names and definitions.

Definitions (WW ``apply_norm_metrics`` / ``apply_esd`` / ``fit_powerlaw``; Martin & Mahoney,
JMLR 22(165) 2021 and Nature Comm. 12:4122 2021), λ = the layer's pooled eigenvalues:

* norm = Σλ (squared Frobenius norm), log_norm = log10 norm
* spectral_norm = lambda_max = max λ, log_spectral_norm = log10 lambda_max
* alpha_weighted = alpha · log10 lambda_max                       (Nature Comm. 2021, eq. 5)
* log_alpha_norm = log10 Σ λᵢ^alpha over all eigenvalues           (Nature Comm. 2021, eq. 6)
  (computed as a log-sum-exp, so it does not overflow where WW's direct sum would)
* stable_rank = Σλ / λ_max
* entropy = −Σ p ln p / ln(rank), p = λ/Σλ + 1e-10, rank = matrix_rank + 1e-10 (WW ``matrix_entropy``)
* num_ERG_spikes, ERG_gap, detX_val, detX_val_unrescaled: SETOL's detX = 1 tail (:mod:`hubscan.esd.erg`,
  WW ``analyze(detX=True)`` / ``ERG=True``), always computed (O(n))
* warning: ``over-trained`` when alpha < 2, ``under-trained`` when alpha > 6 (WW thresholds)

Failed fits have alpha = NaN (stored as null) — never WW's −1 — and the summary averages the
successful fits only.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from hubscan.esd.eigen import ESD
from hubscan.esd.erg import detx_condition, erg_gap
from hubscan.esd.mp import MPFit
from hubscan.esd.powerlaw import PowerLawFit

OVER_TRAINED_THRESH = 2.0
UNDER_TRAINED_THRESH = 6.0
_EPSILON = 1e-10

#: Metrics the model summary averages (WW ``get_summary``'s list, plus num_spikes-free extras).
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                   "stable_rank", "mp_softrank", "entropy")


def _log10(v: float) -> float:
    return math.log10(v) if v > 0 else math.nan


def layer_metrics(esd: ESD, fit: PowerLawFit, mp: MPFit | None = None) -> dict:
    """The metric columns of one analyzed layer.

    Parameters
    ----------
    esd : ESD
        The layer's eigenvalues and singular-value statistics.
    fit : PowerLawFit
        Its power-law fit (may be failed: alpha-dependent metrics are then NaN).
    mp : MPFit or None
        Its MP bulk fit, when requested.

    Returns
    -------
    dict
        Column name → value (floats, ints, str); see the module docstring for definitions.
    """
    ev = esd.evals
    norm = float(ev.sum())
    lam_max = float(ev[-1])
    alpha = fit.alpha if fit.status == "success" else math.nan
    pos = ev[ev > 0]
    if math.isfinite(alpha) and len(pos):
        from scipy.special import logsumexp
        log_alpha_norm = float(logsumexp(alpha * np.log(pos)) / math.log(10))
    else:
        log_alpha_norm = math.nan
    if norm > 0:
        p = ev / norm + _EPSILON
        entropy = float(-np.sum(p * np.log(p)) / math.log(esd.matrix_rank + _EPSILON))
    else:
        entropy = math.nan
    warning = ""
    if math.isfinite(alpha):
        warning = "over-trained" if alpha < OVER_TRAINED_THRESH else (
            "under-trained" if alpha > UNDER_TRAINED_THRESH else "")
    row = {
        "alpha": alpha, "alpha_weighted": alpha * _log10(lam_max) if math.isfinite(alpha) else math.nan,
        "D": fit.D, "xmin": fit.xmin, "xmax": fit.xmax, "sigma": fit.sigma,
        "num_pl_spikes": fit.num_pl_spikes if fit.status == "success" else 0,
        "num_fit_evals": fit.num_fit_evals, "num_evals": len(ev),
        "lambda_max": lam_max, "norm": norm, "log_norm": _log10(norm),
        "spectral_norm": lam_max, "log_spectral_norm": _log10(lam_max),
        "stable_rank": norm / lam_max if lam_max > 0 else math.nan,
        "entropy": entropy, "log_alpha_norm": log_alpha_norm,
        "matrix_rank": esd.matrix_rank, "rank_loss": esd.rank_loss,
        "sv_max": esd.sv_max, "sv_min": esd.sv_min, "warning": warning,
        "fix_fingers": fit.fix_fingers, "num_fingers": fit.num_fingers, "raw_alpha": fit.raw_alpha,
        "Lambda": fit.Lambda,
    }
    detx = detx_condition(ev)
    row.update(num_ERG_spikes=detx.num_ERG_spikes,
               ERG_gap=erg_gap(detx, fit.num_pl_spikes if fit.status == "success" else None),
               detX_val=detx.detX_val, detX_val_unrescaled=detx.detX_val_unrescaled)
    if mp is not None:
        row.update(sigma_mp=mp.sigma_mp, lambda_plus=mp.lambda_plus, lambda_minus=mp.lambda_minus,
                   num_spikes=mp.num_spikes, mp_softrank=mp.mp_softrank, W_scale=mp.W_scale)
    return row


def summarize(rows: Iterable[Mapping]) -> dict:
    """Model summary: the mean of each summary metric over the layers whose fit succeeded.

    Unlike WW's ``get_summary`` (which averages failed fits in as alpha = −1), layers that were
    skipped or whose fit failed do not enter any mean. Also counts layers per status.

    Parameters
    ----------
    rows : iterable of mapping
        Layer rows as produced by :func:`hubscan.analyze.analyze`.

    Returns
    -------
    dict
        ``<metric>`` → mean (NaN when no layer succeeded), ``num_layers``, ``num_success``,
        ``num_failed``, ``num_skipped``, ``num_over_trained``, ``num_under_trained``.
    """
    rows = list(rows)
    ok = [r for r in rows if r.get("status") == "success"]
    out: dict = {}
    for m in SUMMARY_METRICS:
        vals = [float(r[m]) for r in ok if r.get(m) is not None and math.isfinite(float(r[m]))]
        out[m] = float(np.mean(vals)) if vals else math.nan
    out["num_layers"] = len(rows)
    for status in ("success", "failed", "skipped"):
        out[f"num_{status}"] = sum(1 for r in rows if r.get("status") == status)
    out["num_over_trained"] = sum(1 for r in ok if r.get("warning") == "over-trained")
    out["num_under_trained"] = sum(1 for r in ok if r.get("warning") == "under-trained")
    return out


def rand_distance(evals: np.ndarray, rand_evals: np.ndarray) -> float:
    """WW's ``rand_distance``: Jensen–Shannon distance between an ESD and the ESD of W with its
    elements shuffled.

    As WW 0.7.7 (``apply_random_esd`` → ``jensen_shannon_distance``), the two ascending eigenvalue
    vectors are each normalised to sum 1 and compared as discrete distributions:
    sqrt((KL(p‖m) + KL(q‖m))/2), m = (p + q)/2, natural log (``scipy.stats.entropy``).

    Parameters
    ----------
    evals, rand_evals : ndarray of float, shape (n,)
        Eigenvalues of W and of the shuffled W, same length.

    Returns
    -------
    float
        In [0, sqrt(ln 2)]; 0 when W is indistinguishable from its shuffle.
    """
    from scipy.stats import entropy

    p = np.sort(np.asarray(evals, dtype=np.float64))
    q = np.sort(np.asarray(rand_evals, dtype=np.float64))
    m = (p / p.sum() + q / q.sum()) / 2
    return float(math.sqrt((entropy(p, m) + entropy(q, m)) / 2))
