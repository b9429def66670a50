"""Weights on the Hugging Face Hub, read through ``huggingface_hub``.

* safetensors (single or sharded): **HTTP range reads** through ``HfFileSystem`` with no read-ahead
  cache: the 8-byte length and the header first (validated like a local file, so a 1 TiB header
  length or a shape larger than its data is refused before anything else is fetched), then only the
  tensors the analysis loads — 1-D tensors (biases, norms) are never fetched. Bytes fetched are
  counted in ``WeightSet.stats["bytes_read"]``.
* whole-file formats (``pytorch_model*.bin``, ``.pt``, ONNX, GGUF): ``hf_hub_download`` into a
  temporary cache (or ``HubClient.cache_dir``), read with the local readers, and removed when the
  set is closed unless ``HubClient.keep_cache``.
* offline (``HF_HUB_OFFLINE=1``): everything from the local cache with ``hf_hub_download``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch

from hubscan.errors import CorruptFileError, RemoteFileNotFoundError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef
from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.files import parse_shard_index
from hubscan.weights.safetensors import header_length, parse_header, tensor_entries

log = logging.getLogger(__name__)


def open_ref(ref: ModelRef, client: HubClient | None = None) -> WeightSet:
    """Open a pinned reference (see :func:`hubscan.sources.resolve`) as a WeightSet.

    Parameters
    ----------
    ref : ModelRef
        Resolved: ``files`` chosen, ``revision`` pinned (hub) — local refs need only ``id``.
    client : HubClient, optional

    Returns
    -------
    WeightSet

    Raises
    ------
    hubscan.errors.HubscanError
    """
    from hubscan.weights import open_weights

    if ref.source == "local":
        return open_weights(ref.id)
    client = client or HubClient()
    if not ref.files:
        from hubscan.errors import NoWeightsError
        raise NoWeightsError(str(ref), "no weight files chosen (resolve the reference first)")
    safetensors = all(f.endswith((".safetensors", "model.safetensors.index.json")) for f in ref.files)
    if safetensors and not client.offline:
        return _open_ranged(ref, client)
    return _open_downloaded(ref, client)


class _RangedFile:
    """One remote safetensors file: header parsed up front, tensors fetched by range on demand."""

    def __init__(self, client: HubClient, ref: ModelRef, filename: str, stats: dict, lock: threading.Lock):
        self.where = f"{client.endpoint}/{ref.repo_id}/resolve/{ref.revision}/{filename}"
        self.client, self.stats, self.lock = client, stats, lock
        path = f"{ref.repo_id}@{ref.revision}/{filename}"
        self.f = client.call(client.fs.open, path, "rb", cache_type="none", block_size=1 << 20,
                             what=f"hf:{ref.repo_id}@{ref.revision}/{filename}")
        self.size = self.f.size
        n = header_length(self._read(0, min(8, self.size)), self.size, self.where)
        self.data_start = 8 + n
        self.unknown: list = []  # tensors of a dtype hubscan cannot decode: skipped rows, the file still read
        self.tensors, _ = parse_header(self._read(8, n), self.size, self.where, self.unknown)

    def _read(self, start: int, length: int) -> bytes:
        def fetch():
            with self.lock:
                self.f.seek(start)
                return self.f.read(length)
        data = self.client.call(fetch, what=self.where)
        if len(data) != length:
            raise CorruptFileError(self.where, f"short read: {len(data)} of {length} bytes at offset {start}")
        self.stats["bytes_read"] = self.stats.get("bytes_read", 0) + len(data)
        return data

    def load(self, info) -> torch.Tensor:
        raw = self._read(self.data_start + info.begin, info.end - info.begin)
        if info.end == info.begin:
            return torch.empty(info.shape, dtype=info.dtype)
        return torch.frombuffer(bytearray(raw), dtype=info.dtype).reshape(info.shape)

    def close(self):
        try:
            self.f.close()
        except Exception:  # noqa: BLE001 - closing a half-failed stream
            pass


def _open_ranged(ref: ModelRef, client: HubClient) -> WeightSet:
    stats: dict = {"bytes_read": 0}
    lock = threading.Lock()
    missing: list = []
    if ref.files[0].endswith(".index.json"):
        index_name = ref.files[0]
        raw = client.call(lambda: client.fs.cat_file(f"{ref.repo_id}@{ref.revision}/{index_name}"),
                          what=f"hf:{ref.repo_id}/{index_name}")
        stats["bytes_read"] += len(raw)
        index = parse_shard_index(raw, f"hf:{ref.repo_id}/{index_name}")
        folder = os.path.dirname(index_name)
        files = {}
        for shard in index.shards():
            name = f"{folder}/{shard}" if folder else shard
            try:
                files[shard] = _RangedFile(client, ref, name, stats, lock)
            except RemoteFileNotFoundError:  # the shard is absent: its tensors are reported missing
                missing += index.missing(shard, None)
        order = [(files[s], info) for s in index.shards() if s in files
                 for info in files[s].tensors + files[s].unknown if index.owns(info.name, s)]
        for s in files:
            missing += index.missing(s, {info.name for info in files[s].tensors + files[s].unknown})
        opened = list(files.values())
    else:
        opened = [_RangedFile(client, ref, f, stats, lock) for f in ref.files]
        order = [(rf, info) for rf in opened for info in rf.tensors + rf.unknown]

    entries = [e for rf, info in order for e in tensor_entries(*(([info], []) if info.dtype is not None else ([], [info])),
                                                                rf.where, rf.load)]
    if not ref.files[0].endswith(".index.json"):  # components (diffusers sub-folders): named <folder>/<tensor>
        from hubscan.weights.files import component_prefix
        prefix = {rf.where: component_prefix(f, ref.files) for rf, f in zip(opened, ref.files)}
        entries = [dataclasses.replace(e, name=prefix[e.file] + e.name) if prefix[e.file] else e for e in entries]

    def close():
        for rf in opened:
            rf.close()

    ws = WeightSet(files=[rf.where for rf in opened], format="safetensors", entries=lambda: iter(entries),
                   missing=missing, close=close)
    ws.stats = stats
    return ws


def _open_downloaded(ref: ModelRef, client: HubClient) -> WeightSet:
    from huggingface_hub import hf_hub_download
    from hubscan.sources.hf import check_repo_path
    from hubscan.weights import open_chosen

    tmp = None if client.cache_dir else tempfile.mkdtemp(prefix="hubscan-cache-")
    cache_dir = client.cache_dir or tmp
    stats: dict = {"bytes_read": 0}
    what = f"hf:{ref.repo_id}@{ref.revision}"

    def download(name: str) -> str:
        check_repo_path(name, ref.repo_id)
        local = client.call(hf_hub_download, ref.repo_id, name, revision=ref.revision, cache_dir=cache_dir,
                            endpoint=client.endpoint, token=client.token, local_files_only=bool(client.offline),
                            etag_timeout=client.timeout, what=f"{what}/{name}")
        stats["bytes_read"] += os.path.getsize(local)
        return local

    try:
        paths = [download(f) for f in ref.files]
        if ref.files[0].endswith(".index.json"):
            index = parse_shard_index(Path(paths[0]).read_text(), paths[0])
            folder = os.path.dirname(ref.files[0])
            for shard in index.shards():
                try:
                    download(f"{folder}/{shard}" if folder else shard)
                except RemoteFileNotFoundError:
                    pass  # the shard is absent: the reader reports its tensors missing
        # the snapshot folder holds the repository's layout: the same rule as a local folder opens it
        ws = open_chosen(paths[0][: len(paths[0]) - len(ref.files[0])], ref.files)
    except BaseException:
        if tmp and not client.keep_cache:
            shutil.rmtree(tmp, ignore_errors=True)
        raise

    inner_close = ws.close

    def close():
        inner_close()
        if tmp and not client.keep_cache:
            shutil.rmtree(tmp, ignore_errors=True)

    ws.close = close
    ws.stats = stats
    return ws
