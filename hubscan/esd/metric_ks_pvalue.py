"""Goodness of the power-law fit (option ``ks_pvalue``, ``--ks-pvalue B``): columns ``ks_pvalue`` (the
Clauset–Shalizi–Newman semi-parametric bootstrap p-value, CSN 2009 §4.1,
:func:`hubscan.esd.uncertainty.ks_pvalue`) and ``fit_quality``. Costs B power-law fits per layer."""

from __future__ import annotations

from hubscan.esd.registry import Spectrum, at_least, register_metric, register_option

register_option("ks_pvalue", int, 0, "CSN goodness-of-fit p-value from B synthetic data sets, e.g. 100 (columns "
                "ks_pvalue, fit_quality); costs B power-law fits per layer", check=at_least(0), metavar="B")


def _p(s: Spectrum) -> float:
    from hubscan.esd.uncertainty import ks_pvalue

    return s.memo("ks_pvalue", lambda: ks_pvalue(s.esd.evals, s.fit.alpha, s.fit.xmin, s.fit.D,
                                                 samples=s.option("ks_pvalue"), evals_thresh=s.option("evals_thresh"),
                                                 seed=s.option("seed")))


@register_metric("ks_pvalue", "float64", "Clauset-Shalizi-Newman bootstrap p-value of the power-law fit (--ks-pvalue)",
                 option="ks_pvalue")
def ks_pvalue(s: Spectrum) -> float | None:
    return _p(s) if s.fit.status == "success" else None


@register_metric("fit_quality", "string", "plausible (ks_pvalue > 0.1) | poor (<= 0.1, CSN 2009) | null",
                 option="ks_pvalue")
def fit_quality(s: Spectrum) -> str | None:
    from hubscan.esd.uncertainty import fit_quality

    return fit_quality(_p(s)) if s.fit.status == "success" else None
