"""The Arrow schemas of hubscan's tables, defined once.

Column names follow WeightWatcher's so that published analyses carry over. Units: eigenvalues are
those of X = WᵀW with no 1/N normalisation (conv layers × 0.5, WW's ``conv2d_norm``); ``log_*``
are base-10; times in seconds.
"""

from __future__ import annotations

import pyarrow as pa

#: Bumped whenever a column is renamed, removed or changes meaning (additions keep the version).
SCHEMA_VERSION = "1"

#: One row per analyzed (or skipped / failed) matrix of a model.
LAYER_FIELDS = [
    ("layer_id", pa.int32(), "order of the tensor in the model's files"),
    ("name", pa.string(), "full parameter name as stored"),
    ("part", pa.string(), "block of a split tensor: q/k/v, RNN gate letter, conv slice 'i,j'; '' when whole"),
    ("layer_type", pa.string(), "dense | embedding | conv1d | conv2d | skipped"),
    ("shape", pa.list_(pa.int64()), "stored tensor shape"),
    ("dtype", pa.string(), "stored dtype (upcast to float64 for the analysis)"),
    ("N", pa.int64(), "rows of each slice oriented N >= M"),
    ("M", pa.int64(), "columns of each slice"),
    ("Q", pa.float64(), "aspect ratio N/M"),
    ("rf", pa.int64(), "slices pooled into the ESD (kh*kw for conv2d, k for conv1d)"),
    ("status", pa.string(), "success | failed | skipped"),
    ("reason", pa.string(), "why skipped or failed; '' on success"),
    ("warning", pa.string(), "over-trained (alpha < 2) | under-trained (alpha > 6) | ''"),
    ("phase", pa.string(), "5+1 phase of training (Martin & Mahoney 2021); null without an MP fit"),
    ("alpha", pa.float64(), "power-law exponent of the ESD tail (null when the fit failed)"),
    ("alpha_weighted", pa.float64(), "alpha * log10(lambda_max)"),
    ("D", pa.float64(), "Kolmogorov-Smirnov distance of the power-law fit"),
    ("xmin", pa.float64(), "start of the fitted tail"),
    ("xmax", pa.float64(), "largest fitted eigenvalue"),
    ("sigma", pa.float64(), "standard error of alpha, (alpha-1)/sqrt(n)"),
    ("num_pl_spikes", pa.int64(), "eigenvalues >= xmin"),
    ("num_fit_evals", pa.int64(), "eigenvalues > evals_thresh entering the fit"),
    ("num_evals", pa.int64(), "eigenvalues in the ESD, M*rf"),
    ("lambda_max", pa.float64(), "largest eigenvalue"),
    ("norm", pa.float64(), "sum of eigenvalues (squared Frobenius norm)"),
    ("log_norm", pa.float64(), "log10(norm)"),
    ("spectral_norm", pa.float64(), "lambda_max"),
    ("log_spectral_norm", pa.float64(), "log10(lambda_max)"),
    ("stable_rank", pa.float64(), "norm / lambda_max"),
    ("entropy", pa.float64(), "matrix entropy, -sum p ln p / ln rank"),
    ("log_alpha_norm", pa.float64(), "log10(sum lambda^alpha)"),
    ("matrix_rank", pa.int64(), "numerical rank of the ESD"),
    ("rank_loss", pa.int64(), "numerically zero eigenvalues, summed over slices"),
    ("sv_max", pa.float64(), "largest singular value (of the scaled W)"),
    ("sv_min", pa.float64(), "smallest singular value over all slices"),
    ("sigma_mp", pa.float64(), "MP scale of the mean-1 rescaled ESD (null without --mp-fit)"),
    ("lambda_plus", pa.float64(), "MP bulk edge, eigenvalue units"),
    ("lambda_minus", pa.float64(), "MP lower bulk edge, eigenvalue units"),
    ("num_spikes", pa.int64(), "eigenvalues beyond lambda_plus + Tracy-Widom margin"),
    ("mp_softrank", pa.float64(), "lambda_plus / lambda_max (rescaled units)"),
    ("W_scale", pa.float64(), "sqrt(num_evals / norm), the MP fit's rescaling of W"),
    ("rand_distance", pa.float64(), "Jensen-Shannon distance to the ESD of element-shuffled W"),
    ("fix_fingers", pa.string(), "'' | xmin_peak | clip_xmax"),
    ("num_fingers", pa.int64(), "eigenvalues clipped by clip_xmax"),
    ("raw_alpha", pa.float64(), "alpha before clip_xmax"),
    ("Lambda", pa.float64(), "truncation rate of the TPL fit"),
    ("eig_method", pa.string(), "gram | svd"),
    ("device", pa.string(), "where the eigenvalues were computed"),
    ("seconds", pa.float64(), "wall time of this layer (read + eigenvalues + fits)"),
]

LAYER_SCHEMA = pa.schema(
    [pa.field(n, t, metadata={"description": d}) for n, t, d in LAYER_FIELDS],
    metadata={"hubscan.table": "layers", "hubscan.schema_version": SCHEMA_VERSION},
)

LAYER_COLUMNS = [n for n, _, _ in LAYER_FIELDS]
