"""Weights on the Hugging Face Hub, read through ``huggingface_hub``'s API and hubscan's own HTTP client
(:attr:`hubscan.hub.HubClient.session`: range reads counted per model, never the host program's client).

safetensors (single or sharded): coalesced, streamed HTTP range reads
    Per shard: one range GET for the 8-byte header length and one for the header (validated like a
    local file, so a 1 TiB header length or a shape larger than its data is refused before anything
    else is fetched). Then the tensors the analysis may load — every tensor with ≥ 2 dimensions; biases
    and norms are never fetched — are grouped into as few byte ranges as possible by
    :func:`coalesce`: two neighbours are merged when the gap between them is at most
    :data:`MERGE_GAP` (1 MiB) **or** at most :data:`MERGE_FRACTION` (2 %) of the merged span. Each range
    is **one streamed GET** read forward: a tensor's bytes are copied out of the stream as they arrive
    and the rest of the range stays on the wire, so memory holds about two tensors (the one analyzed
    and the one being prefetched by :func:`hubscan.analysis.analyze_entries`), never the span.
    A tensor the analysis skips (e.g. a vocabulary matrix over ``max_N``) is jumped over: a gap larger
    than the merge rule allows closes the stream and opens a new one after it. A tensor asked for
    behind the stream's position (out of file order) is fetched by its own range, leaving the stream
    where it is (also once that stream is spent: bytes already read are never fetched twice). A stream
    cut mid-body resumes from the byte it stopped at (:meth:`HubClient.call`).
    ``WeightSet.stats``: ``bytes_read`` (body bytes consumed), ``requests`` (HTTP requests, retries
    included) and ``files_sha256`` (sorted; when every file's first response named its sha256 in
    ``X-Linked-Etag``, as the Hub does for LFS files). The header-length GETs of all the files come first:
    :attr:`HubClient.content_check` sees the sha256s before any header or tensor byte is read. When a content
    check is set and the model has several weight files (shards, components), their sha256s come instead
    from one ``get_paths_info`` request made after the shard indexes are read and before any weight file is
    touched (:func:`lfs_sha256`): a sharded re-upload costs its index and that request, not one request per
    shard.
whole-file formats (``pytorch_model*.bin``, ``.pt``, ONNX, GGUF, Keras / TF HDF5, Flax msgpack)
    ``hf_hub_download`` into a temporary cache (or ``HubClient.cache_dir``), read with the local readers,
    and removed when the set is closed unless ``HubClient.keep_cache``.
config.json
    Read beside the weights (``WeightSet.config``; a component's own when the model is components): one small
    request more (two when absent at the root and the model is components), counted in ``requests``, its bytes
    not in ``bytes_read`` (weight files only).
offline (``HF_HUB_OFFLINE=1``)
    Everything from the local cache with ``hf_hub_download(local_files_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch

from hubscan.errors import CorruptFileError, HubscanError, NoWeightsError, RemoteFileNotFoundError
from hubscan.hub import HubClient
from hubscan.refs import ModelRef, check_repo_path
from hubscan.weights.base import WeightSet
from hubscan.weights.files import component_prefix, parse_shard_index
from hubscan.weights.safetensors import header_length, parse_header, tensor_entries

log = logging.getLogger(__name__)

#: Merge rule of :func:`coalesce`: neighbours whose gap is at most this many bytes are read in one range …
MERGE_GAP = 1 << 20
#: … or whose gap is at most this fraction of the merged span.
MERGE_FRACTION = 0.02
#: Bytes taken from a stream per read (the only buffer besides the tensor being filled).
CHUNK = 1 << 20
#: Paths asked per ``get_paths_info`` request (:func:`lfs_sha256`): huggingface_hub's own batch
#: (``FETCH_LFS_BATCH_SIZE`` of its commit code).
PATHS_PER_REQUEST = 500


def coalesce(spans, max_gap: int | None = None, fraction: float | None = None) -> list[tuple[int, int]]:
    """Merge byte spans into as few ranges as the gap rule allows.

    Parameters
    ----------
    spans : iterable of (int, int)
        ``(begin, end)`` byte offsets, ``end`` exclusive; any order, may touch.
    max_gap : int, optional
        Merge two neighbours when the gap between them is at most this many bytes … (default
        :data:`MERGE_GAP`)
    fraction : float, optional
        … or at most this fraction of the merged range's length (default :data:`MERGE_FRACTION`).

    Returns
    -------
    list of (int, int)
        Disjoint ranges, sorted, each covering one or more spans (gaps ≤ the rule inside).
    """
    max_gap = MERGE_GAP if max_gap is None else max_gap
    fraction = MERGE_FRACTION if fraction is None else fraction
    out: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if out:
            gb, ge = out[-1]
            gap = begin - ge
            if gap <= max_gap or gap <= fraction * (max(end, ge) - gb):
                out[-1] = (gb, max(ge, end))
                continue
        out.append((begin, end))
    return out


def open_hub_files(ref: ModelRef, client: HubClient | None = None) -> WeightSet:
    """Open a pinned hub reference (see :meth:`hubscan.sources.HubSource.resolve`) as a WeightSet.

    Parameters
    ----------
    ref : ModelRef
        ``files`` chosen and ``revision`` pinned; ``repo_id`` the hub repository.
    client : HubClient, optional

    Returns
    -------
    WeightSet

    Raises
    ------
    hubscan.errors.HubscanError
    """
    client = client or HubClient()
    if not ref.files:
        raise NoWeightsError(str(ref), "no weight files chosen (resolve the reference first)")
    safetensors = all(f.endswith((".safetensors", "model.safetensors.index.json")) for f in ref.files)
    if safetensors and not client.offline:
        return _open_ranged(ref, client)
    return _open_downloaded(ref, client)


def _file_url(client: HubClient, ref: ModelRef, filename: str) -> str:
    from huggingface_hub import hf_hub_url
    return hf_hub_url(ref.repo_id, check_repo_path(filename, ref.repo_id), revision=ref.revision,
                      endpoint=client.endpoint)


def _get(client: HubClient, url: str, stats: dict, start: int | None = None, length: int | None = None,
         seen: dict | None = None) -> tuple[bytes, int]:
    """One GET (a byte range when ``start`` is given): ``(body, total file size)``; ``seen["sha256"]``: the
    file's sha256 when a response (the resolve redirect or the file itself) named it. No retries here."""
    from huggingface_hub.utils import hf_raise_for_status

    headers = client.headers()
    if start is not None:
        if not length:
            return b"", -1
        headers["Range"] = f"bytes={start}-{start + length - 1}"
    r = client.session.get(url, headers=headers, timeout=client.timeout)
    if r.status_code == 416:  # range past the end: an empty or short file
        return b"", _total_size(r, 0)
    hf_raise_for_status(r)
    if seen is not None:
        seen["sha256"] = linked_sha256(r)
    body = r.content
    stats["bytes_read"] = stats.get("bytes_read", 0) + len(body)
    if start is not None and r.status_code == 200:  # the server ignored Range: the body is the whole file
        return body[start:start + length], len(body)
    return body, _total_size(r, len(body))


def linked_sha256(response) -> str | None:
    """The sha256 of an LFS file as the Hub names it in ``X-Linked-Etag`` (on the ``resolve`` response, the
    redirect when there is one); None for a file without one (a regular git file: its ``ETag`` is a git sha1)."""
    for r in (*response.history, response):
        tag = r.headers.get("x-linked-etag", "").strip().removeprefix("W/").strip('"')
        if len(tag) == 64 and all(c in "0123456789abcdef" for c in tag):
            return tag
    return None


def _total_size(response, default: int) -> int:
    rng = response.headers.get("content-range", "")
    tail = rng.rpartition("/")[2].strip()
    return int(tail) if tail.isdigit() else default


class _Stream:
    """One streamed GET over ``[start, end)`` of a file, read forward."""

    def __init__(self, client: HubClient, url: str, start: int, end: int, stats: dict):
        from huggingface_hub.utils import hf_raise_for_status

        self.url, self.start, self.pos, self.end, self.stats = url, start, start, end, stats
        self._stack = contextlib.ExitStack()
        headers = {**client.headers(), "Range": f"bytes={start}-{end - 1}"}
        try:
            response = self._stack.enter_context(client.session.stream("GET", url, headers=headers,
                                                                      timeout=client.timeout))
            hf_raise_for_status(response)
        except BaseException:
            self._stack.close()
            raise
        self._chunks = response.iter_bytes(CHUNK)
        self._left = memoryview(b"")
        self.broken = False
        if response.status_code == 200:  # Range ignored: the body starts at byte 0
            self.pos = 0
            self.discard(start)

    def discard(self, n: int) -> None:
        """Skip ``n`` bytes of the stream."""
        while n > 0:
            piece = self._take(n)
            n -= len(piece)

    def readinto(self, out: memoryview, done: list) -> None:
        """Fill ``out[done[0]:]`` from the stream; ``done[0]`` advances as bytes arrive (kept on failure)."""
        while done[0] < len(out):
            piece = self._take(len(out) - done[0])
            out[done[0]:done[0] + len(piece)] = piece
            done[0] += len(piece)

    def _take(self, n: int) -> memoryview:
        if not self._left:
            try:
                chunk = next(self._chunks, None)
            except BaseException:
                self.broken = True
                raise
            if not chunk:
                self.broken = True
                raise CorruptFileError(self.url, f"the server ended the range early at byte {self.pos}")
            self.stats["bytes_read"] = self.stats.get("bytes_read", 0) + len(chunk)
            self._left = memoryview(chunk)
        piece, self._left = self._left[:n], self._left[n:]
        self.pos += len(piece)
        return piece

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self._stack.close()


class _RangedFile:
    """One remote safetensors file: its header length (and sha256) read when made, the header by :meth:`open`,
    tensors streamed by coalesced ranges."""

    def __init__(self, client: HubClient, ref: ModelRef, filename: str, stats: dict, lock: threading.Lock):
        self.url = self.where = _file_url(client, ref, filename)
        self.client, self.stats, self.lock = client, stats, lock
        seen: dict = {}
        self.prefix, self.size = client.call(_get, client, self.url, stats, 0, 8, seen, what=self.where, stats=stats)
        self.sha256 = seen.get("sha256")
        self.tensors: list = []
        self.unknown: list = []  # tensors of a dtype hubscan cannot decode: skipped rows, the file still read
        self.stream: _Stream | None = None

    def open(self) -> "_RangedFile":
        """Read and validate the header."""
        client, stats = self.client, self.stats
        n = header_length(self.prefix, max(self.size, len(self.prefix)), self.where)
        header, _ = client.call(_get, client, self.url, stats, 8, n, what=self.where, stats=stats)
        self.data_start = 8 + n
        self.tensors, _ = parse_header(header, self.size, self.where, self.unknown)
        self.ranges = coalesce((self.data_start + t.begin, self.data_start + t.end) for t in self.tensors
                               if len(t.shape) >= 2 and t.end > t.begin)
        return self

    def load(self, info) -> torch.Tensor:
        start, end = self.data_start + info.begin, self.data_start + info.end
        buf = torch.empty(end - start, dtype=torch.uint8)
        if end > start:
            out, done = memoryview(buf.numpy()), [0]
            self.client.call(self._fill, out, start, end, done, what=f"{self.where}: tensor {info.name!r}",
                             stats=self.stats)
        return buf.view(info.dtype).reshape(info.shape)

    def _fill(self, out: memoryview, start: int, end: int, done: list) -> None:
        with self.lock:
            pos = start + done[0]
            s = self.stream
            usable = s is not None and not s.broken and s.pos <= pos and end <= s.end
            if usable and (pos - s.pos <= MERGE_GAP or pos - s.pos <= MERGE_FRACTION * (end - s.start)):
                s.discard(pos - s.pos)
            elif s is not None and pos < s.pos:
                # behind the stream (out of file order, e.g. a scale stored before its weight): its own
                # range, never the rest of the span again; the stream stays for what follows
                one = _Stream(self.client, self.url, pos, end, self.stats)
                try:
                    one.readinto(out, done)
                finally:
                    one.close()
                return
            else:
                if s is not None:
                    s.close()
                stop = next((e for b, e in self.ranges if b <= start < e), end)
                s = self.stream = _Stream(self.client, self.url, pos, max(stop, end), self.stats)
            s.readinto(out, done)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def lfs_sha256(client: HubClient, ref: ModelRef, paths: list[str], stats: dict) -> list | None:
    """The sha256 of the LFS files ``paths`` of ``ref`` at its pinned revision, from the Hub's file metadata
    (``HfApi.get_paths_info``, ``lfs.sha256``): one request per :data:`PATHS_PER_REQUEST` paths, counted in
    ``stats``; no byte of the files is read.

    Returns
    -------
    list of str or None
        The sha256s (64 hex digits) of the paths the revision holds, sorted (a path it lacks is left out, as the
        reader leaves out a shard it cannot open); None when one of them is not an LFS file (no sha256) or none
        is there.
    """
    infos: list = []
    for i in range(0, len(paths), PATHS_PER_REQUEST):
        infos += client.call(client.api.get_paths_info, ref.repo_id, paths[i:i + PATHS_PER_REQUEST],
                             revision=ref.revision, what=f"hf:{ref.repo_id}@{ref.revision}", stats=stats)
    shas = [getattr(getattr(f, "lfs", None), "sha256", None) for f in infos]
    return sorted(shas) if shas and all(shas) else None


def _open_ranged(ref: ModelRef, client: HubClient) -> WeightSet:
    stats: dict = {"bytes_read": 0, "requests": 0}
    lock = threading.Lock()
    missing: list = []
    listed: list = []  # (prefix, {name: path in the repo}, shard index or None), in the chosen files' order
    for chosen in ref.files:  # shard indexes read: they name the weight files
        prefix = component_prefix(chosen, ref.files)  # components (diffusers sub-folders): <folder>/<tensor>
        if not chosen.endswith(".index.json"):
            listed.append((prefix, {chosen: chosen}, None))
            continue
        raw, _ = client.call(_get, client, _file_url(client, ref, chosen), stats, what=f"hf:{ref.repo_id}/{chosen}",
                             stats=stats)
        index = parse_shard_index(raw, f"hf:{ref.repo_id}/{chosen}")
        folder = os.path.dirname(chosen)
        listed.append((prefix, {s: f"{folder}/{s}" if folder else s for s in index.shards()}, index))
    paths = [p for _, names, _ in listed for p in names.values()]
    shas = checked = None
    if client.content_check is not None and len(paths) > 1:  # several files: their sha256s in one request
        shas, checked = lfs_sha256(client, ref, paths, stats), True
        client.content_check(shas, stats)
    parts: list = []  # (prefix, {name: _RangedFile}, shard index or None)
    for prefix, names, index in listed:  # each file's first response: its header length (and sha256)
        files = {}
        for name, path in names.items():
            try:
                files[name] = _RangedFile(client, ref, path, stats, lock)
            except RemoteFileNotFoundError:
                if index is None:
                    raise
                missing += [(prefix + n, r) for n, r in index.missing(name, None)]
        parts.append((prefix, files, index))
    opened = [rf for _, files, _ in parts for rf in files.values()]
    if not checked:
        shas = sorted((rf.sha256 for rf in opened), key=str)
        shas = shas if shas and all(shas) else None
        if client.content_check is not None:  # before any header or tensor byte (a survey's content dedupe)
            client.content_check(shas, stats)
    if shas:
        stats["files_sha256"] = shas
    order: list = []  # (file, tensor info, name prefix), in the files' order
    for prefix, files, index in parts:
        for rf in files.values():
            rf.open()
        if index is None:
            order += [(rf, info, prefix) for rf in files.values() for info in rf.tensors + rf.unknown]
            continue
        order += [(files[s], info, prefix) for s in index.shards() if s in files
                  for info in files[s].tensors + files[s].unknown if index.owns(info.name, s)]
        for s in files:
            missing += [(prefix + n, r) for n, r in
                        index.missing(s, {info.name for info in files[s].tensors + files[s].unknown})]

    entries = [dataclasses.replace(e, name=prefix + e.name) if prefix else e for rf, info, prefix in order
               for e in tensor_entries(*(([info], []) if info.dtype is not None else ([], [info])), rf.where, rf.load)]

    def close():
        for rf in opened:
            rf.close()

    return WeightSet(files=[rf.where for rf in opened], format="safetensors", entries=lambda: iter(entries),
                     missing=missing, close=close, stats=stats, config=_hub_config(ref, client, stats))


def _hub_config(ref: ModelRef, client: HubClient, stats: dict) -> dict | None:
    """The model's ``config.json`` read from the Hub (:func:`hubscan.weights.model_config`): absent → None. Its
    requests count in ``stats``, its bytes not (``bytes_read`` counts weight files)."""
    from hubscan.weights import model_config

    def read_json(rel: str):
        own: dict = {"bytes_read": 0, "requests": 0}
        try:
            raw, _ = client.call(_get, client, _file_url(client, ref, rel), own, what=f"hf:{ref.repo_id}/{rel}", stats=own)
            return json.loads(raw)
        except (HubscanError, ValueError):  # optional: absent or unreadable
            return None
        finally:
            stats["requests"] = stats.get("requests", 0) + own["requests"]

    return model_config(read_json, ref.files)


def _open_downloaded(ref: ModelRef, client: HubClient) -> WeightSet:
    from huggingface_hub import hf_hub_download
    from hubscan.weights import open_chosen

    tmp = None if client.cache_dir else tempfile.mkdtemp(prefix="hubscan-cache-")
    cache_dir = client.cache_dir or tmp
    stats: dict = {"bytes_read": 0, "requests": 0}
    what = f"hf:{ref.repo_id}@{ref.revision}"

    def download(name: str, weights: bool = True) -> str:
        check_repo_path(name, ref.repo_id)
        local = client.call(hf_hub_download, ref.repo_id, name, revision=ref.revision, cache_dir=cache_dir,
                            endpoint=client.endpoint, token=client.token, local_files_only=bool(client.offline),
                            etag_timeout=client.timeout, what=f"{what}/{name}", stats=stats)
        stats["bytes_read"] += os.path.getsize(local) if weights else 0
        return local

    try:
        paths = [download(f) for f in ref.files]
        for f, local in zip(ref.files, paths):  # an index (a component's too) names shards beside it
            if f.endswith(".index.json"):
                folder = os.path.dirname(f)
                for shard in parse_shard_index(Path(local).read_text(), local).shards():
                    with contextlib.suppress(RemoteFileNotFoundError):  # the reader reports it as missing
                        download(f"{folder}/{shard}" if folder else shard)
        # the snapshot folder holds the repository's layout: the same rule as a local folder opens it
        root = paths[0][: len(paths[0]) - len(ref.files[0])]
        ws = open_chosen(root, ref.files)
        ws.config = _downloaded_config(ref, client, cache_dir, stats, root)
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
    ws.stats = {**ws.stats, **stats}
    return ws


def _downloaded_config(ref: ModelRef, client: HubClient, cache_dir: str, stats: dict, root: str) -> dict | None:
    """The ``config.json`` of a downloaded model (:func:`hubscan.weights.model_config`), fetched into the same
    cache; absent → None; its bytes are not counted in ``bytes_read``."""
    from huggingface_hub import hf_hub_download
    from hubscan.weights import folder_config

    for rel in ["config.json", *sorted({f"{f.split('/', 1)[0]}/config.json" for f in ref.files if "/" in f})]:
        with contextlib.suppress(HubscanError):  # optional: absent, or not in an offline cache
            client.call(hf_hub_download, ref.repo_id, rel, revision=ref.revision, cache_dir=cache_dir,
                        endpoint=client.endpoint, token=client.token, local_files_only=bool(client.offline),
                        etag_timeout=client.timeout, what=f"hf:{ref.repo_id}@{ref.revision}/{rel}", stats=stats)
        if rel == "config.json" and os.path.isfile(os.path.join(root, rel)):
            break
    return folder_config(root, ref.files)
