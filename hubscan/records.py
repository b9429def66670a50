"""Typed records: what hubscan produces, one dataclass per table row, whose fields ARE the columns.

Each record's dataclass fields carry their column's dtype and description (``column(...)``); the
per-layer metric columns come from the metric registry (:mod:`hubscan.esd.registry`) and live in
the record's ``metrics`` dict, at the position of that field. :mod:`hubscan.schema` generates the
Arrow schemas from these definitions and converts records to Arrow (the one converter); nothing
lists a column twice.

Every record is also a mutable mapping of its columns (``row["alpha"]``, ``row.get("part")``,
``{**row}``, ``dict(row)``), so code written against the former dict rows keeps working; setting a
key that is not a column raises ``KeyError``.

This module is pure (stdlib + the registry): the analysis builds records without importing pyarrow.
Dtypes are strings, mapped to Arrow by :func:`hubscan.schema.arrow_type`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import MutableMapping
from typing import Any, ClassVar, Iterator

from hubscan.esd import registry


class RowStatus(enum.StrEnum):
    """How one matrix of a model ended (``layers.status``; the string is the stored value)."""

    SUCCESS = "success"  #: analyzed: its ESD fitted
    FAILED = "failed"    #: read, but the analysis or the fit failed (``reason`` says why)
    SKIPPED = "skipped"  #: not analyzed (``reason``: too small, excluded, tied, a layout hubscan does not read …)


class ModelStatus(enum.StrEnum):
    """How one model ended (``models.status``; the string is the stored value)."""

    SUCCESS = "success"        #: every tensor ended in a row, at least one analyzed
    INCOMPLETE = "incomplete"  #: analyzed, but tensors are missing or in a layout hubscan does not read
    FAILED = "failed"          #: nothing analyzed (unreadable, unsafe, unreachable …)
    SKIPPED = "skipped"        #: not analyzed on purpose (gated, no weights, no layer selected)

#: The columns that identify the model a dataset row belongs to (models, layers, esd tables).
IDENTITY_COLUMNS = (
    ("model_key", "string", "sha256(source, model_id, revision, config_hash)[:16]"),
    ("source", "string", "hf | timm | local"),
    ("model_id", "string", "hub repo id, timm arch.tag name, or local path"),
    ("revision", "string", "commit sha (hub) or content fingerprint (local)"),
)
SURVEY_ID_COLUMN = ("survey_id", "string", "survey that wrote the row")


def column(dtype: str, description: str, default: Any = None, *, factory: Any = None) -> Any:
    """A dataclass field that is a table column of ``dtype`` (see :func:`hubscan.schema.arrow_type`);
    ``factory`` makes a mutable default (``list``)."""
    meta = {"dtype": dtype, "description": description}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def part_key(name: str, part: str | None) -> str:
    """The key of one matrix of a model: ``name`` for a whole tensor, ``name:part`` for a block of a
    split tensor (q/k/v, an RNN gate, a conv slice, an expert). The one place this key is built."""
    return f"{name}:{part}" if part else name


class Record(MutableMapping):
    """Base of the typed records: a dataclass that is also a mapping of its columns.

    Subclasses are dataclasses whose fields are made with :func:`column`; a field named ``metrics``
    (a dict) stands for the registry's metric columns (:meth:`metric_columns`).
    """

    TABLE: ClassVar[str] = ""

    # -- the columns ---------------------------------------------------------------------------
    @classmethod
    def metric_columns(cls) -> list[tuple[str, str, str]]:
        """(name, dtype, description) of the registry columns this record holds in ``metrics``."""
        return []

    @classmethod
    def columns(cls) -> list[tuple[str, str, str]]:
        """(name, dtype, description) of every column, in table order."""
        out: list[tuple[str, str, str]] = []
        for f in dataclasses.fields(cls):
            if f.name == "metrics":
                out.extend(cls.metric_columns())
            else:
                out.append((f.name, f.metadata["dtype"], f.metadata["description"]))
        return out

    @classmethod
    def column_names(cls) -> list[str]:
        return [n for n, _, _ in cls.columns()]

    def _fields(self) -> dict[str, None]:
        return {f.name: None for f in dataclasses.fields(self) if f.name != "metrics"}

    # -- the mapping interface -----------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key != "metrics" and key in self._fields():
            return getattr(self, key)
        metrics = getattr(self, "metrics", None)
        if metrics is not None and key in {n for n, _, _ in self.metric_columns()}:
            return metrics.get(key)
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key != "metrics" and key in self._fields():
            setattr(self, key, value)
        elif getattr(self, "metrics", None) is not None and key in {n for n, _, _ in self.metric_columns()}:
            self.metrics[key] = value
        else:
            raise KeyError(f"{key!r} is not a column of the {self.TABLE} table")

    def __delitem__(self, key: str) -> None:
        raise TypeError("a record's columns cannot be deleted (set them to None)")

    def __iter__(self) -> Iterator[str]:
        return iter(self.column_names())

    def __len__(self) -> int:
        return len(self.columns())

    def to_row(self) -> dict:
        """Column → value of every column (metrics flattened).

        Raises
        ------
        KeyError
            ``metrics`` holds a name that is not a registered metric (a producer's typo or a metric
            it forgot to register) — never silently dropped.
        """
        metrics = getattr(self, "metrics", None)
        names = [n for n, _, _ in self.metric_columns()]
        if metrics:
            unknown = set(metrics) - set(names)
            if unknown:
                raise KeyError(f"{self.TABLE} record: {sorted(unknown)} are not registered metrics")
        out = {}
        for f in dataclasses.fields(self):  # the order of columns(), each column read once
            if f.name == "metrics":
                out.update((n, metrics.get(n)) for n in names)
            else:
                out[f.name] = getattr(self, f.name)
        return out


@dataclasses.dataclass(eq=False)
class LayerRecord(Record):
    """One analyzed (or skipped / failed) matrix of a model: a row of the ``layers`` table
    (without the model's identity columns, which the store adds)."""

    TABLE: ClassVar[str] = "layers"

    layer_id: int = column("int32", "order of the tensor in the model's files")
    name: str = column("string", "full parameter name as stored")
    part: str = column("string", "block of a split tensor: q/k/v, RNN gate letter, conv slice 'i,j'; '' when whole",
                       "")
    layer_type: str = column("string", "dense | embedding | conv1d | conv2d | conv3d | skipped")
    typed_by: str = column("string", "module: the class of the module that owns the tensor decided how it is read "
                           "(the model's config.json built on the meta device); name: the name/shape rules", "name")
    module_type: str | None = column("string", "class of the module that owns the tensor when typed by module "
                                     "(Linear, Conv1D, Conv3d, MixtralExperts …)")
    shape: list = column("list<int64>", "stored tensor shape")
    dtype: str = column("string", "stored dtype (upcast to float64 for the analysis)")
    companions: list = column("list<string>", "tensors folded into this weight (quantization scales, zeros, "
                              "g_idx …)", factory=list)
    N: int | None = column("int64", "rows of each slice oriented N >= M")
    M: int | None = column("int64", "columns of each slice")
    Q: float | None = column("float64", "aspect ratio N/M")
    rf: int | None = column("int64", "slices pooled into the ESD (kt*kh*kw for conv3d, kh*kw for conv2d, k for conv1d)")
    status: RowStatus = column("string", " | ".join(RowStatus), RowStatus.SUCCESS)
    reason: str = column("string", "why skipped or failed; on success how the weight was decoded or a caution, "
                         "else ''", "")
    metrics: dict = dataclasses.field(default_factory=dict)
    delta_W: float | None = column("float64", "Frobenius norm of W - W_base (with --base; WW distances' delta_W)")
    delta_W_rel: float | None = column("float64", "||W - W_base||_F / ||W_base||_F (with --base)")
    delta_spectral_rel: float | None = column("float64", "||W - W_base||_2 / ||W_base||_2 (with --base)")
    eig_method: str | None = column("string", "gram | svd")
    device: str | None = column("string", "where the eigenvalues were computed")
    seconds: float | None = column("float64", "wall time of this layer (read + eigenvalues + fits)")

    @classmethod
    def metric_columns(cls) -> list[tuple[str, str, str]]:
        return [(m.name, m.dtype, m.description) for m in registry.metrics().values()]

    @property
    def key(self) -> str:
        """``name`` or ``name:part`` (:func:`part_key`)."""
        return part_key(self.name, self.part)


@dataclasses.dataclass(eq=False)
class EsdRecord(Record):
    """The eigenvalues of one matrix: a row of the ``esd`` table (without the identity columns)."""

    TABLE: ClassVar[str] = "esd"

    layer_id: int = column("int32", "order of the tensor in the files")
    name: str = column("string", "full parameter name")
    part: str = column("string", "split block or ''", "")
    evals: Any = column("list<float32>", "eigenvalues of the pooled ESD, ascending (float32)")


@dataclasses.dataclass(eq=False)
class ModelRecord(Record):
    """One model: a row of the ``models`` table (its identity, the source's metadata, the summary of
    its layers and how the analysis went). The dataset's commit record of the model."""

    TABLE: ClassVar[str] = "models"

    model_key: str = column(*IDENTITY_COLUMNS[0][1:])
    source: str = column(*IDENTITY_COLUMNS[1][1:])
    model_id: str = column(*IDENTITY_COLUMNS[2][1:])
    revision: str | None = column(*IDENTITY_COLUMNS[3][1:])
    config_hash: str | None = column("string", "hash of the analysis settings")
    repo_id: str | None = column("string", "hub repo holding the weights (timm models: timm/arch.tag)")
    files: list | None = column("list<string>", "weight files read")
    files_not_read: list | None = column("list<string>", "weight files of the model not read: copies of what is "
                                         "read (other formats, precision variants, other GGUF quantizations, "
                                         "single-file checkpoints beside diffusers components) and formats "
                                         "hubscan does not read")
    format: str | None = column("string", "safetensors | torch | onnx | gguf")
    status: ModelStatus | None = column("string", " | ".join(ModelStatus))
    reason: str | None = column("string", "why failed / skipped / incomplete")
    family: str | None = column("string", "model family: timm architecture prefix or HF config model_type")
    model_type: str | None = column("string", "HF config model_type (timm: family)")
    architectures: list | None = column("list<string>", "HF config architectures / timm architecture")
    library_name: str | None = column("string", "library tag on the hub")
    pipeline_tag: str | None = column("string", "task tag on the hub")
    tags: list | None = column("list<string>", "hub tags")
    downloads: int | None = column("int64", "hub downloads (last 30 days) when enumerated")
    likes: int | None = column("int64", "hub likes")
    num_parameters: int | None = column("int64", "parameter count the hub reports (safetensors total)")
    eval_results: list | None = column("list<eval_result>", "model card model-index results")
    gated: bool | None = column("bool", "gated repository")
    created_at: str | None = column("string", "repo creation time")
    last_modified: str | None = column("string", "last commit time")
    metrics: dict = dataclasses.field(default_factory=dict)
    num_layers: int | None = column("int64", "matrix rows (analyzed + failed + skipped)")
    num_success: int | None = column("int64", "layers fitted")
    num_failed: int | None = column("int64", "layers failed")
    num_skipped: int | None = column("int64", "layers skipped")
    num_missing: int | None = column("int64", "tensors named by an index but absent")
    num_over_trained: int | None = column("int64", "layers with alpha < 2")
    num_under_trained: int | None = column("int64", "layers with alpha > 6")
    seconds: float | None = column("float64", "wall time of the model's analysis (incl. reads)")
    bytes_read: int | None = column("int64", "bytes of weight files read (network or local disk)")
    requests: int | None = column("int64", "HTTP requests made for the model (0 for local files)")
    retries: int | None = column("int64", "hub request retries")
    attempts: int | None = column("int64", "analysis attempts (actor deaths retried)")
    device: str | None = column("string", "where the eigenvalues were computed")
    options: str | None = column("string", "analysis settings, JSON")
    hubscan_version: str | None = column("string", "hubscan version")
    survey_id: str | None = column(*SURVEY_ID_COLUMN[1:])
    analyzed_at: Any = column("timestamp", "when the row was written")
    last_seen: Any = column("timestamp", "null while the latest complete survey (no limit) of the same source "
                            "and filters lists the model at this revision; else the start of the last survey that "
                            "did (deleted, made private, or replaced by a new revision: the rows are kept; a "
                            "limited survey counts for the models it wrote rows for)")
    files_sha256: list | None = column("list<string>", "sha256 of the weight files read (shards included), as the "
                                       "Hub names them (X-Linked-Etag of LFS files), sorted; null unless every "
                                       "file had one")
    same_content_as: str | None = column("string", "model_key of the model whose rows these are: its weight files "
                                         "are byte-identical (same sha256) and analyzed with the same config_hash, "
                                         "so no tensor byte was read again (null: analyzed itself)")

    @classmethod
    def metric_columns(cls) -> list[tuple[str, str, str]]:
        return [(m.name, "float64", f"mean {m.name} over the layers whose fit succeeded")
                for m in registry.metrics().values() if m.summary]

    @property
    def identity(self) -> dict:
        """The identity columns (model_key, source, model_id, revision) the store adds to the
        model's layers and esd rows."""
        return {n: getattr(self, n) for n, _, _ in IDENTITY_COLUMNS}


@dataclasses.dataclass(eq=False)
class SurveyRecord(Record):
    """One survey run: a row of the ``surveys`` table."""

    TABLE: ClassVar[str] = "surveys"

    survey_id: str = column("string", "id of the run")
    started_at: Any = column("timestamp", "start")
    finished_at: Any = column("timestamp", "end")
    source: str | None = column("string", "source spec (hf, timm, local:DIR, list:FILE)")
    filters: str | None = column("string", "source filters, JSON; \"limit\" when the listing was cut "
                                        "at that many models (a partial listing)")
    config_hash: str | None = column("string", "hash of the analysis settings")
    options: str | None = column("string", "analysis settings, JSON")
    num_models: int | None = column("int64", "models enumerated")
    num_already_done: int | None = column("int64", "skipped because the dataset holds them")
    num_success: int | None = column("int64", "models analyzed completely")
    num_incomplete: int | None = column("int64", "models with missing tensors")
    num_failed: int | None = column("int64", "models failed")
    num_skipped: int | None = column("int64", "models skipped (gated, no weights …)")
    num_failed_edges: int | None = column("int64", "model-tree surveys (--lineage): edges whose delta could "
                                          "not be analyzed (no deltas rows; null for other surveys)")
    bytes_read: int | None = column("int64", "bytes of weight files read, summed over the committed models")
    requests: int | None = column("int64", "HTTP requests, summed over the committed models")
    seconds: float | None = column("float64", "wall time")
    startup_seconds: float | None = column("float64",
                                           "until the first analysis actor was ready (Ray start-up, imports)")
    actors: int | None = column("int64", "analysis actors")
    interrupted: bool | None = column("bool", "stopped before the end (Ctrl-C, SIGTERM, the source lost, an "
                                               "error such as Ray not starting)")
    table_versions: str | None = column("string",
                                        "Delta table versions at the end of the survey, JSON {table: version}")
    hubscan_version: str | None = column("string", "hubscan version")


@dataclasses.dataclass(eq=False)
class AccuracyRecord(Record):
    """Reported accuracy of one model, benchmark and metric of one provenance (timm results CSVs,
    model-card model-index, Open LLM Leaderboard, CSV): a row of the ``accuracy`` table."""

    TABLE: ClassVar[str] = "accuracy"

    source: str = column("string", "hf | timm | local: the source whose model_id this row names")
    model_id: str = column("string", "hub repo id or timm arch.tag name, as in the models table")
    revision: str | None = column("string", "commit the result is for (null: any revision)")
    benchmark: str | None = column("string",
                                   "imagenet, imagenet-real, sketch, open_llm_leaderboard_v2, model-card dataset …")
    split: str | None = column("string", "dataset split (null when not stated)")
    metric: str | None = column("string", "top1, top5, average, ifeval, accuracy …")
    value: float | None = column("float64", "the reported value (percent for timm and the leaderboards)")
    higher_is_better: bool | None = column("bool", "direction of the metric")
    provenance: str | None = column("string", "file / URL the row came from and how it was selected")
    provenance_key: str | None = column("string",
                                        "key of the ingested provenance (the file name part-<key>.parquet)")
    img_size: int | None = column("int64", "evaluation image size (timm)")
    param_count: float | None = column("float64", "parameters, millions, as the provenance reports them")
    pretrain: str | None = column("string", "pretraining data (timm model_metadata-in1k.csv)")
    variant: str | None = column("string", "evaluation variant: leaderboard precision / weight type")
    task: str | None = column("string", "task type (model card)")
    dataset_name: str | None = column("string", "human-readable dataset name (model card)")
    ingested_at: Any = column("timestamp", "when the row was written")


@dataclasses.dataclass(eq=False)
class LineageRecord(Record):
    """One (child, parent) edge of a surveyed model tree (:mod:`hubscan.census`): a row of the
    ``lineage`` table."""

    TABLE: ClassVar[str] = "lineage"

    edge_key: str = column("string", "sha256(root, child, parent)[:16]: one row per edge of a root's tree")
    root: str | None = column("string", "repo id of the tree's base model (depth 0)")
    child: str | None = column("string", "repo id of the derived model")
    parent: str | None = column("string", "repo id of its base model")
    relation: str | None = column("string", "finetune | adapter | quantized | merge (the Hub's base_model_relation)")
    depth: int | None = column("int64", "the child's depth below the root (root's children: 1)")
    found_by: str | None = column("string", "tag (base_model:<relation>:<parent> tag) | card (base_model_relation) | "
                                            "config (inferred from files / config)")
    child_revision: str | None = column("string", "commit the child was pinned to")
    parent_revision: str | None = column("string", "commit the parent was pinned to")
    survey_id: str | None = column(*SURVEY_ID_COLUMN[1:])


#: The identity of a (child, parent) pair that precedes its layer columns in the ``deltas`` table (the
#: rows of ``hubscan analyze CHILD --base PARENT``: ESD of ΔW = W_child − W_parent, distance columns).
DELTA_PAIR_COLUMNS = (
    ("pair_key", "string", "sha256(child model_key, parent, parent revision)[:16]"),
    ("model_key", "string", "the child's model_key (its plain analysis in models / layers)"),
    ("source", "string", "hf | timm | local"),
    ("model_id", "string", "the child"),
    ("revision", "string", "the child's commit"),
    ("parent_id", "string", "the parent (the base of the delta)"),
    ("parent_revision", "string", "the parent's commit"),
    ("relation", "string", "finetune | adapter | quantized | merge"),
    SURVEY_ID_COLUMN,
)


#: The identity of one analysis of a model during training that precedes its layer columns in the ``training``
#: table (:mod:`hubscan.monitor`: every N steps or epochs, the model in memory, one row per matrix).
TRAINING_COLUMNS = (
    ("run_id", "string", "the training run (hubscan.monitor's run_id: given, or UTC time + random suffix)"),
    ("step", "int64", "optimizer steps done when the weights were analyzed (0: before training)"),
    ("epoch", "float64", "epochs done when the weights were analyzed (fractional within an epoch)"),
    ("model_class", "string", "class of the module analyzed"),
    ("config_hash", "string", "hash of the analysis settings"),
    ("analyzed_at", "timestamp", "when the weights were analyzed"),
)


def table_columns(table: str) -> list[tuple[str, str, str]]:
    """(name, dtype, description) of every column of a dataset table, in order.

    ``layers`` and ``esd`` rows are a :class:`LayerRecord` / :class:`EsdRecord` preceded by the
    model's identity (and, for layers, the survey id), ``deltas`` rows a :class:`LayerRecord` preceded by
    :data:`DELTA_PAIR_COLUMNS`, ``training`` rows one preceded by :data:`TRAINING_COLUMNS`; ``analysis`` is a
    :class:`LayerRecord` alone
    (what ``hubscan analyze --out`` writes).

    Raises
    ------
    KeyError
        Unknown table.
    """
    if table == "analysis":
        return LayerRecord.columns()
    if table == "layers":
        return list(IDENTITY_COLUMNS) + [SURVEY_ID_COLUMN] + LayerRecord.columns()
    if table == "esd":
        return list(IDENTITY_COLUMNS) + EsdRecord.columns()
    if table == "deltas":
        return list(DELTA_PAIR_COLUMNS) + LayerRecord.columns()
    if table == "training":
        return list(TRAINING_COLUMNS) + LayerRecord.columns()
    return RECORDS[table].columns()


#: table name → record class of the dataset's tables.
RECORDS: dict[str, type[Record]] = {"models": ModelRecord, "layers": LayerRecord, "esd": EsdRecord,
                                    "surveys": SurveyRecord, "accuracy": AccuracyRecord, "lineage": LineageRecord}
