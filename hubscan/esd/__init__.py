"""The HTSR math: weight tensors → matrices → eigenvalues → power-law / MP fits → metrics.

Pure functions on tensors and arrays: no file, network, Ray or storage code in this package.
The names below are imported lazily, so that the metric registry (:mod:`hubscan.esd.registry`),
which the schema is generated from, can be read without importing torch.
"""

import importlib

_EXPORTS = {
    "LayerPlan": "matrices", "plan_matrices": "matrices", "ESD": "eigen", "compute_esd": "eigen",
    "PowerLawFit": "powerlaw", "fit_powerlaw": "powerlaw", "MPFit": "mp", "fit_mp": "mp",
    "layer_metrics": "metrics", "summarize": "metrics", "classify_phase": "phases", "PHASES": "phases",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hubscan.esd.{_EXPORTS[name]}"), name)
    raise AttributeError(name)


__all__ = list(_EXPORTS)
