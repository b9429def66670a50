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
    ("companions", pa.list_(pa.string()), "tensors folded into this weight (quantization scales, zeros, g_idx …)"),
    ("N", pa.int64(), "rows of each slice oriented N >= M"),
    ("M", pa.int64(), "columns of each slice"),
    ("Q", pa.float64(), "aspect ratio N/M"),
    ("rf", pa.int64(), "slices pooled into the ESD (kh*kw for conv2d, k for conv1d)"),
    ("status", pa.string(), "success | failed | skipped"),
    ("reason", pa.string(), "why skipped or failed; on success how the weight was decoded or a caution, else ''"),
    ("warning", pa.string(), "over-trained (alpha < 2) | under-trained (alpha > 6) | ''"),
    ("phase", pa.string(), "5+1 phase of training (Martin & Mahoney 2021); null without an MP fit"),
    ("element_mu", pa.float64(), "tail index of the elements |w| (Hill, largest 1%); < 4: heavy-tailed elements (with the MP fit)"),
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
    ("num_ERG_spikes", pa.int64(), "eigenvalues of the tail whose rescaled determinant crosses 1 (SETOL detX; WW detX_num)"),
    ("ERG_gap", pa.float64(), "num_ERG_spikes - num_pl_spikes (SETOL effective rank gap; null when the fit failed)"),
    ("detX_val", pa.float64(), "smallest eigenvalue of the detX tail"),
    ("detX_val_unrescaled", pa.float64(), "the same eigenvalue rescaled to mean 1 (WW's name)"),
    ("alpha_ci_lo", pa.float64(), "lower bound of alpha's bootstrap confidence interval, xmin refitted per resample (--alpha-ci)"),
    ("alpha_ci_hi", pa.float64(), "upper bound of alpha's bootstrap confidence interval (--alpha-ci)"),
    ("ks_pvalue", pa.float64(), "Clauset-Shalizi-Newman bootstrap p-value of the power-law fit (--ks-pvalue)"),
    ("fit_quality", pa.string(), "plausible (ks_pvalue > 0.1) | poor (<= 0.1, CSN 2009) | null"),
    ("farms_alpha", pa.float64(), "alpha of the pooled ESD of fixed-aspect-ratio submatrices (FARMS, Hu et al. ICML 2025; --farms)"),
    ("farms_num_windows", pa.int64(), "submatrices pooled by FARMS"),
    ("bulk_mean_vec_entropy", pa.float64(), "mean of the eigenvector entropy over the bulk (WW vectors=True; --vectors)"),
    ("bulk_mean_loc_ratio", pa.float64(), "mean of the eigenvector localization ratio |v|_1/|v|_inf over the bulk (WW vectors=True; --vectors)"),
    ("bulk_mean_part_ratio", pa.float64(), "mean of the eigenvector participation ratio |v|_2/|v|_4 over the bulk (WW vectors=True; --vectors)"),
    ("bulk_var_vec_entropy", pa.float64(), "var of the eigenvector entropy over the bulk (WW vectors=True; --vectors)"),
    ("bulk_var_loc_ratio", pa.float64(), "var of the eigenvector localization ratio |v|_1/|v|_inf over the bulk (WW vectors=True; --vectors)"),
    ("bulk_var_part_ratio", pa.float64(), "var of the eigenvector participation ratio |v|_2/|v|_4 over the bulk (WW vectors=True; --vectors)"),
    ("tail_mean_vec_entropy", pa.float64(), "mean of the eigenvector entropy over the tail (WW vectors=True; --vectors)"),
    ("tail_mean_loc_ratio", pa.float64(), "mean of the eigenvector localization ratio |v|_1/|v|_inf over the tail (WW vectors=True; --vectors)"),
    ("tail_mean_part_ratio", pa.float64(), "mean of the eigenvector participation ratio |v|_2/|v|_4 over the tail (WW vectors=True; --vectors)"),
    ("tail_var_vec_entropy", pa.float64(), "var of the eigenvector entropy over the tail (WW vectors=True; --vectors)"),
    ("tail_var_loc_ratio", pa.float64(), "var of the eigenvector localization ratio |v|_1/|v|_inf over the tail (WW vectors=True; --vectors)"),
    ("tail_var_part_ratio", pa.float64(), "var of the eigenvector participation ratio |v|_2/|v|_4 over the tail (WW vectors=True; --vectors)"),
    ("delta_W", pa.float64(), "Frobenius norm of W - W_base (with --base; WW distances' delta_W)"),
    ("delta_W_rel", pa.float64(), "||W - W_base||_F / ||W_base||_F (with --base)"),
    ("delta_spectral_rel", pa.float64(), "||W - W_base||_2 / ||W_base||_2 (with --base)"),
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

#: Columns that identify the model a dataset row belongs to (prepended to layers and esd rows).
IDENTITY_FIELDS = [
    ("model_key", pa.string(), "sha256(source, model_id, revision, config_hash)[:16]"),
    ("source", pa.string(), "hf | timm | local"),
    ("model_id", pa.string(), "hub repo id, timm arch.tag name, or local path"),
    ("revision", pa.string(), "commit sha (hub) or content fingerprint (local)"),
]


def _schema(fields, table: str) -> pa.Schema:
    return pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in fields],
                     metadata={"hubscan.table": table, "hubscan.schema_version": SCHEMA_VERSION})


#: The dataset's ``layers`` table: identity + every column of :data:`LAYER_SCHEMA`.
DATASET_LAYER_SCHEMA = _schema(IDENTITY_FIELDS + [("survey_id", pa.string(), "survey that wrote the row")]
                               + LAYER_FIELDS, "layers")

_EVAL_RESULT = pa.struct([("task", pa.string()), ("dataset", pa.string()), ("dataset_name", pa.string()),
                          ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64())])

MODEL_FIELDS = IDENTITY_FIELDS + [
    ("config_hash", pa.string(), "hash of the analysis settings"),
    ("repo_id", pa.string(), "hub repo holding the weights (timm models: timm/arch.tag)"),
    ("files", pa.list_(pa.string()), "weight files read"),
    ("format", pa.string(), "safetensors | torch | onnx | gguf"),
    ("status", pa.string(), "success | incomplete | failed | skipped"),
    ("reason", pa.string(), "why failed / skipped / incomplete"),
    ("family", pa.string(), "model family: timm architecture prefix or HF config model_type"),
    ("model_type", pa.string(), "HF config model_type (timm: family)"),
    ("architectures", pa.list_(pa.string()), "HF config architectures / timm architecture"),
    ("library_name", pa.string(), "library tag on the hub"),
    ("pipeline_tag", pa.string(), "task tag on the hub"),
    ("tags", pa.list_(pa.string()), "hub tags"),
    ("downloads", pa.int64(), "hub downloads (last 30 days) when enumerated"),
    ("likes", pa.int64(), "hub likes"),
    ("num_parameters", pa.int64(), "parameter count the hub reports (safetensors total)"),
    ("eval_results", pa.list_(_EVAL_RESULT), "model card model-index results"),
    ("gated", pa.bool_(), "gated repository"),
    ("created_at", pa.string(), "repo creation time"),
    ("last_modified", pa.string(), "last commit time"),
    ("alpha", pa.float64(), "mean alpha over successful layer fits"),
    ("alpha_weighted", pa.float64(), "mean alpha_weighted"),
    ("log_norm", pa.float64(), "mean log_norm"),
    ("log_spectral_norm", pa.float64(), "mean log_spectral_norm"),
    ("log_alpha_norm", pa.float64(), "mean log_alpha_norm"),
    ("stable_rank", pa.float64(), "mean stable_rank"),
    ("mp_softrank", pa.float64(), "mean mp_softrank"),
    ("entropy", pa.float64(), "mean entropy"),
    ("num_layers", pa.int64(), "matrix rows (analyzed + failed + skipped)"),
    ("num_success", pa.int64(), "layers fitted"),
    ("num_failed", pa.int64(), "layers failed"),
    ("num_skipped", pa.int64(), "layers skipped"),
    ("num_missing", pa.int64(), "tensors named by an index but absent"),
    ("num_over_trained", pa.int64(), "layers with alpha < 2"),
    ("num_under_trained", pa.int64(), "layers with alpha > 6"),
    ("seconds", pa.float64(), "wall time of the model's analysis (incl. reads)"),
    ("bytes_read", pa.int64(), "bytes of weight files read (network or local disk)"),
    ("requests", pa.int64(), "HTTP requests made for the model (0 for local files)"),
    ("retries", pa.int64(), "hub request retries"),
    ("attempts", pa.int64(), "analysis attempts (actor deaths retried)"),
    ("device", pa.string(), "where the eigenvalues were computed"),
    ("options", pa.string(), "analysis settings, JSON"),
    ("hubscan_version", pa.string(), "hubscan version"),
    ("survey_id", pa.string(), "survey that wrote the row"),
    ("analyzed_at", pa.timestamp("us", tz="UTC"), "when the row was written"),
]
MODEL_SCHEMA = _schema(MODEL_FIELDS, "models")

ESD_SCHEMA = _schema(IDENTITY_FIELDS + [
    ("layer_id", pa.int32(), "order of the tensor in the files"),
    ("name", pa.string(), "full parameter name"),
    ("part", pa.string(), "split block or ''"),
    ("evals", pa.list_(pa.float32()), "eigenvalues of the pooled ESD, ascending (float32)"),
], "esd")

SURVEY_SCHEMA = _schema([
    ("survey_id", pa.string(), "id of the run"),
    ("started_at", pa.timestamp("us", tz="UTC"), "start"),
    ("finished_at", pa.timestamp("us", tz="UTC"), "end"),
    ("source", pa.string(), "source spec (hf, timm, local:DIR, list:FILE)"),
    ("filters", pa.string(), "source filters, JSON"),
    ("config_hash", pa.string(), "hash of the analysis settings"),
    ("options", pa.string(), "analysis settings, JSON"),
    ("num_models", pa.int64(), "models enumerated"),
    ("num_already_done", pa.int64(), "skipped because the dataset holds them"),
    ("num_success", pa.int64(), "models analyzed completely"),
    ("num_incomplete", pa.int64(), "models with missing tensors"),
    ("num_failed", pa.int64(), "models failed"),
    ("num_skipped", pa.int64(), "models skipped (gated, no weights …)"),
    ("bytes_read", pa.int64(), "bytes of weight files read, summed over the committed models"),
    ("requests", pa.int64(), "HTTP requests, summed over the committed models"),
    ("seconds", pa.float64(), "wall time"),
    ("startup_seconds", pa.float64(), "until the first analysis actor was ready (Ray start-up, imports)"),
    ("actors", pa.int64(), "analysis actors"),
    ("interrupted", pa.bool_(), "stopped before the end (Ctrl-C)"),
    ("table_versions", pa.string(), "Delta table versions at the end of the survey, JSON {table: version}"),
    ("hubscan_version", pa.string(), "hubscan version"),
], "surveys")

#: Reported accuracy of models (written by :mod:`hubscan.accuracy`): one row per model, benchmark and
#: metric of one provenance (timm results CSVs, model-card model-index, Open LLM Leaderboard, CSV).
ACCURACY_SCHEMA = _schema([
    ("source", pa.string(), "hf | timm | local: the source whose model_id this row names"),
    ("model_id", pa.string(), "hub repo id or timm arch.tag name, as in the models table"),
    ("revision", pa.string(), "commit the result is for (null: any revision)"),
    ("benchmark", pa.string(), "imagenet, imagenet-real, sketch, open_llm_leaderboard_v2, model-card dataset …"),
    ("split", pa.string(), "dataset split (null when not stated)"),
    ("metric", pa.string(), "top1, top5, average, ifeval, accuracy …"),
    ("value", pa.float64(), "the reported value (percent for timm and the leaderboards)"),
    ("higher_is_better", pa.bool_(), "direction of the metric"),
    ("provenance", pa.string(), "file / URL the row came from and how it was selected"),
    ("provenance_key", pa.string(), "key of the ingested provenance (the file name part-<key>.parquet)"),
    ("img_size", pa.int64(), "evaluation image size (timm)"),
    ("param_count", pa.float64(), "parameters, millions, as the provenance reports them"),
    ("pretrain", pa.string(), "pretraining data (timm model_metadata-in1k.csv)"),
    ("variant", pa.string(), "evaluation variant: leaderboard precision / weight type"),
    ("task", pa.string(), "task type (model card)"),
    ("dataset_name", pa.string(), "human-readable dataset name (model card)"),
    ("ingested_at", pa.timestamp("us", tz="UTC"), "when the row was written"),
], "accuracy")

#: Model trees (:mod:`hubscan.census`): one row per (child, parent) edge of a surveyed tree.
LINEAGE_SCHEMA = _schema([
    ("edge_key", pa.string(), "sha256(root, child, parent)[:16]: one row per edge of a root's tree"),
    ("root", pa.string(), "repo id of the tree's base model (depth 0)"),
    ("child", pa.string(), "repo id of the derived model"),
    ("parent", pa.string(), "repo id of its base model"),
    ("relation", pa.string(), "finetune | adapter | quantized | merge (the Hub's base_model_relation)"),
    ("depth", pa.int64(), "the child's depth below the root (root's children: 1)"),
    ("found_by", pa.string(), "tag (base_model:<relation>:<parent> tag) | card (base_model_relation) | "
                              "config (inferred from files / config)"),
    ("child_revision", pa.string(), "commit the child was pinned to"),
    ("parent_revision", pa.string(), "commit the parent was pinned to"),
    ("survey_id", pa.string(), "survey that wrote the row"),
], "lineage")

#: Per-layer deltas of each (child, parent) edge: the rows of ``hubscan analyze CHILD --base PARENT``
#: (ESD of ΔW = W_child − W_parent, adapters as ΔW = s·B·A, distance columns) with the pair's identity.
DELTAS_SCHEMA = pa.schema(
    [pa.field(n, t, metadata={"description": d}) for n, t, d in [
        ("pair_key", pa.string(), "sha256(child model_key, parent, parent revision)[:16]"),
        ("model_key", pa.string(), "the child's model_key (its plain analysis in models / layers)"),
        ("source", pa.string(), "hf | timm | local"),
        ("model_id", pa.string(), "the child"),
        ("revision", pa.string(), "the child's commit"),
        ("parent_id", pa.string(), "the parent (the base of the delta)"),
        ("parent_revision", pa.string(), "the parent's commit"),
        ("relation", pa.string(), "finetune | adapter | quantized | merge"),
        ("survey_id", pa.string(), "survey that wrote the row")]]
    + list(LAYER_SCHEMA), metadata={"hubscan.table": "deltas", "hubscan.schema_version": SCHEMA_VERSION})
