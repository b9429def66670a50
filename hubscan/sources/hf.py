"""Hugging Face Hub source (``hf``): enumerate models, pin them to a commit, choose their weight files.

Enumeration is ``HfApi.list_models`` with ``expand=`` (one request per page, no per-model calls: the
listing's ``sha`` and ``siblings`` pin each model); resolution of a single reference is
``HfApi.model_info`` at the requested revision, which pins the commit sha. Weights are read by
:func:`hubscan.weights.remote.open_hub_files` (coalesced range reads, or downloads for whole-file formats).
"""

from __future__ import annotations

import logging
import re
from typing import Iterator

from hubscan.errors import NoWeightsError, UnsafeFileError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef, check_repo_path
from hubscan.sources import register_source

log = logging.getLogger(__name__)

#: Properties fetched with each listed model (``list_models(expand=...)``).
EXPAND = ["sha", "siblings", "safetensors", "cardData", "downloads", "likes", "library_name",
          "pipeline_tag", "tags", "config", "lastModified", "createdAt", "gated", "private"]


def choose_files(filenames: list[str], repo: str = "", adapter: bool = False) -> tuple[tuple[str, ...], str]:
    """Choose a model's weight files from its repository listing.

    The rule is :func:`hubscan.weights.files.choose_weight_files` (the same for local folders): safetensors
    (single, or sharded via ``model.safetensors.index.json``), then ``pytorch_model*.bin`` (sharded index
    too), then components in sub-folders (diffusers), ONNX, GGUF, other torch files; one precision
    variant. With ``adapter=True`` only ``adapter_model.*`` is chosen.

    Parameters
    ----------
    filenames : list of str
        Paths in the repository.
    repo : str
        Repository id, for messages.
    adapter : bool

    Returns
    -------
    (files, format)
        Paths to fetch (an index file first when sharded) and the reader format name.

    Raises
    ------
    NoWeightsError
        No weight file of a known format.
    UnsafeFileError
        A chosen path would leave the repository.
    """
    from hubscan.weights.files import choose_weight_files

    for f in filenames:  # a listing that tries to leave the repository is refused whole
        check_repo_path(f, repo)
    files, fmt = choose_weight_files(filenames, repo, adapter=adapter)
    return tuple(check_repo_path(f, repo) for f in files), fmt


def metadata_from_info(info) -> dict:
    """The survey's per-model metadata from a ``huggingface_hub.ModelInfo``.

    Returns
    -------
    dict
        downloads, likes, library_name, pipeline_tag, tags, num_parameters (safetensors total),
        model_type and architectures (config), eval_results (model-index: list of dicts with task,
        dataset, split, metric, value), gated, private, created_at, last_modified, files_not_read (from the
        siblings: :func:`hubscan.weights.files.unread_files`).
    """
    from hubscan.weights.files import unread_files

    config = getattr(info, "config", None) or {}
    st = getattr(info, "safetensors", None)
    card = getattr(info, "card_data", None)
    evals = []
    for r in (getattr(card, "eval_results", None) or []) if card is not None else []:
        evals.append({"task": getattr(r, "task_type", None), "dataset": getattr(r, "dataset_type", None),
                      "dataset_name": getattr(r, "dataset_name", None), "split": getattr(r, "dataset_split", None),
                      "metric": getattr(r, "metric_type", None), "value": _num(getattr(r, "metric_value", None))})
    return {
        "downloads": getattr(info, "downloads", None), "likes": getattr(info, "likes", None),
        "library_name": getattr(info, "library_name", None), "pipeline_tag": getattr(info, "pipeline_tag", None),
        "tags": list(getattr(info, "tags", None) or []),
        "num_parameters": getattr(st, "total", None) if st is not None else None,
        "model_type": config.get("model_type") if isinstance(config, dict) else None,
        "architectures": list(config.get("architectures") or []) if isinstance(config, dict) else [],
        "eval_results": evals,
        "gated": bool(getattr(info, "gated", False)), "private": bool(getattr(info, "private", False)),
        "created_at": str(getattr(info, "created_at", "") or "") or None,
        "last_modified": str(getattr(info, "last_modified", "") or "") or None,
        "files_not_read": unread_files([s.rfilename for s in (getattr(info, "siblings", None) or [])],
                                       getattr(info, "id", "")),
    }


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def list_hf(client: HubClient | None = None, *, filter: str | list | None = None, author: str | None = None,
            search: str | None = None, pipeline_tag: str | None = None, sort: str | None = "downloads",
            limit: int | None = None) -> Iterator[tuple[ModelRef, dict]]:
    """Enumerate hub models, most downloaded first by default.

    Parameters
    ----------
    client : HubClient, optional
    filter : str or list of str
        Tags, e.g. ``"timm"``, ``"safetensors"``, ``"text-generation"`` (``list_models`` has no
        ``library=``: libraries are tags).
    author, search, pipeline_tag : str
    sort : str
        ``downloads``, ``likes``, ``lastModified``, ``createdAt`` or ``trending_score``.
    limit : int

    Yields
    ------
    (ModelRef, dict)
        The ref pinned to the listed sha, its files chosen (empty if it has none: the survey records
        the reason when resolving), and :func:`metadata_from_info`.
    """
    client = client or HubClient()
    for info in client.iterate(client.api.list_models, what="list_models", filter=filter, author=author,
                               search=search, pipeline_tag=pipeline_tag, sort=sort, limit=limit, expand=EXPAND):
        yield ref_from_info(info, ModelRef("hf", info.id, repo_id=info.id)), metadata_from_info(info)


def ref_from_info(info, ref: ModelRef) -> ModelRef:
    """Pin ``ref`` to ``info.sha`` and choose its files from ``info.siblings`` (none if no weights)."""
    names = [s.rfilename for s in (info.siblings or [])]
    try:
        files, _ = choose_files(names, info.id)
    except (NoWeightsError, UnsafeFileError):
        files = ()
    return ModelRef(ref.source, ref.id, info.sha, files, info.id)


def resolve_hf(ref: ModelRef, client: HubClient | None = None) -> tuple[ModelRef, dict]:
    """Pin a hub ref to its commit sha and choose its weight files.

    Parameters
    ----------
    ref : ModelRef
        ``source`` hf or timm with ``repo_id`` set; ``revision`` a branch, tag, sha or None (main).
    client : HubClient, optional

    Returns
    -------
    (ModelRef, dict)
        Pinned ref with files, and the model's metadata.

    Raises
    ------
    GatedModelError, SourceError, NoWeightsError, UnsafeFileError
    """
    client = client or HubClient()
    repo = ref.repo_id or ref.id
    if client.offline:
        return _resolve_from_cache(ref, repo, client)
    info = client.call(client.api.model_info, repo, revision=ref.revision, files_metadata=False, timeout=client.timeout,
                       what=f"hf:{repo}" + (f"@{ref.revision}" if ref.revision else ""))
    names = [s.rfilename for s in (info.siblings or [])]
    files, _ = choose_files(names, repo)
    meta = metadata_from_info(info)
    return ModelRef(ref.source, ref.id, info.sha, files, repo), meta


def _resolve_from_cache(ref: ModelRef, repo: str, client: HubClient) -> tuple[ModelRef, dict]:
    """Offline: pin from the local Hugging Face cache (``refs/<branch>`` → sha, files of the snapshot)."""
    import json
    import os
    import re
    from huggingface_hub import constants
    from hubscan.errors import SourceError

    where = f"hf:{repo}" + (f"@{ref.revision}" if ref.revision else "")
    base = os.path.join(client.cache_dir or constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    rev = ref.revision or "main"
    sha = rev if re.fullmatch(r"[0-9a-f]{40}", rev) else None
    if sha is None:
        try:
            with open(os.path.join(base, "refs", rev)) as f:
                sha = f.read().strip()
        except OSError:
            sha = None
    snap = os.path.join(base, "snapshots", sha) if sha else ""
    if not sha or not os.path.isdir(snap):
        raise SourceError(where, "offline mode (HF_HUB_OFFLINE=1) and not in the local cache")
    names = sorted(os.path.relpath(os.path.join(d, n), snap).replace(os.sep, "/")
                   for d, _, files in os.walk(snap) for n in files)
    files, _ = choose_files(names, repo)
    from hubscan.weights.files import files_not_read

    meta: dict = {"files_not_read": list(files_not_read(names, files))}
    if "config.json" in names:
        try:
            cfg = json.loads(open(os.path.join(snap, "config.json")).read())
            meta.update(model_type=cfg.get("model_type"), architectures=list(cfg.get("architectures") or []))
        except (OSError, ValueError):
            pass
    return ModelRef(ref.source, ref.id, sha, files, repo), meta


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


@register_source
class HubSource:
    """The Hugging Face Hub: ``hf:ORG/NAME[@REV]``; ``--source hf`` lists the Hub (``list_models``)."""

    name = "hf"
    spec = "hf"
    filters = ("filter", "author", "search", "pipeline_tag", "sort")

    def parse(self, body: str) -> ModelRef:
        repo, at, rev = body.partition("@")
        if not _REPO_ID.match(repo) or ".." in repo:
            raise ValueError(f"hf:{body}: not a Hugging Face repo id (expected hf:ORG/NAME[@REVISION])")
        if at and not rev.strip():
            raise ValueError(f"hf:{body}: no revision after '@' (expected hf:ORG/NAME[@REVISION], e.g. @main or a "
                             "commit hash)")
        return ModelRef("hf", repo, rev or None, repo_id=repo)

    def enumerate(self, arg, *, client, limit=None, **filters):
        return list_hf(client, limit=limit, **filters)

    def resolve(self, ref, client):
        return resolve_hf(ref, client)

    def open(self, ref, client):
        from hubscan.weights.remote import open_hub_files
        return open_hub_files(ref, client)

    def adapter_config(self, ref, client):
        return hub_adapter_config(ref, client)


def hub_adapter_config(ref: ModelRef, client: HubClient | None = None):
    """The ``adapter_config.json`` of a hub adapter repository (its chosen files are ``adapter_model.*``:
    :func:`hubscan.weights.peft.is_adapter`, the rule of the local source too), downloaded at the pinned
    revision, or None for any other repository: :func:`hubscan.sources.open_model` then reads the adapter's
    files as ΔW = s·B·A per module (:func:`hubscan.weights.peft.open_adapter`).

    Returns
    -------
    hubscan.weights.peft.LoraConfig or None
        None too when the repository has no config (logged: the factors are then analyzed as stored, as for a
        local adapter file without its config).

    Raises
    ------
    hubscan.errors.HubscanError
        The config cannot be fetched (SourceError other than its absence) or read (CorruptFileError).
    """
    from hubscan.errors import RemoteFileNotFoundError
    from hubscan.weights.peft import ADAPTER_CONFIG, LoraConfig, is_adapter

    if not is_adapter(ref.files):
        return None
    client = client or HubClient()
    repo = ref.repo_id or ref.id
    try:
        path = client.call(client.api.hf_hub_download, repo, ADAPTER_CONFIG, revision=ref.revision,
                           cache_dir=client.cache_dir, what=f"hf:{repo}/{ADAPTER_CONFIG}")
    except RemoteFileNotFoundError:
        log.warning("hf:%s: no %s: LoRA factors analyzed as stored, not as ΔW = s·B·A", repo, ADAPTER_CONFIG)
        return None
    return LoraConfig.read(path)
