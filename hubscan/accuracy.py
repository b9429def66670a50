"""Reported accuracy of surveyed models: the dataset's ``accuracy`` table and its ingesters.

One row per (model, benchmark, split, metric) of one *provenance* — a timm results CSV, the model
cards' ``model-index`` stored by the survey, an Open LLM Leaderboard snapshot, or a plain CSV.
Schema :data:`hubscan.schema.ACCURACY_SCHEMA`; a Delta table of the dataset
(:mod:`hubscan.store`, ``DATASET/accuracy/``, partitioned by source). Each provenance's rows carry
its ``provenance_key``, derived from the *logical* provenance (the timm results file name, the
leaderboard version, the CSV file name …), not from where it was read: re-ingesting the same
provenance — from another copy, a URL, or a newer snapshot — replaces its rows (also in source
partitions it no longer has rows for) in one commit, never duplicates them.

Rows name models the way the ``models`` table does (``source``, ``model_id``, optional
``revision``); :func:`hubscan.correlate.joined` joins the two.

References
----------
* timm results: https://github.com/huggingface/pytorch-image-models/tree/main/results
  (``results-<eval set>.csv``; written by timm's ``validate.py`` / ``bulk_runner.py``).
* Hugging Face model-card metadata, ``model-index``:
  https://huggingface.co/docs/hub/model-cards#evaluation-results
* Open LLM Leaderboard v2 contents: https://huggingface.co/datasets/open-llm-leaderboard/contents;
  v1 (archived) tasks: https://huggingface.co/docs/leaderboards/open_llm_leaderboard/archive
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import logging
import math
import os
import posixpath
import re
from typing import Iterable

import pyarrow as pa

from hubscan.errors import InvalidInputError
from hubscan.schema import ACCURACY_SCHEMA
from hubscan.sources.hf import HubSource
from hubscan.sources.local import LocalSource
from hubscan.sources.timm import TimmSource
from hubscan.store import Dataset, rows_to_table

#: The sources whose model ids accuracy rows name: timm results (timm names), leaderboards and model cards
#: (hub repo ids), local paths.
TIMM, HUB, LOCAL = TimmSource.name, HubSource.name, LocalSource.name

log = logging.getLogger(__name__)

TABLE = "accuracy"

#: timm's results files (``results/`` of pytorch-image-models), tried in turn for a base URL.
TIMM_RESULT_FILES = ("results-imagenet.csv", "results-imagenet-real.csv", "results-imagenetv2-matched-frequency.csv",
                     "results-sketch.csv", "results-imagenet-r.csv", "results-imagenet-a.csv")
TIMM_METADATA_FILE = "model_metadata-in1k.csv"

#: Split of each timm evaluation set (ImageNet-1k val with its original / ReaL labels; the others
#: are whole test sets).
_TIMM_SPLIT = {"imagenet": "validation", "imagenet-real": "validation"}

#: Metric names whose lower values are better (model-card metrics, CSV without a direction).
_LOWER_IS_BETTER = re.compile(r"(^|[^a-z])(loss|err|error|wer|cer|ter|perplexity|ppl|mae|mse|rmse|bpb|bpc|"
                              r"distance|fid)([^a-z]|$)", re.I)


def _now():
    return _dt.datetime.now(_dt.timezone.utc)


def provenance_key(kind: str, name: str) -> str:
    """The file key of a provenance: ``<kind>-<sha256(kind, name)[:12]>`` (file-name safe).

    Parameters
    ----------
    kind : str
        ``timm``, ``card``, ``leaderboard``, ``csv`` …
    name : str
        The logical name within the kind (timm results file name, leaderboard version, CSV file
        name …).
    """
    digest = hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', kind)}-{digest}"


def higher_is_better(metric: str | None) -> bool:
    """Direction of a metric from its name: loss, error, perplexity, WER, CER, MAE, MSE, RMSE, FID …
    are lower-is-better; everything else (accuracy, F1, top1, BLEU …) higher-is-better."""
    return not (metric and _LOWER_IS_BETTER.search(metric.replace("-", "_")))


def _as_dataset(dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset(str(dataset))


def write_provenance(dataset, key: str, rows: list[dict]) -> pa.Table:
    """Write the rows of one provenance, replacing its earlier rows (in every ``source``
    partition) in the same Delta transaction.

    Parameters
    ----------
    dataset : str or hubscan.store.Dataset
    key : str
        Provenance key (:func:`provenance_key`).
    rows : list of dict
        Accuracy rows; ``source`` must be set on each; ``provenance_key`` and ``ingested_at`` are
        filled in.

    Returns
    -------
    pyarrow.Table
        The rows written (schema :data:`ACCURACY_SCHEMA`).

    Raises
    ------
    ValueError
        A row without a ``source``.
    """
    data = _as_dataset(dataset)
    now = _now()
    keep = []
    for r in rows:
        if not r.get("source"):
            raise ValueError(f"accuracy row without a source: {r.get('model_id')!r}")
        if not r.get("model_id") or not r.get("metric") or r.get("value") is None:
            continue
        keep.append({**r, "source": str(r["source"]), "provenance_key": key, "ingested_at": now})
    table = rows_to_table(sorted(keep, key=lambda r: r["source"]), ACCURACY_SCHEMA)
    data.write(TABLE, table, replace=("provenance_key", [key]))
    return table


def read_accuracy(dataset) -> "pandas.DataFrame":  # noqa: F821
    """The whole accuracy table as a pandas DataFrame (empty, with the schema's columns, if none)."""
    data = _as_dataset(dataset)
    return data.read(TABLE).to_pandas()


# -- reading files / URLs -----------------------------------------------------------------------

def _is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def _read_bytes(path: str) -> bytes:
    """Bytes of a local path, an http(s) URL (urllib) or another fsspec URL."""
    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if not _is_url(path):
        with open(path, "rb") as fh:
            return fh.read()
    if path.startswith(("http://", "https://")):  # plain urllib: no aiohttp needed
        import urllib.request
        with urllib.request.urlopen(path, timeout=120) as resp:  # noqa: S310 - a user-given URL
            return resp.read()
    import fsspec  # s3://, gs://, hf:// …
    with fsspec.open(path, "rb") as fh:
        return fh.read()


def _read_csv(path: str):
    import pandas as pd
    # param_count carries a thousands separator inside quotes ("1,014.45"); rank_diff a sign ("+2").
    return pd.read_csv(io.BytesIO(_read_bytes(path)), thousands=",")


# -- timm ---------------------------------------------------------------------------------------

def _timm_sources(path_or_dir_or_url: str) -> tuple[list[str], str | None]:
    """Result CSVs and the metadata CSV (or None) of a file, a folder or a base URL."""
    p = str(path_or_dir_or_url)
    if p.lower().endswith(".csv"):
        base = p.rsplit("/", 1)[0] if "/" in p else "."
        meta = f"{base}/{TIMM_METADATA_FILE}"
        if not _is_url(p):
            meta = os.path.join(os.path.dirname(os.path.abspath(p)), TIMM_METADATA_FILE)
            return [p], meta if os.path.exists(meta) else None
        return [p], meta
    if _is_url(p):
        base = p.rstrip("/")
        return [f"{base}/{f}" for f in TIMM_RESULT_FILES], f"{base}/{TIMM_METADATA_FILE}"
    files = sorted(os.path.join(p, f) for f in os.listdir(p) if f.startswith("results-") and f.endswith(".csv"))
    if not files:
        raise FileNotFoundError(f"no results-*.csv in {p}")
    meta = os.path.join(p, TIMM_METADATA_FILE)
    return files, meta if os.path.exists(meta) else None


def timm_benchmark(filename: str) -> str:
    """Benchmark name of a timm results file: ``results-imagenet-real.csv`` → ``imagenet-real``."""
    stem = posixpath.basename(str(filename).replace("\\", "/"))
    stem = stem[:-4] if stem.lower().endswith(".csv") else stem
    return stem[len("results-"):] if stem.startswith("results-") else stem


def _default_sizes(names: Iterable[str]) -> dict[str, tuple[int | None, int | None]]:
    """name → (pretrained_cfg input_size, test_input_size) from timm; (None, None) when unknown."""
    out = {}
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:  # pragma: no cover - timm is a dependency
        return {n: (None, None) for n in names}
    for n in names:
        try:
            cfg = get_pretrained_cfg(n)
        except Exception:  # noqa: BLE001 - an unknown / malformed name is just unknown
            cfg = None
        if cfg is None:
            out[n] = (None, None)
            continue
        ins = cfg.input_size[-1] if cfg.input_size else None
        tis = cfg.test_input_size[-1] if getattr(cfg, "test_input_size", None) else None
        out[n] = (ins, tis)
    return out


def _pick_default_size(df, image_size: str = "input"):
    """One row per model: the row at the model's pretrained-config ``input_size`` (``image_size=
    "input"``) or ``test_input_size`` (``"test"``); without a timm config (or when neither size is
    listed) the smaller (``"input"``) / larger (``"test"``) of the listed sizes."""
    if image_size not in ("input", "test"):
        raise ValueError(f"image_size must be 'input' or 'test', not {image_size!r}")
    dup = df["model"].duplicated(keep=False)
    if not dup.any():
        return df, 0
    sizes = _default_sizes(df.loc[dup, "model"].unique())
    keep = ~dup
    for name, g in df[dup].groupby("model", sort=False):
        ins, tis = sizes.get(name, (None, None))
        want = ins if image_size == "input" else (tis or ins)
        hit = g.index[g["img_size"] == want] if want is not None else []
        if len(hit) == 0:
            hit = [g["img_size"].idxmin() if image_size == "input" else g["img_size"].idxmax()]
        keep.loc[hit[0]] = True
    return df[keep], int((~keep).sum())


def _timm_pretrain(meta_path: str | None, names: Iterable[str]) -> dict[str, str]:
    """model name → pretraining data from ``model_metadata-in1k.csv``.

    That file is keyed by pre-tag architecture names (``resnet50``), and an architecture's tags
    differ in pretraining data (``resnet50.fb_swsl_ig1b_ft_in1k`` vs ``resnet50.a1_in1k``), so a
    value is carried over only where it is unambiguous: the exact name, or an architecture with a
    single pretrained tag among the results' names.
    """
    if not meta_path:
        return {}
    try:
        meta = _read_csv(meta_path)
    except Exception as exc:  # noqa: BLE001 - the metadata is optional
        log.info("timm metadata %s not read: %s", meta_path, exc)
        return {}
    if "model" not in meta.columns or "pretrain" not in meta.columns:
        return {}
    by_name = dict(zip(meta["model"].astype(str), meta["pretrain"].astype(str)))
    names = list(dict.fromkeys(names))
    per_arch: dict[str, list[str]] = {}
    for n in names:
        per_arch.setdefault(n.split(".")[0], []).append(n)
    out = {}
    for n in names:
        arch = n.split(".")[0]
        if n in by_name:
            out[n] = by_name[n]
        elif arch in by_name and len(per_arch[arch]) == 1:
            out[n] = by_name[arch]
    return out


def ingest_timm_results(dataset, path_or_dir_or_url, *, image_size: str = "input") -> pa.Table:
    """Ingest timm's ImageNet results CSVs: top-1 and top-5 of every model on every evaluation set.

    Each ``results-<set>.csv`` (columns ``model, img_size, top1, top1_err, top5, top5_err,
    param_count, crop_pct, interpolation`` [+ ``top1_diff, top5_diff, rank_diff``]) gives, per
    model, two rows: ``metric = top1`` and ``top5`` (percent, higher is better), ``benchmark`` =
    ``<set>`` (``imagenet``, ``imagenet-real``, ``imagenetv2-matched-frequency``, ``sketch``,
    ``imagenet-r``, ``imagenet-a``), ``source = timm``, ``model_id`` = the timm ``arch.tag`` name,
    ``revision`` null (any revision of the weights), extras ``img_size``, ``param_count`` (millions;
    the CSV's thousands separator, ``"1,014.45"``, is parsed) and ``pretrain`` (from
    ``model_metadata-in1k.csv`` when it is beside the results and unambiguous).

    **Models listed twice.** timm evaluates a model whose pretrained config has a
    ``test_input_size`` at both its ``input_size`` and its (larger) ``test_input_size``; in the
    2025-10-30 results every duplicate pair (290 models) is exactly that pair. By default
    (``image_size="input"``) the row at the pretrained config's ``input_size`` — the resolution the
    weights were trained / fine-tuned at, and the one every singly-listed model (976 of 1,266) is
    evaluated at — is kept and the ``test_input_size`` row is left out, so every model is compared
    at the same kind of resolution. ``image_size="test"`` keeps the ``test_input_size`` rows
    instead. Names timm does not know fall back to the smaller (``"input"``) / larger (``"test"``)
    size. The rule is written into each row's ``provenance``.

    Parameters
    ----------
    dataset : str or hubscan.store.Dataset
        The survey dataset to write to.
    path_or_dir_or_url : str
        One results CSV, a folder of them (every ``results-*.csv``; ``model_metadata-in1k.csv``
        when present), or a base URL of such a folder (the six files of
        :data:`TIMM_RESULT_FILES` are fetched; e.g.
        ``https://raw.githubusercontent.com/huggingface/pytorch-image-models/main/results``) or a
        single file's URL. URLs are read with fsspec.
    image_size : {"input", "test"}
        Which row of a model evaluated at two sizes to keep (see above).

    Returns
    -------
    pyarrow.Table
        The rows written (all evaluation sets).

    Notes
    -----
    One provenance per results file (key ``timm`` + file name): re-ingesting a file — from any copy
    or URL — replaces its rows.

    Source: https://github.com/huggingface/pytorch-image-models/tree/main/results (Apache-2.0).
    """
    files, meta_path = _timm_sources(path_or_dir_or_url)
    out = []
    for f in files:
        try:
            df = _read_csv(f)
        except Exception as exc:  # noqa: BLE001
            if _is_url(f) and str(path_or_dir_or_url).rstrip("/") != f:
                log.warning("timm results %s not read: %s", f, exc)
                continue
            raise
        missing = {"model", "img_size", "top1", "top5"} - set(df.columns)
        if missing:
            raise ValueError(f"{f}: not a timm results CSV (missing columns {sorted(missing)})")
        bench = timm_benchmark(f)
        n_rows = len(df)
        df, dropped = _pick_default_size(df, image_size)
        pretrain = _timm_pretrain(meta_path, df["model"].astype(str))
        which = "input_size" if image_size == "input" else "test_input_size"
        prov = (f"{f} (timm results; {n_rows} rows; models listed at two image sizes kept at their pretrained_cfg "
                f"{which}, {dropped} rows at the other size left out)")
        rows = []
        for rec in df.to_dict("records"):
            name = str(rec["model"])
            for metric in ("top1", "top5"):
                v = rec.get(metric)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                pc = rec.get("param_count")
                rows.append({"source": TIMM, "model_id": name, "revision": None, "benchmark": bench,
                             "split": _TIMM_SPLIT.get(bench, "test"), "metric": metric, "value": float(v),
                             "higher_is_better": True, "provenance": prov,
                             "img_size": int(rec["img_size"]) if rec.get("img_size") == rec.get("img_size") else None,
                             "param_count": float(pc) if pc is not None and pc == pc else None,
                             "pretrain": pretrain.get(name)})
        out.append(write_provenance(dataset, provenance_key(TIMM, posixpath.basename(f.replace("\\", "/"))), rows))
    if not out:
        raise FileNotFoundError(f"no timm results read from {path_or_dir_or_url}")
    return pa.concat_tables(out)


# -- model cards ----------------------------------------------------------------------------------

def ingest_card_results(dataset) -> pa.Table:
    """Turn the model cards' ``model-index`` results the survey stored (``models.eval_results``)
    into accuracy rows.

    Each stored result (task, dataset, dataset_name, split, metric, value) of a models row gives a
    row with the model's ``source``, ``model_id`` and ``revision`` (the card of the surveyed
    revision), ``benchmark`` = the result's dataset type (its name when the type is missing),
    ``metric`` = the metric type, ``split``, ``task``, ``dataset_name``; ``higher_is_better`` from
    the metric name (:func:`higher_is_better`). Results without a numeric value are skipped; a
    model surveyed under several analysis settings contributes its results once.

    Parameters
    ----------
    dataset : str or hubscan.store.Dataset

    Returns
    -------
    pyarrow.Table
        The rows written. One provenance (key ``card``) for the whole table: re-ingesting replaces.

    Notes
    -----
    Source: the ``model-index`` block of the Hugging Face model card metadata
    (https://huggingface.co/docs/hub/model-cards#evaluation-results), as read by
    :func:`hubscan.sources.hf.metadata_from_info`.
    """
    data = _as_dataset(dataset)
    models = data.read("models")
    cols = set(models.column_names)
    if "eval_results" not in cols or models.num_rows == 0:
        return write_provenance(data, provenance_key("card", "model-index"), [])
    t = models.select([c for c in ("source", "model_id", "revision", "eval_results") if c in cols]).to_pylist()
    rows, seen = [], set()
    for m in t:
        for r in m.get("eval_results") or []:
            value = r.get("value")
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            bench = r.get("dataset") or r.get("dataset_name")
            metric = r.get("metric")
            if not bench or not metric:
                continue
            ident = (m["source"], m["model_id"], m.get("revision"), r.get("task"), bench, r.get("dataset_name"),
                     r.get("split"), metric, float(value))
            if ident in seen:
                continue
            seen.add(ident)
            rows.append({"source": m["source"], "model_id": m["model_id"], "revision": m.get("revision"),
                         "benchmark": bench, "split": r.get("split"), "metric": metric, "value": float(value),
                         "higher_is_better": higher_is_better(metric), "task": r.get("task"),
                         "dataset_name": r.get("dataset_name"),
                         "provenance": "model card model-index (models.eval_results, as surveyed)"})
    return write_provenance(data, provenance_key("card", "model-index"), rows)


# -- Open LLM Leaderboard ------------------------------------------------------------------------

def _norm(col: str) -> str:
    """Column name without emoji, punctuation, spaces or case: ``"Average ⬆️"`` → ``average``,
    ``"MATH Lvl 5"`` → ``mathlvl5``, ``"#Params (B)"`` → ``paramsb``."""
    return re.sub(r"[^a-z0-9]", "", str(col).lower())


#: Normalised column aliases → metric names, per leaderboard version.
LEADERBOARD_V2 = {"ifeval": "ifeval", "bbh": "bbh", "bigbenchhard": "bbh", "mathlvl5": "math_lvl_5",
                  "mathhard": "math_lvl_5", "math": "math_lvl_5", "gpqa": "gpqa", "musr": "musr",
                  "mmlupro": "mmlu_pro"}
LEADERBOARD_V1 = {"arc": "arc", "arcchallenge": "arc", "arc25shot": "arc", "hellaswag": "hellaswag",
                  "hellaswag10shot": "hellaswag", "mmlu": "mmlu", "mmlu5shot": "mmlu", "truthfulqa": "truthfulqa",
                  "truthfulqamc2": "truthfulqa", "truthfulqa0shot": "truthfulqa", "winogrande": "winogrande",
                  "winogrande5shot": "winogrande", "gsm8k": "gsm8k", "gsm8k5shot": "gsm8k", "drop": "drop",
                  "drop3shot": "drop"}
_AVERAGE = ("average", "avg", "averagescore")
_MODEL_ID = ("fullname", "modelnameforquery", "modelid", "modelname", "repoid", "model", "name")
_REVISION = ("modelsha", "revision", "sha", "modelrevision", "commit")
_PARAMS_B = ("paramsb", "params", "numparams", "parametersb")
_PRECISION = ("precision",)
_WEIGHT_TYPE = ("weighttype",)
_FLAGGED = ("flagged",)


def _leaderboard_model_id(v) -> str | None:
    """A hub id from a leaderboard cell: plain ``org/name``, or the ``Model`` column's HTML link."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    if "<" in s:
        m = re.search(r'href="https?://huggingface\.co/([^"?#]+)"', s)
        if m:
            return m.group(1).strip("/")
        s = re.sub(r"<[^>]*>", "", s).strip()
    return s or None


def _read_table_any(path: str):
    """A pandas DataFrame of a Parquet (or CSV / JSON lines) file, local, URL or ``hf://`` path."""
    import pandas as pd
    p = str(path)
    if p.startswith("hf://"):  # HfFileSystem (huggingface_hub) through fsspec
        if p.endswith(".csv"):
            return pd.read_csv(p)
        return pd.read_parquet(p)
    low = p.lower()
    if low.endswith(".csv"):
        return pd.read_csv(io.BytesIO(_read_bytes(p)))
    if low.endswith((".jsonl", ".json")):
        return pd.read_json(io.BytesIO(_read_bytes(p)), lines=low.endswith(".jsonl"))
    if not _is_url(p) and os.path.isdir(p):
        return pd.read_parquet(p)
    return pd.read_parquet(io.BytesIO(_read_bytes(p)))


def ingest_leaderboard(dataset, path, *, version: str | None = None, drop_flagged: bool = True) -> pa.Table:
    """Ingest an Open LLM Leaderboard contents table (v2, or the v1 archive).

    Column names are normalised (emoji, punctuation, spaces and case removed) and matched against
    known aliases, so both layouts — and renamed snapshots — are read:

    * v2 (``open-llm-leaderboard/contents``): ``fullname`` (or the ``Model`` HTML link),
      ``Model sha``, ``Precision``, ``Weight type``, ``#Params (B)``, ``Flagged``, ``Average ⬆️``,
      ``IFEval``, ``BBH``, ``MATH Lvl 5``, ``GPQA``, ``MUSR``, ``MMLU-PRO`` (the normalised
      scores; the ``… Raw`` columns are ignored) → metrics ``average``, ``ifeval``, ``bbh``,
      ``math_lvl_5``, ``gpqa``, ``musr``, ``mmlu_pro``, benchmark ``open_llm_leaderboard_v2``.
    * v1 archive: ``fullname`` / ``model_name_for_query`` / ``eval_name``-era columns, ``Model sha``
      / ``Revision``, ``Average ⬆️``, ``ARC``, ``HellaSwag``, ``MMLU``, ``TruthfulQA``,
      ``Winogrande``, ``GSM8K`` (``DROP`` when present) → metrics ``average``, ``arc``,
      ``hellaswag``, ``mmlu``, ``truthfulqa``, ``winogrande``, ``gsm8k``, benchmark
      ``open_llm_leaderboard_v1``.

    Rows are ``source = hf`` with the model's hub id; ``revision`` = the evaluated commit when
    given (``main`` / empty → null, i.e. any revision); ``variant`` = precision (plus the weight
    type when not ``Original``); ``param_count`` = ``#Params (B)`` × 1000 (millions). All metrics
    are percentages, higher is better.

    Parameters
    ----------
    dataset : str or hubscan.store.Dataset
    path : str
        A Parquet file (or folder), CSV or JSON-lines file; a URL; or an ``hf://datasets/…`` path
        read through huggingface_hub's ``HfFileSystem`` (e.g.
        ``hf://datasets/open-llm-leaderboard/contents/data/train-00000-of-00001.parquet``).
    version : {"v1", "v2"}, optional
        Force the layout; by default v2 when any v2 task column is present, else v1.
    drop_flagged : bool
        Leave out rows the leaderboard flagged (``Flagged`` true: contamination / misreporting).

    Returns
    -------
    pyarrow.Table
        The rows written. One provenance per leaderboard version: a new snapshot replaces the old.

    Raises
    ------
    ValueError
        No model-id column, or no known task column.

    Notes
    -----
    Sources: https://huggingface.co/datasets/open-llm-leaderboard/contents (v2) and
    https://huggingface.co/docs/leaderboards/open_llm_leaderboard/archive (v1 tasks).
    """
    df = _read_table_any(path)
    norm = {}
    for c in df.columns:
        norm.setdefault(_norm(c), c)

    def col(aliases):
        for a in aliases:
            if a in norm:
                return norm[a]
        return None

    v2 = {norm[a]: m for a, m in LEADERBOARD_V2.items() if a in norm}
    v1 = {norm[a]: m for a, m in LEADERBOARD_V1.items() if a in norm}
    if version is None:
        version = "v2" if v2 else ("v1" if v1 else None)
    if version not in ("v1", "v2"):
        raise ValueError(f"{path}: no Open LLM Leaderboard task columns among {list(df.columns)}")
    tasks = dict(v2 if version == "v2" else v1)
    avg = col(_AVERAGE)
    if avg is not None:
        tasks[avg] = "average"
    if not tasks:
        raise ValueError(f"{path}: no {version} task columns among {list(df.columns)}")
    id_cols = [norm[a] for a in _MODEL_ID if a in norm]
    if not id_cols:
        raise ValueError(f"{path}: no model id column (fullname, model_name_for_query, Model …)")
    rev_c, params_c = col(_REVISION), col(_PARAMS_B)
    prec_c, wt_c, flag_c = col(_PRECISION), col(_WEIGHT_TYPE), col(_FLAGGED)
    bench = f"open_llm_leaderboard_{version}"
    prov = f"{path} (Open LLM Leaderboard {version} contents" + ("; flagged rows left out)" if drop_flagged else ")")
    rows, skipped = [], 0
    for rec in df.to_dict("records"):
        if drop_flagged and flag_c is not None and _parse_bool(rec.get(flag_c)) is True:
            skipped += 1
            continue
        mid = next((x for x in (_leaderboard_model_id(rec.get(c)) for c in id_cols) if x), None)
        if not mid:
            skipped += 1
            continue
        rev = rec.get(rev_c) if rev_c else None
        rev = None if rev is None or (isinstance(rev, float) and math.isnan(rev)) else str(rev).strip()
        if rev in ("", "main", "None", "nan"):
            rev = None
        variant = None
        if prec_c is not None and rec.get(prec_c) is not None:
            variant = str(rec.get(prec_c))
        if wt_c is not None and rec.get(wt_c) not in (None, "", "Original"):
            variant = f"{variant or ''}/{rec.get(wt_c)}".lstrip("/")
        params = rec.get(params_c) if params_c else None
        try:
            params = float(params) * 1000.0 if params is not None and math.isfinite(float(params)) else None
        except (TypeError, ValueError):
            params = None
        for c, metric in tasks.items():
            v = rec.get(c)
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                continue
            rows.append({"source": HUB, "model_id": mid, "revision": rev, "benchmark": bench, "split": None,
                         "metric": metric, "value": v, "higher_is_better": True, "provenance": prov,
                         "param_count": params, "variant": variant})
    if skipped:
        log.info("leaderboard %s: %d rows left out (flagged or without a model id)", path, skipped)
    return write_provenance(dataset, provenance_key("leaderboard", version), rows)


# -- plain CSV -----------------------------------------------------------------------------------

def _parse_bool(v) -> bool | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "t", "yes", "y"):
        return True
    if s in ("0", "false", "f", "no", "n"):
        return False
    return None


def _known_models(data: Dataset) -> dict[str, set]:
    """model_id → the sources the dataset's ``models`` table has it under."""
    known: dict[str, set] = {}
    models = data.read("models")
    if models.num_rows and {"source", "model_id"} <= set(models.column_names):
        for s, m in zip(models.column("source").to_pylist(), models.column("model_id").to_pylist()):
            known.setdefault(m, set()).add(s)
    return known


def _looks_local(model_id: str) -> bool:
    """A model id that names a file or folder rather than a hub repo (``org/name``)."""
    from hubscan.weights import weight_suffixes
    mid = model_id.replace("\\", "/")
    return (mid.startswith(("/", "./", "../", "~")) or mid.count("/") > 1
            or mid.lower().endswith(weight_suffixes()) or os.path.exists(model_id))


def _match_model(model_id: str, source: str | None, known: dict[str, set]) -> tuple[str, str]:
    """(model_id, source) of a CSV row whose source is not given (or is ``local``).

    The id the dataset has, under its only source; else, for a path (``out/hub/net/v3.pt``,
    ``/abs/out/hub/net/v3.pt``, ``./net/v3.pt``), the local model whose id (relative to the
    surveyed root) the path ends with — of several, the longest — else the id as given, ``local`` when it
    looks like a path (:func:`_looks_local`) and ``hf`` otherwise.
    """
    cands = known.get(model_id, set())
    if len(cands) == 1 and source in (None, *cands):
        return model_id, next(iter(cands))
    if source == LOCAL or _looks_local(model_id):
        path = posixpath.normpath(model_id.replace("\\", "/"))
        hits = [m for m, srcs in known.items() if LOCAL in srcs
                and (path == m or path.endswith("/" + m.lstrip("/")))]
        if hits:  # the most specific (suffixes of one path differ in length): work/out/hub/x.pt over out/hub/x.pt
            return max(hits, key=len), LOCAL
        return model_id, LOCAL
    return model_id, source or HUB


def match_report(dataset, table: pa.Table) -> dict:
    """How many models named by ingested accuracy rows are models of the dataset.

    Parameters
    ----------
    dataset : str or hubscan.store.Dataset
    table : pyarrow.Table
        Rows as an ``ingest_*`` function returns them (``source``, ``model_id``).

    Returns
    -------
    dict
        ``models`` (distinct (source, model_id) in ``table``), ``matched`` (of those, how many the
        ``models`` table holds), ``unmatched`` (the model ids of the others, sorted), ``example_ids`` (up to
        3 model ids of the dataset, to show how ids look there).
    """
    known = _known_models(_as_dataset(dataset))
    pairs = set(zip(table.column("source").to_pylist(), table.column("model_id").to_pylist())) if table.num_rows else set()
    missing = [(s, m) for s, m in pairs if s not in known.get(m, ())]
    return {"models": len(pairs), "matched": len(pairs) - len(missing), "unmatched": sorted({m for _, m in missing}),
            "example_ids": sorted(known)[:3]}


#: A number with thousands separators (``1,000``, ``-12,345.5``): the only commas a CSV value may hold.
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?")


def ingest_csv(dataset, path, *, source: str | None = None, benchmark: str = "custom",
               left_out: list | None = None) -> pa.Table:
    """Ingest a plain CSV of reported results: columns ``model_id, metric, value`` and optionally
    ``source``, ``benchmark``, ``split``, ``revision``, ``higher_is_better``.

    The source of a row is its ``source`` cell, else the ``source`` argument, else the source of
    the ``models`` rows with that model id when they have exactly one, else ``local`` for an id
    that is a path — matched to the local model whose id (relative to the surveyed root) the path
    ends with — else ``hf`` (:func:`_match_model`).
    ``higher_is_better`` missing or empty → from the metric name (:func:`higher_is_better`);
    ``benchmark`` missing → the ``benchmark`` argument.

    Parameters
    ----------
    dataset : str or hubscan.store.Dataset
    path : str
        Local path or URL of the CSV.
    source : str, optional
        Default source (``hf``, ``timm``, ``local``).
    benchmark : str
        Default benchmark.
    left_out : list, optional
        Receives (line number, reason) of each row not written: an empty ``model_id``, ``metric`` or
        ``value`` (a model without a result), or a repeat of an earlier line with the same value.

    Returns
    -------
    pyarrow.Table
        The rows written. Provenance key ``csv`` + the file's name: re-ingesting a file of the
        same name replaces its rows.

    Raises
    ------
    hubscan.errors.InvalidInputError
        (a ValueError) Naming the file: not UTF-8 text, a required column missing, a value not a finite
        number (``nan``, ``inf`` too: stored, they would enter every correlation), two lines giving one
        model's metric (same source, revision, benchmark and split) different values. Nothing is written then.
    """
    data = _as_dataset(dataset)
    try:
        text = _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInputError(path, f"not a UTF-8 text (CSV) file: byte {e.start} is "
                                      f"{e.object[e.start:e.start + 1]!r}") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return write_provenance(data, provenance_key("csv", posixpath.basename(str(path))), [])
    fields = {f.strip().lower(): f for f in reader.fieldnames}
    for need in ("model_id", "metric", "value"):
        if need not in fields:
            raise InvalidInputError(path, f"CSV needs columns model_id, metric, value (has {reader.fieldnames})")
    def cell(rec, name):
        f = fields.get(name)
        v = rec.get(f) if f else None
        v = v.strip() if isinstance(v, str) else v
        return v if v not in ("", None) else None

    known = _known_models(data)
    rows, seen = [], {}
    for rec in reader:
        line = reader.line_num  # the line the row ends on (a quoted cell may span lines)
        mid, metric, value = cell(rec, "model_id"), cell(rec, "metric"), cell(rec, "value")
        if not mid or not metric or value is None:
            if left_out is not None and any(v not in ("", None) for v in rec.values()):  # (not a blank line)
                left_out.append((line, "no " + " or ".join(n for n, v in (("model_id", mid), ("metric", metric),
                                                                         ("value", value)) if v is None)))
            continue
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str) and "," in text:  # thousands separators only: "0,8" is not 8
            if not _THOUSANDS.fullmatch(text):
                raise InvalidInputError(path, f"value {value!r} of {mid} is not a number (a decimal comma? write "
                                              "0.8; commas only as thousands separators, 1,000)")
            text = text.replace(",", "")
        try:
            if isinstance(text, str) and "_" in text:  # Python's float reads 1_000; a CSV number has no "_"
                raise ValueError(text)
            number = float(text)
        except ValueError:
            raise InvalidInputError(path, f"value {value!r} of {mid} is not a number") from None
        if not math.isfinite(number):  # nan / inf parse as floats: stored, they would skew every correlation
            raise InvalidInputError(path, f"value {value!r} of {mid} is not a finite number")
        value = number
        src = cell(rec, "source") or source
        if src in (None, LOCAL):
            mid, src = _match_model(mid, src, known)
        hib = _parse_bool(cell(rec, "higher_is_better"))
        key = (src, mid, cell(rec, "revision"), cell(rec, "benchmark") or benchmark, cell(rec, "split"), metric)
        if key in seen:
            first, earlier = seen[key]
            if earlier != value:
                raise InvalidInputError(path, f"{metric} of {mid} is given twice: {earlier:g} on line {first}, "
                                              f"{value:g} on line {line} (one value per model, metric, "
                                              "benchmark and split)")
            if left_out is not None:
                left_out.append((line, f"the same as line {first}"))
            continue
        seen[key] = (line, value)
        rows.append({"source": src, "model_id": mid, "revision": cell(rec, "revision"),
                     "benchmark": cell(rec, "benchmark") or benchmark, "split": cell(rec, "split"),
                     "metric": metric, "value": value,
                     "higher_is_better": higher_is_better(metric) if hib is None else hib,
                     "provenance": f"{path} (CSV)"})
    return write_provenance(data, provenance_key("csv", posixpath.basename(str(path).replace("\\", "/"))), rows)


__all__ = ["ingest_timm_results", "ingest_card_results", "ingest_leaderboard", "ingest_csv", "read_accuracy",
           "match_report",
           "write_provenance", "provenance_key", "higher_is_better", "timm_benchmark", "TABLE"]
