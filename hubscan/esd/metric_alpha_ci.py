"""Bootstrap confidence interval of alpha (option ``alpha_ci``, ``--alpha-ci LEVEL``): columns ``alpha_ci_lo``
and ``alpha_ci_hi`` (:func:`hubscan.esd.uncertainty.alpha_bootstrap_ci`: CSN 2009 §3.5, xmin refitted per
resample). Costs ``alpha_ci_samples`` power-law fits per layer."""

from __future__ import annotations

from hubscan.esd.registry import Spectrum, at_least, below, register_metric, register_option

register_option("alpha_ci", float, 0.0, "bootstrap confidence interval of alpha at this level, e.g. 0.95 (columns "
                "alpha_ci_lo/hi)", check=below(1.0), metavar="LEVEL")
register_option("alpha_ci_samples", int, 100, "its resamples, each a full power-law fit (default 100)",
                check=at_least(10), metavar="B")


def _ci(s: Spectrum):
    from hubscan.esd.uncertainty import alpha_bootstrap_ci

    return s.memo("alpha_ci", lambda: alpha_bootstrap_ci(
        s.esd.evals, s.fit.xmin, level=s.option("alpha_ci"), samples=s.option("alpha_ci_samples"),
        seed=s.option("seed"), evals_thresh=s.option("evals_thresh")))


@register_metric("alpha_ci_lo", "float64", "lower bound of alpha's bootstrap confidence interval, xmin refitted per "
                 "resample (--alpha-ci)", option="alpha_ci")
def alpha_ci_lo(s: Spectrum) -> float | None:
    return _ci(s).lo if s.fit.status == "success" else None


@register_metric("alpha_ci_hi", "float64", "upper bound of alpha's bootstrap confidence interval (--alpha-ci)",
                 option="alpha_ci")
def alpha_ci_hi(s: Spectrum) -> float | None:
    return _ci(s).hi if s.fit.status == "success" else None
