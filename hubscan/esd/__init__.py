"""The HTSR math: weight tensors → matrices → eigenvalues → power-law / MP fits → metrics.

Pure functions on tensors and arrays: no file, network, Ray or storage code in this package.
"""

from hubscan.esd.matrices import LayerPlan, plan_matrices
from hubscan.esd.eigen import ESD, compute_esd
from hubscan.esd.powerlaw import PowerLawFit, fit_powerlaw
from hubscan.esd.mp import MPFit, fit_mp
from hubscan.esd.metrics import layer_metrics, summarize
from hubscan.esd.phases import classify_phase, PHASES

__all__ = [
    "LayerPlan", "plan_matrices", "ESD", "compute_esd", "PowerLawFit", "fit_powerlaw",
    "MPFit", "fit_mp", "layer_metrics", "summarize", "classify_phase", "PHASES",
]
