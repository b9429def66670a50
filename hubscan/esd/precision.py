"""``--precision auto``: float32 eigenvalues where a float64 check on the tail says they give the same alpha.

Rule
----
For each shape of layer in a model (the first layer of that shape seen), the layer's ESD is computed in
float64 and in float32 on the analysis device and the power law is fitted to both
(:func:`hubscan.esd.powerlaw.fit_powerlaw`, the options' threshold and fingers). The model's layers of
that shape are decomposed in float32 when |alpha_32 − alpha_64| ≤ :data:`AUTO_TOLERANCE` (1e-4), else in
float64. A failed fit on either side chooses float64.

Error: float32 forms X = WᵀW with relative error ~N·eps₃₂ (eps₃₂ = 1.2e-7) on each entry, so an eigenvalue
λ carries an absolute error up to ~N·eps₃₂·λ_max (:mod:`hubscan.esd.eigen`, "Accuracy"); the tail the fit
uses (λ ≥ xmin, typically ≥ 1e-2·λ_max) moves by ~1e-5 relative at N = 4096, and alpha — a mean of
log-ratios of tail eigenvalues — by about as much (``benchmarks/bench_gpu.py`` prints the largest
|Δalpha| of float32 against float64 over a 7B-shaped stack). The check measures it on one layer per
shape; the other layers of the shape are assumed alike (same shape, same model, same training), which the
check cannot prove — hence the bound is per shape, and ``float64`` stays the default.

Only CUDA devices (:data:`FLOAT32_DEVICES`) take float32 under ``auto``: on CPU the float64 path is the
measured one (``auto`` = ``float64``).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from hubscan.esd.eigen import compute_esd
from hubscan.esd.powerlaw import EVALS_THRESH, fit_powerlaw

#: Largest |alpha(float32) − alpha(float64)| for which ``auto`` keeps float32.
AUTO_TOLERANCE = 1e-4
#: Device types on which ``auto`` may choose float32.
FLOAT32_DEVICES = ("cuda",)


@dataclasses.dataclass(frozen=True)
class PrecisionCheck:
    """The outcome of one ``auto`` check.

    Attributes
    ----------
    precision : str
        ``float32`` or ``float64``: what the layers of the checked shape are decomposed in.
    dalpha : float
        |alpha_32 − alpha_64| on the checked layer (NaN when a fit failed or the check was not run).
    layer : str
        The checked layer's name.
    """

    precision: str
    dalpha: float
    layer: str = ""

    def note(self) -> str:
        """What a row decomposed in float32 under ``auto`` says in its ``reason``."""
        return (f"float32 eigenvalues (--precision auto: |Δalpha| = {self.dalpha:.1e} ≤ {AUTO_TOLERANCE:g} "
                f"against float64 on {self.layer})")


def check_precision(slices: torch.Tensor, eig_scale: float = 1.0, *, device: torch.device, method: str = "gram",
                    evals_thresh: float = EVALS_THRESH, fix_fingers: str = "", tolerance: float = AUTO_TOLERANCE,
                    layer: str = "") -> PrecisionCheck:
    """Decide float32 or float64 for a layer's shape (module docstring, "Rule").

    Parameters
    ----------
    slices : torch.Tensor, shape (rf, rows, cols) or (rows, cols)
        The checked layer (``LayerPlan.extract``), any float dtype, on the host or on ``device``.
    eig_scale : float
        As :func:`hubscan.esd.eigen.compute_esd`.
    device : torch.device
        Where both decompositions run; a type not in :data:`FLOAT32_DEVICES` returns float64 unchecked.
    method, evals_thresh, fix_fingers
        The analysis options the fit uses.
    tolerance : float
        Largest |Δalpha| that keeps float32.
    layer : str
        The checked layer's name (for the rows' note).

    Returns
    -------
    PrecisionCheck

    Raises
    ------
    hubscan.errors.NonFiniteError
        The slices hold NaN or inf (the layer's own decomposition would raise it too).
    """
    if device.type not in FLOAT32_DEVICES:
        return PrecisionCheck("float64", math.nan, layer)
    alphas = []
    for precision in ("float64", "float32"):
        esd = compute_esd(slices, eig_scale, device=device, method=method, precision=precision)
        thresh = math.ldexp(evals_thresh, -2 * esd.scale_exp) if esd.scale_exp else evals_thresh
        fit = fit_powerlaw(esd.evals, evals_thresh=thresh, fix_fingers=fix_fingers)
        alphas.append(fit.alpha if fit.status == "success" else math.nan)
    dalpha = abs(alphas[1] - alphas[0])
    ok = math.isfinite(dalpha) and dalpha <= tolerance
    return PrecisionCheck("float32" if ok else "float64", dalpha, layer)
