"""FARMS alpha (option ``farms``, ``--farms``): the power-law alpha of the pooled ESD of fixed-aspect-ratio
submatrices (Hu et al., ICML 2025; :func:`hubscan.esd.farms.farms_esd`), columns ``farms_alpha`` and
``farms_num_windows``. Only for a layer that is one matrix (no pooled conv slices)."""

from __future__ import annotations

import math

from hubscan.esd.registry import Spectrum, register_metric, register_option

register_option("farms", bool, False, "also fit FARMS alpha (ESD of fixed-aspect-ratio submatrices, Hu et al. ICML "
                "2025): column farms_alpha")


def _farms(s: Spectrum):
    """(alpha or NaN, windows), or None for a layer of several slices."""
    from hubscan.esd.farms import farms_esd
    from hubscan.esd.powerlaw import fit_powerlaw

    def run():
        if s.slices is None or s.slices.shape[0] != 1:
            return None
        W = s.tensor if s.tensor is not None and s.tensor.dim() == 2 and not s.part else s.slices[0]
        fev, windows = farms_esd(W)
        fit = fit_powerlaw(fev, evals_thresh=s.option("evals_thresh"), fix_fingers=s.option("fix_fingers"))
        return (fit.alpha if fit.status == "success" else math.nan), windows

    return s.memo("farms", run)


@register_metric("farms_alpha", "float64", "alpha of the pooled ESD of fixed-aspect-ratio submatrices (FARMS, Hu et "
                 "al. ICML 2025; --farms)", option="farms")
def farms_alpha(s: Spectrum) -> float | None:
    got = _farms(s)
    return got[0] if got else None


@register_metric("farms_num_windows", "int64", "submatrices pooled by FARMS", option="farms")
def farms_num_windows(s: Spectrum) -> int | None:
    got = _farms(s)
    return got[1] if got else None
