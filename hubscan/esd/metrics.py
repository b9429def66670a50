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

Each metric is one :func:`~hubscan.esd.registry.register_metric` entry with its function (below):
its dtype, description, whether the model summary averages it, its label and direction live there,
and the layers table, the summary, ``correlate`` and the plots are derived from them.

Failed fits have alpha = NaN (stored as null) — never WW's −1 — and the summary averages the
layers with an accepted fit only (:func:`summarize`). A degenerate spectrum (rank collapse, every
eigenvalue below the threshold, all equal: :func:`hubscan.esd.powerlaw.degenerate_reason`, which the row's
reason gives) has alpha null and phase null: no phase is guessed from a spectrum with no tail (issue 21).
``rank-collapse`` is the phase of a spectrum with a fitted tail and ≥ 10 % of its eigenvalues zero.

Units: when the eigen step scaled W by 2^−k to keep X = WᵀW in range (``ESD.scale_exp`` = k,
:mod:`hubscan.esd.eigen`), every metric is computed on the scaled spectrum and
:func:`layer_metrics` puts the units back — eigenvalue-valued metrics × 4^k, singular values × 2^k,
``W_scale`` × 2^−k (exact, or ±inf beyond float64), the log10 metrics + 2k·log10 2 (times alpha for
``alpha_weighted`` and ``log_alpha_norm``), which stay finite; the others are scale-free.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from hubscan.esd.erg import detx_condition, erg_gap
from hubscan.esd.phases import classify_phase, element_tail_index
from hubscan.esd.registry import OPTIONS, Spectrum, get_metric, metrics, register_metric, summary_metrics

if TYPE_CHECKING:  # torch-free at import: the schema reads this registry
    from hubscan.esd.eigen import ESD
    from hubscan.esd.mp import MPFit
    from hubscan.esd.powerlaw import PowerLawFit

_EPSILON = 1e-10


def _log10(v: float) -> float:
    return math.log10(v) if v > 0 else math.nan


def _alpha(s: Spectrum) -> float:
    return s.fit.alpha if s.fit.status == "success" else math.nan


def _lambda_max(s: Spectrum) -> float:
    return float(s.esd.evals[-1])


def _norm(s: Spectrum) -> float:
    return float(s.esd.evals.sum())


def _field(part: str, name: str):
    """The metric that is field ``name`` of the layer's ``fit``, ``esd``, ``mp`` fit or detX tail
    (None when that part is absent)."""
    def get(s: Spectrum):
        obj = _detx(s) if part == "detx" else getattr(s, part)
        return getattr(obj, name) if obj is not None else None
    get.__name__ = name
    return get


def _detx(s: Spectrum):
    return s.memo("detx", lambda: detx_condition(s.esd.evals))


# -- the registry's built-in entries, in column order (WW's names and definitions) ---------------

@register_metric("warning", "string", "over-trained (alpha < 2) | under-trained (alpha > 6) | ''")
def warning(s: Spectrum) -> str:
    a, spec = _alpha(s), get_metric("alpha")
    if not math.isfinite(a):
        return ""
    return "over-trained" if a < spec.warn_below else ("under-trained" if a > spec.warn_above else "")


@register_metric("phase", "string", "5+1 phase of training (Martin & Mahoney 2021); null without an MP fit")
def phase(s: Spectrum) -> str | None:
    if s.mp is None or s.fit.degenerate:  # no MP fit, or no tail (the reason says why): no phase guessed
        return None
    return classify_phase(evals=s.esd.evals, rank_loss=s.esd.rank_loss, alpha=_alpha(s),
                          num_spikes=s.mp.num_spikes, lambda_plus=s.mp.lambda_plus, element_mu=element_mu(s))


@register_metric("element_mu", "float64", "tail index of the elements |w| (Hill, largest 1%); < 4: heavy-tailed "
                 "elements (with the MP fit)")
def element_mu(s: Spectrum) -> float | None:
    if s.mp is None or s.slices is None:
        return None
    return s.memo("element_mu", lambda: element_tail_index(s.slices))


@register_metric("alpha", "float64", "power-law exponent of the ESD tail (null when the fit failed)",
                 summary=True, correlate=True, higher_is_better=False, warn_below=2.0, warn_above=6.0,
                 label="mean layer α (power-law exponent of the ESD tail; lower = heavier tail)")
def alpha(s: Spectrum) -> float:
    return _alpha(s)


@register_metric("alpha_weighted", "float64", "alpha * log10(lambda_max)", summary=True, correlate=True,
                 higher_is_better=False, label="mean weighted α = α·log10 λmax")
def alpha_weighted(s: Spectrum) -> float:
    a = _alpha(s)
    return a * _log10(_lambda_max(s)) if math.isfinite(a) else math.nan


register_metric("D", "float64", "Kolmogorov-Smirnov distance of the power-law fit")(_field("fit", "D"))
register_metric("xmin", "float64", "start of the fitted tail")(_field("fit", "xmin"))
register_metric("xmax", "float64", "largest fitted eigenvalue")(_field("fit", "xmax"))
register_metric("sigma", "float64", "standard error of alpha, (alpha-1)/sqrt(n)")(_field("fit", "sigma"))


@register_metric("num_pl_spikes", "int64", "eigenvalues >= xmin")
def num_pl_spikes(s: Spectrum) -> int:
    return s.fit.num_pl_spikes if s.fit.status == "success" else 0


register_metric("num_fit_evals", "int64", "eigenvalues > evals_thresh entering the fit")(
    _field("fit", "num_fit_evals"))


@register_metric("num_evals", "int64", "eigenvalues in the ESD, M*rf")
def num_evals(s: Spectrum) -> int:
    return len(s.esd.evals)


@register_metric("lambda_max", "float64", "largest eigenvalue")
def lambda_max(s: Spectrum) -> float:
    return _lambda_max(s)


@register_metric("norm", "float64", "sum of eigenvalues (squared Frobenius norm)")
def norm(s: Spectrum) -> float:
    return _norm(s)


@register_metric("log_norm", "float64", "log10(norm)", summary=True, correlate=True, higher_is_better=False,
                 label="mean log10 ‖W‖²_F (squared Frobenius norm)")
def log_norm(s: Spectrum) -> float:
    return _log10(_norm(s))


@register_metric("spectral_norm", "float64", "lambda_max")
def spectral_norm(s: Spectrum) -> float:
    return _lambda_max(s)


@register_metric("log_spectral_norm", "float64", "log10(lambda_max)", summary=True, correlate=True,
                 higher_is_better=False, label="mean log10 λmax (squared spectral norm)")
def log_spectral_norm(s: Spectrum) -> float:
    return _log10(_lambda_max(s))


@register_metric("log_alpha_norm", "float64", "log10(sum lambda^alpha)", summary=True, correlate=True,
                 higher_is_better=False, label="mean log10 Σ λᵢ^α (α-norm)")
def log_alpha_norm(s: Spectrum) -> float:
    a, ev = _alpha(s), s.esd.evals
    pos = ev[ev > 0]
    if not (math.isfinite(a) and len(pos)):
        return math.nan
    return _logsumexp(a * np.log(pos)) / math.log(10)


def _logsumexp(x: np.ndarray) -> float:
    """ln Σ exp(x), as ``scipy.special.logsumexp`` (1.15+) computes it — the maxima taken out of the sum:
    ln(1 + s) + ln m + x_max, s = Σ_{x < x_max} exp(x − x_max) / m, m = #maxima (Blanchard, Higham & Higham,
    IMA J. Numer. Anal. 41(4), 2021) — without its array-API dispatch (a fixed cost per layer)."""
    top = x.max()
    at_top = x == top
    m = float(np.count_nonzero(at_top))
    s = float(np.sum(np.exp(np.where(at_top, -np.inf, x) - top)))
    return float(np.log1p(s / m if s else s) + np.log(m) + top)


@register_metric("stable_rank", "float64", "norm / lambda_max", summary=True, correlate=True,
                 label="mean stable rank ‖W‖²_F / λmax")
def stable_rank(s: Spectrum) -> float:
    lam = _lambda_max(s)
    return _norm(s) / lam if lam > 0 else math.nan


@register_metric("entropy", "float64", "matrix entropy, -sum p ln p / ln rank", summary=True,
                 label="mean matrix entropy")
def entropy(s: Spectrum) -> float:
    n = _norm(s)
    if n <= 0:
        return math.nan
    p = s.esd.evals / n + _EPSILON
    return float(-np.sum(p * np.log(p)) / math.log(s.esd.matrix_rank + _EPSILON))


register_metric("matrix_rank", "int64", "numerical rank of the ESD")(_field("esd", "matrix_rank"))
register_metric("rank_loss", "int64", "numerically zero eigenvalues, summed over slices")(
    _field("esd", "rank_loss"))
register_metric("sv_max", "float64", "largest singular value (of the scaled W)")(_field("esd", "sv_max"))
register_metric("sv_min", "float64", "smallest singular value over all slices")(_field("esd", "sv_min"))
register_metric("sigma_mp", "float64", "MP scale of the mean-1 rescaled ESD (null without --mp-fit)")(
    _field("mp", "sigma_mp"))
register_metric("lambda_plus", "float64", "MP bulk edge, eigenvalue units")(_field("mp", "lambda_plus"))
register_metric("lambda_minus", "float64", "MP lower bulk edge, eigenvalue units")(_field("mp", "lambda_minus"))
register_metric("num_spikes", "int64", "eigenvalues beyond lambda_plus + Tracy-Widom margin")(
    _field("mp", "num_spikes"))
register_metric("mp_softrank", "float64", "lambda_plus / lambda_max (rescaled units)", summary=True, correlate=True,
                label="mean MP soft rank λ+ / λmax")(_field("mp", "mp_softrank"))
register_metric("W_scale", "float64", "sqrt(num_evals / norm), the MP fit's rescaling of W")(_field("mp", "W_scale"))


@register_metric("rand_distance", "float64", "Jensen-Shannon distance to the ESD of element-shuffled W",
                 correlate=True, label="mean JS distance of the ESD to that of element-shuffled W")
def _rand_distance(s: Spectrum) -> float | None:
    return rand_distance(s.esd.evals, s.rand_evals) if s.rand_evals is not None else None


register_metric("num_ERG_spikes", "int64",
                "eigenvalues of the tail whose rescaled determinant crosses 1 (SETOL detX; WW detX_num)")(
    _field("detx", "num_ERG_spikes"))


@register_metric("ERG_gap", "float64",
                 "num_ERG_spikes - num_pl_spikes (SETOL effective rank gap; null when the fit failed)")
def ERG_gap(s: Spectrum) -> float:
    return erg_gap(_detx(s), s.fit.num_pl_spikes if s.fit.status == "success" else None)


register_metric("detX_val", "float64", "smallest eigenvalue of the detX tail")(_field("detx", "detX_val"))
register_metric("detX_val_unrescaled", "float64", "the same eigenvalue rescaled to mean 1 (WW's name)")(
    _field("detx", "detX_val_unrescaled"))
register_metric("fix_fingers", "string", "'' | xmin_peak | clip_xmax")(_field("fit", "fix_fingers"))
register_metric("num_fingers", "int64", "eigenvalues clipped by clip_xmax")(_field("fit", "num_fingers"))
register_metric("raw_alpha", "float64", "alpha before clip_xmax")(_field("fit", "raw_alpha"))
register_metric("Lambda", "float64", "truncation rate of the TPL fit")(_field("fit", "Lambda"))


def __getattr__(name):  # derived from the registry (a metric registered later shows up too)
    if name == "SUMMARY_METRICS":
        return summary_metrics()
    if name == "OVER_TRAINED_THRESH":
        return get_metric("alpha").warn_below
    if name == "UNDER_TRAINED_THRESH":
        return get_metric("alpha").warn_above
    raise AttributeError(name)


def layer_metrics(esd: ESD, fit: PowerLawFit, mp: MPFit | None = None, *, mp_fit: bool | None = None,
                  rand_evals: np.ndarray | None = None, slices=None, **context) -> dict:
    """Every registered metric of one analyzed layer (:mod:`hubscan.esd.registry`).

    Parameters
    ----------
    esd : ESD
        The layer's eigenvalues (float64, ascending) and singular-value statistics.
    fit : PowerLawFit
        Its power-law fit (may be failed: alpha-dependent metrics are then NaN).
    mp : MPFit or None
        Its MP bulk fit, when computed.
    mp_fit : bool, optional
        Whether the MP fit was asked for (default: ``mp is not None``), as ``Spectrum.mp_fit``: asked for
        but absent means every eigenvalue is zero (no phase then: a degenerate spectrum).
    rand_evals : ndarray of float64, shape (len(esd.evals),), optional
        Eigenvalues of the element-shuffled W, for ``rand_distance``.
    slices : torch.Tensor, shape (rf, N, M), optional
        The matrices of the ESD, for metrics of the elements (``element_mu``).
    **context
        ``options``, ``tensor``, ``part`` of the :class:`~hubscan.esd.registry.Spectrum` (metrics behind an
        analysis option need them).

    Returns
    -------
    dict
        Metric name → value (float, int, str or None), one key per registered metric, in
        registration order; see the module docstring for definitions.
    """
    spec = Spectrum(esd=esd, fit=fit, mp=mp, mp_fit=mp is not None if mp_fit is None else mp_fit,
                    rand_evals=rand_evals, slices=slices, **context)
    options = context.get("options")
    on: dict = {}  # option → whether its metrics run (looked up once a layer, not once a metric)
    out = {}
    for m in metrics().values():
        if m.option is not None:
            if m.option not in on:
                on[m.option] = options is not None and OPTIONS[m.option].on(getattr(options, m.option))
            if not on[m.option]:
                out[m.name] = None
                continue
        out[m.name] = m.compute(spec)
    if esd.scale_exp:
        _restore_units(out, esd.scale_exp)
    return out


#: How a metric changes when W is multiplied by 2^k: × 2^(p·k) for these p (eigenvalues: 2) ...
_POWER_OF_SCALE = {"lambda_max": 2, "norm": 2, "spectral_norm": 2, "xmin": 2, "xmax": 2, "lambda_plus": 2,
                   "lambda_minus": 2, "detX_val": 2, "sv_max": 1, "sv_min": 1, "W_scale": -1}
#: ... and + p·k·log10(2) (times alpha where named) for these log10 metrics.
_LOG_OF_SCALE = {"log_norm": (2, False), "log_spectral_norm": (2, False), "alpha_weighted": (2, True),
                 "log_alpha_norm": (2, True)}


def _restore_units(out: dict, k: int) -> None:
    """The metrics of a spectrum computed on W·2^−k, in the units of W (module docstring, "Units")."""
    with np.errstate(over="ignore", under="ignore"):
        for name, p in _POWER_OF_SCALE.items():
            if out.get(name) is not None:
                out[name] = float(np.ldexp(out[name], p * k))
    alpha = out.get("alpha")
    for name, (p, times_alpha) in _LOG_OF_SCALE.items():
        if out.get(name) is not None:
            out[name] += p * k * math.log10(2) * (alpha if times_alpha else 1.0)


def in_mean(row: Mapping, min_fit_evals: int) -> bool:
    """Whether a layer enters the model's means: measured (``success``), with an alpha fitted on at least
    ``min_fit_evals`` eigenvalues (a degenerate spectrum has none; a fit on fewer, e.g. the 2 of a rank-2
    matrix, is kept in the row with a caution but not averaged)."""
    a, n = row.get("alpha"), row.get("num_fit_evals")
    return (row.get("status") == "success" and a is not None and math.isfinite(float(a))
            and (n or 0) >= min_fit_evals)


def summarize(rows: Iterable[Mapping], min_fit_evals: int | None = None) -> dict:
    """Model summary: the mean of each summary metric over the layers with an accepted fit (:func:`in_mean`).

    Unlike WW's ``get_summary`` (which averages failed fits in as alpha = −1), layers that were
    skipped or failed, degenerate spectra (alpha null) and fits on fewer than ``min_fit_evals``
    eigenvalues do not enter any mean, so every mean is over the same layers. Also counts layers per status.

    Parameters
    ----------
    rows : iterable of mapping
        Layer rows as produced by :func:`hubscan.analyze`.
    min_fit_evals : int, optional
        Fewest eigenvalues above the threshold a fit needs to enter the means: the analysis's
        ``min_evals`` (default :data:`hubscan.esd.matrices.DEFAULT_MIN_EVALS`, WW's 8).

    Returns
    -------
    dict
        ``<metric>`` → mean (NaN when no layer is averaged), ``num_layers``, ``num_success``,
        ``num_failed``, ``num_skipped``, ``num_over_trained``, ``num_under_trained`` (of the averaged layers).
    """
    if min_fit_evals is None:
        from hubscan.esd.matrices import DEFAULT_MIN_EVALS  # imports torch: not at this module's import
        min_fit_evals = DEFAULT_MIN_EVALS
    names = ("status", "alpha", "num_fit_evals", "warning", *summary_metrics())
    rows = [_columns(r, names) for r in rows]
    ok = [r for r in rows if in_mean(r, min_fit_evals)]
    out: dict = {}
    for m in summary_metrics():
        vals = [float(r[m]) for r in ok if r.get(m) is not None and math.isfinite(float(r[m]))]
        out[m] = float(np.mean(vals)) if vals else math.nan
    out["num_layers"] = len(rows)
    for status in ("success", "failed", "skipped"):
        out[f"num_{status}"] = sum(1 for r in rows if r.get("status") == status)
    out["num_over_trained"] = sum(1 for r in ok if r.get("warning") == "over-trained")
    out["num_under_trained"] = sum(1 for r in ok if r.get("warning") == "under-trained")
    return out


def _columns(row: Mapping, names: tuple) -> dict:
    """The columns ``names`` of a row, read once: a record (:class:`hubscan.records.LayerRecord`) keeps its
    metrics in its ``metrics`` dict and its other columns as attributes (its mapping interface lists the
    columns on every lookup); any other mapping is read by key."""
    metrics = getattr(row, "metrics", None)
    if isinstance(metrics, dict):
        return {k: metrics[k] if k in metrics else getattr(row, k, None) for k in names}
    return {k: row.get(k) for k in names}


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
