"""A fake Hugging Face Hub on 127.0.0.1 for tests: stdlib only (``http.server``).

It speaks the part of the Hub HTTP API that the real ``huggingface_hub`` 2.4 client uses, so the real client
can be pointed at it with ``endpoint=hub.endpoint`` (``HfApi(endpoint=...)``, ``hf_hub_download(...,
endpoint=...)``, ``HfFileSystem(endpoint=...)``, ``HfApi(endpoint=...).get_safetensors_metadata``).

    from hub_server import FakeHub, serve, status, cut, delay

    with serve() as hub:
        hub.add_model_from_dir("sentence-transformers/all-MiniLM-L6-v2", folder,
                               info={"downloads": 10, "tags": ["sentence-transformers"]})
        HfApi(endpoint=hub.endpoint).model_info("sentence-transformers/all-MiniLM-L6-v2")
        hub.bytes_sent(repo_id="sentence-transformers/all-MiniLM-L6-v2", path="model.safetensors")
        hub.inject("model.safetensors", status(503), times=1)

Endpoints served (what huggingface_hub 2.4 calls):

* ``GET  /api/models`` — list_models: ``search``, ``author``, ``filter`` (repeated; tag, library_name or
  pipeline_tag; ``base_model:<id>`` / ``base_model:<relation>:<id>`` tags are added from cards' ``base_model`` /
  ``base_model_relation`` as the Hub does; ``expand=baseModels|childrenModelCount|usedStorage`` → 400 as on the
  Hub, which serves them on model_info only), ``pipeline_tag``, ``gated``, ``sort`` (downloads, likes, createdAt, lastModified,
  trendingScore; descending unless ``direction=1``), ``limit`` (= page size), ``expand``/``expand[]``,
  ``full``, ``cardData``, ``config``, ``cursor``; pages beyond ``list_page_size`` via a ``Link: <...>;
  rel="next"`` header (the client follows it, see ``utils/_pagination.py``).
* ``GET  /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` — model_info / repo_info
  (``expand``, ``blobs=true`` adds size/blobId/lfs to siblings).
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]`` — list_repo_tree (``recursive``, ``expand``, ``cursor``;
  pages of ``tree_page_size``).
* ``POST /api/models/{repo}/paths-info/{rev}`` — get_paths_info (form or JSON ``paths``, ``expand``).
* ``GET  /api/models/{repo}/refs``, ``/api/models/{repo}/commits/{rev}`` — list_repo_refs / list_repo_commits.
* ``GET  /api/models/{repo}/safetensors-metadata/{file}`` — get_sharded_safetensors_metadata (main only).
* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` — file_exists / get_hf_file_metadata / hf_hub_download /
  HfFileSystem / get_safetensors_metadata, with a single ``Range`` (``bytes=a-b``, ``bytes=a-``,
  ``bytes=-n``) → 206 + ``Content-Range``; 416 when unsatisfiable; multi-range is ignored (200, full body).
  Headers: ``X-Repo-Commit``, ``ETag`` (git blob sha1, or sha256 for LFS files), ``X-Linked-Etag`` and
  ``X-Linked-Size`` (LFS files), ``Content-Length``, ``Accept-Ranges: bytes``.
  With ``FakeHub(lfs_redirect=True)`` LFS files answer 302 to a second listener (another origin, like the
  real CDN), so the client stops at the redirect for HEAD and follows it for GET.

* Dataset repositories (``/api/datasets/{repo}…``, ``/datasets/{repo}/resolve/…``: info, tree, paths-info,
  resolve) and the write API of ``create_repo`` / ``create_commit``: ``POST /api/repos/create``,
  ``/api/validate-yaml``, ``/api/{models|datasets}/{repo}/preupload/{rev}``, the git-LFS batch API
  (``/{repo}.git/info/lfs/objects/batch``, ``basic`` transfer: PUT to the second listener, then ``verify``)
  and ``/api/{models|datasets}/{repo}/commit/{rev}`` (NDJSON). See :class:`FakeHub` for the load behaviours
  (latency, rate-limit windows, 5xx bursts, deletion after listing).

From the command line: ``python tests/hub_server.py --demo-tree DIR`` (hubscan's demo model tree) or
``--hubbox DIR [--week 2] [--latency S] [--rate-limit api=R/W]`` (a hub-in-a-box, ``hubscan.demo.hubbox``).

Errors carry the ``X-Error-Code`` that ``utils/_http.py::hf_raise_for_status`` maps: ``RepoNotFound`` →
RepositoryNotFoundError, ``RevisionNotFound`` → RevisionNotFoundError, ``EntryNotFound`` →
RemoteEntryNotFoundError (alias EntryNotFoundError), ``GatedRepo`` → GatedRepoError. Gated repos
(``info["gated"]`` truthy) serve metadata to everyone but files only to granted tokens (no token → 401,
wrong token → 403). Private repos (``info["private"]``) are invisible without a granted token (401 without a
token, 404 with a wrong one). Authorization values are never stored or logged.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import fnmatch
import hashlib
import http.server
import json
import math
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

__all__ = [
    "FakeHub",
    "serve",
    "status",
    "cut",
    "delay",
    "drop",
    "Status",
    "Cut",
    "Delay",
    "Drop",
    "Injection",
    "RequestRecord",
    "git_blob_sha1",
    "isolated_hf_client",
]

# Files stored with git-lfs when the repo has no .gitattributes (the Hub's default .gitattributes, abridged).
DEFAULT_LFS_PATTERNS = (
    "*.safetensors", "*.bin", "*.bin.*", "*.pt", "*.pth", "*.ckpt", "*.onnx", "*.h5", "*.msgpack", "*.gguf",
    "*.tflite", "*.ot", "*.model", "*.pkl", "*.pickle", "*.npy", "*.npz", "*.joblib", "*.pb", "*.zip",
    "*.tar.*", "*.gz", "*.xz", "*.7z", "*.parquet", "*.arrow", "*.jit", "*tfevents*",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # larger files are always LFS on the Hub
_BASE_DATE = _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc)
_CHUNK = 64 * 1024


# ----------------------------------------------------------------------------------------------- faults
@dataclass(frozen=True)
class Status:
    """Answer with this status code (and headers, and an optional body) instead of the real response."""

    code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Cut:
    """Send the real status and headers (full Content-Length), then ``after_bytes`` of the body, then close."""

    after_bytes: int


@dataclass(frozen=True)
class Delay:
    """Sleep ``seconds`` before answering normally (the client may time out first)."""

    seconds: float


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending anything."""


def status(code: int, headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Status:
    """Fault: reply ``code`` (e.g. 404, 401, 403, 429 with ``{"Retry-After": "1"}``, 500, 503)."""
    return Status(code, dict(headers or {}), body)


def cut(after_bytes: int) -> Cut:
    """Fault: truncate the body after ``after_bytes`` (clamped to length − 1) and close the connection."""
    return Cut(int(after_bytes))


def delay(seconds: float) -> Delay:
    """Fault: wait ``seconds`` before answering."""
    return Delay(float(seconds))


def drop() -> Drop:
    """Fault: close the connection before any response byte."""
    return Drop()


Fault = Status | Cut | Delay | Drop


@dataclass
class Injection:
    """A registered fault. ``fired`` counts how many requests it hit; it stops after ``times``."""

    match: str | Callable[[RequestRecord], bool]
    fault: Fault
    times: int | None = 1  # None: forever
    method: str | None = None
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, rec: RequestRecord) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and rec.method != self.method.upper():
            return False
        if isinstance(self.fault, Cut) and rec.method == "HEAD":
            return False  # nothing to cut: let the GET that follows take it
        if callable(self.match):
            return bool(self.match(rec))
        return self.match in rec.target


# ------------------------------------------------------------------------------------------- accounting
@dataclass
class RequestRecord:
    """One request as the server saw it. ``bytes_sent`` counts body bytes only (0 for HEAD)."""

    seq: int
    method: str
    target: str  # unquoted path + "?" + query
    path: str  # unquoted URL path
    query: dict[str, list[str]]
    headers: dict[str, str]  # request headers, Authorization redacted
    authorized: bool  # an Authorization header was present
    kind: str = "unknown"  # list | info | tree | paths-info | refs | commits | st-metadata | resolve | cdn
    # | create | validate-yaml | preupload | commit | lfs-batch | lfs-verify | upload
    repo_id: str | None = None
    revision: str | None = None
    file: str | None = None  # path in repo for resolve/cdn requests
    range: str | None = None  # the Range header as sent
    served: tuple[int, int] | None = None  # (start, end inclusive) of the body actually served
    status: int | None = None
    bytes_sent: int = 0
    fault: str | None = None
    error: str | None = None
    started: float = 0.0
    finished: float | None = None
    repo_type: str = "model"  # model | dataset
    rate_kind: str | None = None  # the Hub's rate-limit bucket: "api" (/api/…, LFS batch), "resolvers" (…/resolve/…);
    # None for the second listener (CDN redirects, LFS uploads), which the Hub does not count
    time: float = 0.0  # seconds since the hub started (``started`` is time.monotonic())
    window: int | None = None  # index of the rate-limit window it was counted in (when limits are set)
    bytes_received: int = 0  # request body bytes (uploads, commits)


# ------------------------------------------------------------------------------------------------ store
_HASH_CACHE: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid``/``blobId`` for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file_digest(path: str, kind: str) -> str:
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, kind)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % st.st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
    return digest


class _Blob:
    """File content (bytes or a local file), with its git/LFS identities."""

    def __init__(self, source: bytes | str | os.PathLike, is_lfs: bool | None, lfs_patterns, name: str):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.data: bytes | None = bytes(source)
            self.local: str | None = None
            self.size = len(self.data)
        else:
            self.data = None
            self.local = os.fspath(source)
            if not os.path.isfile(self.local):
                raise FileNotFoundError(self.local)
            self.size = os.path.getsize(self.local)
        if is_lfs is None:
            is_lfs = self.size >= LFS_SIZE_THRESHOLD or _matches_any(name, lfs_patterns)
        self.is_lfs = is_lfs
        if is_lfs:
            self.sha256 = hashlib.sha256(self.data).hexdigest() if self.data is not None else _file_digest(
                self.local, "sha256"
            )
            pointer = (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            ).encode()
            self.pointer_size = len(pointer)
            self.oid = git_blob_sha1(pointer)
            self.etag = self.sha256
        else:
            self.sha256 = None
            self.pointer_size = None
            self.oid = git_blob_sha1(self.data) if self.data is not None else _file_digest(self.local, "gitsha1")
            self.etag = self.oid

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        length = self.size - start if length is None else length
        if self.data is not None:
            return self.data[start : start + length]
        with open(self.local, "rb") as f:
            f.seek(start)
            return f.read(length)

    def iter_chunks(self, start: int, length: int) -> Iterator[bytes]:
        if self.data is not None:
            for off in range(start, start + length, _CHUNK):
                yield self.data[off : min(off + _CHUNK, start + length)]
            return
        with open(self.local, "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


def _matches_any(name: str, patterns) -> bool:
    base = name.rsplit("/", 1)[-1]
    for pat in patterns:
        if "/" in pat:
            if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, pat.replace("**/", "")):
                return True
        elif fnmatch.fnmatchcase(base, pat):
            return True
    return False


def _lfs_patterns_from_gitattributes(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            out.append(parts[0])
    return out


@dataclass
class _Revision:
    sha: str
    files: dict[str, _Blob]
    info: dict[str, Any]
    title: str
    date: _dt.datetime
    index: int

    def dirs(self) -> set[str]:
        out = set()
        for p in self.files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out


@dataclass
class _Repo:
    repo_id: str
    revisions: dict[str, _Revision] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha
    deleted: int = 0  # > 0: deleted after a listing (FakeHub.delete_after_listing), the hub's n-th deletion; 404

    @property
    def head(self) -> _Revision:
        return self.revisions[self.refs.get("main") or self.order[-1]]

    def resolve(self, rev: str | None) -> _Revision | None:
        rev = rev or "main"
        if rev in self.refs:
            return self.revisions[self.refs[rev]]
        if rev.startswith("refs/heads/") and rev[11:] in self.refs:
            return self.revisions[self.refs[rev[11:]]]
        if rev in self.revisions:
            return self.revisions[rev]
        if re.fullmatch(r"[0-9a-f]{7,39}", rev):
            hits = [s for s in self.revisions if s.startswith(rev)]
            if len(hits) == 1:
                return self.revisions[hits[0]]
        return None


def _iso(d: _dt.datetime | str) -> str:
    if isinstance(d, str):
        return d
    return d.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes", "on")


def _safetensors_header(blob: _Blob) -> dict | None:
    try:
        (n,) = struct.unpack("<Q", blob.read(0, 8))
        if n > 100_000_000 or n + 8 > blob.size:
            return None
        return json.loads(blob.read(8, n))
    except Exception:
        return None


def _param_counts(headers: list[dict]) -> dict | None:
    counts: dict[str, int] = {}
    for h in headers:
        for k, t in h.items():
            if k == "__metadata__" or not isinstance(t, dict):
                continue
            n = 1
            for d in t.get("shape", []):
                n *= int(d)
            counts[t.get("dtype", "?")] = counts.get(t.get("dtype", "?"), 0) + n
    return {"parameters": counts, "total": sum(counts.values())} if counts else None


def _base_model_tags(card: dict) -> list[str]:
    """The tags the Hub adds for a card's ``base_model`` (one id or a list): ``base_model:<id>`` and, when the
    card states ``base_model_relation``, ``base_model:<relation>:<id>`` (the Hub also infers a relation when
    the card gives none — adapter, quantized, merge, finetune; this fake does not, so such a child carries only
    ``base_model:<id>``, as legacy repos do)."""
    bases = card.get("base_model") or []
    bases = [bases] if isinstance(bases, str) else [b for b in bases if isinstance(b, str)]
    relation = card.get("base_model_relation")
    tags = [f"base_model:{b}" for b in bases]
    if isinstance(relation, str) and relation:
        tags += [f"base_model:{relation}:{b}" for b in bases]
    return tags


def _front_matter(text: str) -> dict | None:
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.S)
    if not m:
        return None
    try:
        import yaml  # optional: only used to mimic the Hub's cardData from README.md

        data = yaml.safe_load(m.group(1))
        return data if isinstance(data, dict) else None
    except Exception:
        return None


class _Response:
    def __init__(self, code: int, headers: dict[str, str] | None = None, body: bytes = b"", *,
                 blob: _Blob | None = None, span: tuple[int, int] | None = None):
        self.code = code
        self.headers = dict(headers or {})
        self.body = body
        self.blob = blob  # stream this blob's span instead of ``body``
        self.span = span  # (start, length)

    @property
    def length(self) -> int:
        return self.span[1] if self.blob is not None else len(self.body)


def _json(code: int, obj: Any, headers: dict[str, str] | None = None) -> _Response:
    body = json.dumps(obj).encode()
    return _Response(code, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)


def _error(code: int, error_code: str | None, message: str, headers: dict[str, str] | None = None) -> _Response:
    h = {"X-Error-Message": message, **(headers or {})}
    if error_code:
        h["X-Error-Code"] = error_code
    return _json(code, {"error": message}, h)


# ------------------------------------------------------------------------------------------------ server
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, hub: FakeHub, role: str):
        self.hub = hub
        self.role = role  # "hub" or "cdn"
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return  # a client that went away between requests (a survey's actors ending): not the fake's error
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 120  # idle keep-alive connections are closed after this

    def log_message(self, format, *args):  # silence stderr; the hub keeps its own log (no headers)
        pass

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without TCP_NODELAY, Nagle + delayed ACK add
        # ~40 ms to every request (a real hub / CDN does not behave like that)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.hub._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, False)

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def _body(self) -> bytes:
        """The request body: by Content-Length, or chunked (httpx streams file uploads that way)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _handle(self, method: str) -> None:
        hub: FakeHub = self.server.hub
        body_in = self._body()
        rec = hub._new_record(method, self.path, self.headers, self.server.role)
        rec.bytes_received = len(body_in)
        try:
            throttled, rate_headers = hub._admit(rec)  # rate-limit windows: counted on arrival
            inj = hub._match(rec) if throttled is None else None
            fault = inj.fault if inj is not None else None
            wait = hub._latency_for(rec) + (fault.seconds if isinstance(fault, Delay) else 0.0)
            if wait > 0:
                hub._stop.wait(wait)
            if isinstance(fault, Drop):
                rec.status = 0
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if throttled is not None:
                resp = throttled
            elif isinstance(fault, Status):
                resp = self._status_fault(fault, rec)
            else:
                resp = hub._route(rec, self.path, hub._token(self.headers), body_in, self.server.role)
            resp.headers.update(rate_headers)
            self._send(resp, rec, fault.after_bytes if isinstance(fault, Cut) else None)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout) as e:
            rec.error = f"client went away: {type(e).__name__}"
            self.close_connection = True
        except Exception as e:  # a bug in the fake: answer 500 rather than hang the client
            rec.error = f"server error: {type(e).__name__}: {e}"
            if rec.status is None:
                with contextlib.suppress(Exception):
                    self._send(_error(500, None, "fake hub internal error"), rec, None)
            self.close_connection = True
        finally:
            rec.finished = time.monotonic()

    def _status_fault(self, fault: Status, rec: RequestRecord) -> _Response:
        headers = dict(fault.headers)
        if fault.body is not None:
            return _Response(fault.code, headers, fault.body)
        msg = headers.get("X-Error-Message", f"injected {fault.code}")
        return _json(fault.code, {"error": msg}, headers)

    def _send(self, resp: _Response, rec: RequestRecord, cut_after: int | None) -> None:
        hub: FakeHub = self.server.hub
        rec.status = resp.code
        head_only = rec.method == "HEAD"
        self.send_response(resp.code)
        headers = dict(resp.headers)
        headers.setdefault("Content-Length", str(resp.length))
        for k, v in headers.items():
            self.send_header(k, v)
        if cut_after is not None and not head_only:
            self.send_header("Connection", "close")
        self.end_headers()
        if head_only or resp.length == 0:
            self.wfile.flush()
            return
        limit = resp.length
        if cut_after is not None:
            limit = max(0, min(cut_after, resp.length - 1))
        sent = 0
        chunks = resp.blob.iter_chunks(*resp.span) if resp.blob is not None else iter([resp.body])
        for chunk in chunks:
            if sent >= limit:
                break
            chunk = chunk[: limit - sent]
            hub._count(rec, len(chunk))  # counted before the write: a reader never sees bytes not yet counted
            self.wfile.write(chunk)
            sent += len(chunk)
        self.wfile.flush()
        if cut_after is not None:
            rec.error = f"cut after {sent} of {resp.length} bytes"
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


class FakeHub:
    """A Hugging Face Hub double on 127.0.0.1. Use as a context manager or ``start()``/``close()``.

    ``root_models`` maps repo ids to a folder, to a ``{path_in_repo: bytes | local path}`` dict, or to a
    ``(folder_or_dict, info)`` tuple. ``lfs_redirect=True`` answers LFS files with a 302 to a second
    listener (``cdn_endpoint``). ``list_page_size`` / ``tree_page_size`` (``tree_page_size_expand`` when
    ``expand=true``) are the page sizes behind the ``Link: rel="next"`` pagination; they can be changed live.

    The Hub under load (all off by default; attributes, so they can be changed live):

    * ``latency`` — seconds added to every request, or a mapping by rate kind (``"api"``, ``"resolvers"``,
      ``"cdn"``: the redirect target, so ``{"cdn": 0.5}`` is a slow CDN).
    * ``rate_limits`` — ``{"api": (R, W), "resolvers": (R, W)}``: at most R requests of that kind per fixed
      window of W seconds (windows counted from ``start()``, as the Hub's 5-minute windows). Every response of
      a limited kind carries the IETF headers the Hub sends, ``RateLimit: "api";r=<left>;t=<seconds to reset>``
      and ``RateLimit-Policy: "fixed window";"api";q=R;w=W``; a request over the budget gets 429 (not counted
      against the budget). The Hub's published numbers (FIELD-NOTES "The real Hub at scale") per 5 minutes:
      api 500 / 1,000 / 2,500, resolvers 3,000 / 5,000 / 12,000 (anonymous / free / PRO).
    * ``burst(seconds, code=503, kind=None, after=0)`` — an outage: every request (of one rate kind) in that
      time answers ``code``.
    * ``delete_after_listing(repo_id)`` — the repo is deleted right after the first listing that shows it
      (a survey then meets 404s on a repo it has listed).
    * gated repos (``info["gated"]``): files answer 401 without a granted token (below).

    Repositories: models, and datasets (``repo_type="dataset"``: listed, read and written through
    ``/api/datasets/…`` and ``/datasets/{repo}/resolve/…``). The write API the real client uses for
    ``HfApi.create_repo`` / ``create_commit`` / ``upload_file`` is served: ``POST /api/repos/create``,
    ``/api/validate-yaml``, ``/api/{type}s/{repo}/preupload/{rev}`` (tokens granted ``write=True`` only; upload mode per file: ``lfs`` for the
    ``.gitattributes`` patterns and files ≥ 10 MiB, else ``regular``; ``oid`` of the file already there), the
    git-LFS batch API (``/{repo}.git/info/lfs/objects/batch``, ``basic`` transfer: a PUT to the second
    listener, then ``…/objects/verify``), and ``/api/{type}s/{repo}/commit/{rev}`` (NDJSON: header, file,
    lfsFile, deletedFile, deletedFolder; ``parentCommit`` checked, 412 when the branch moved). Xet upload is
    not served: the client must run with ``HF_HUB_DISABLE_XET=1`` (:func:`isolated_hf_client` sets it).

    Content: ``add_model``, ``add_model_from_dir``, ``add_hubbox``, ``create_repo``, ``remove_model``,
    ``set_info``, ``grant``, ``sha``, ``file_bytes``, ``files``. Faults: ``inject``, ``burst``,
    ``delete_after_listing``, ``clear_faults``, ``faults_fired``. Accounting: ``requests``, ``bytes_sent``,
    ``window_counts``, ``reset_stats``.
    """

    def __init__(self, root_models: Mapping[str, Any] | None = None, *, lfs_redirect: bool = False,
                 list_page_size: int = 1000, tree_page_size: int = 1000, tree_page_size_expand: int = 50,
                 latency: float | Mapping[str, float] = 0.0,
                 rate_limits: Mapping[str, tuple[int, float]] | None = None):
        self._lock = threading.RLock()
        self._stores: dict[str, dict[str, _Repo]] = {"model": {}, "dataset": {}}
        self._repos = self._stores["model"]
        self._blobs_by_sha256: dict[str, _Blob] = {}
        self._uploads: dict[str, bytes] = {}  # LFS objects PUT by clients (sha256 → content), before a commit
        self._grants: dict[str | None, set[str]] = {}
        self._writers: dict[str | None, set[str]] = {}
        self._log: list[RequestRecord] = []
        self._injections: list[Injection] = []
        self._vanish: set[str] = set()  # delete_after_listing
        self._deletions = 0
        self._window_used: dict[tuple[str, int], int] = {}
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self.lfs_redirect = lfs_redirect
        self.list_page_size = list_page_size
        self.tree_page_size = tree_page_size
        self.tree_page_size_expand = tree_page_size_expand
        self.latency = latency
        self.rate_limits = dict(rate_limits or {})
        self.endpoint: str | None = None
        self.cdn_endpoint: str | None = None
        for repo_id, spec in (root_models or {}).items():
            if isinstance(spec, tuple):
                files, info = spec
            else:
                files, info = spec, None
            if isinstance(files, (str, os.PathLike)):
                self.add_model_from_dir(repo_id, files, info=info)
            else:
                self.add_model(repo_id, files, info=info)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeHub:
        """Start the listener(s) in daemon threads; sets ``endpoint`` (and ``cdn_endpoint``)."""
        if self._servers:
            return self
        self._stop.clear()
        self._t0 = time.monotonic()
        for role in ("hub", "cdn"):
            srv = _Server(self, role)
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 name=f"fakehub-{role}", daemon=True)
            t.start()
            self._servers.append(srv)
            self._threads.append(t)
        host, port = self._servers[0].server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        host, port = self._servers[1].server_address[:2]
        self.cdn_endpoint = f"http://{host}:{port}"
        return self

    def close(self) -> None:
        """Stop serving; wakes any injected delay and closes open keep-alive connections."""
        self._stop.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    # ------------------------------------------------------------------ content
    def add_model(self, repo_id: str, files: Mapping[str, bytes | str | os.PathLike], revision_sha: str | None = None,
                  info: Mapping[str, Any] | None = None, *, branch: str = "main", commit_title: str | None = None,
                  lfs: bool | None = None, repo_type: str = "model") -> str:
        """Add a revision of ``repo_id`` (files: path in repo → bytes or local file); moves ``branch`` to it.

        ``info`` (merged over the previous revision's) may hold downloads, likes, tags, pipeline_tag,
        library_name, cardData (with ``model-index``), safetensors, config, gated, private, createdAt,
        lastModified, trendingScore, author, or any other key (passed through to the JSON). Unless given:
        ``safetensors`` is counted from the *.safetensors headers, ``config`` is taken from config.json
        (architectures, model_type), ``cardData`` from README.md front matter (if PyYAML is importable), and
        ``tags`` is cardData tags + library_name + pipeline_tag + "safetensors" when present. ``lfs`` forces every file to be
        (or not be) LFS; by default .gitattributes' ``filter=lfs`` patterns (or the Hub defaults) and size
        ≥ 10 MiB decide. ``repo_type="dataset"`` adds to a dataset repository instead. Returns the commit sha
        (40 hex; derived deterministically when not given).
        """
        if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo_id):
            raise ValueError(f"bad repo id {repo_id!r}")
        files = {str(k).replace(os.sep, "/").lstrip("/"): v for k, v in files.items()}
        patterns: list[str] = list(DEFAULT_LFS_PATTERNS)
        ga = files.get(".gitattributes")
        if ga is not None:
            text = ga.decode(errors="replace") if isinstance(ga, (bytes, bytearray)) else Path(ga).read_text(
                errors="replace")
            patterns = _lfs_patterns_from_gitattributes(text)
        blobs = {p: _Blob(src, lfs if p != ".gitattributes" else False, patterns, p) for p, src in sorted(files.items())}
        return self._add_revision(repo_type, repo_id, blobs, revision_sha, info, branch=branch, commit_title=commit_title)

    def _add_revision(self, repo_type: str, repo_id: str, blobs: dict[str, _Blob], revision_sha: str | None,
                      info: Mapping[str, Any] | None, *, branch: str = "main", commit_title: str | None = None) -> str:
        store = self._stores[repo_type]
        with self._lock:
            repo = store.get(repo_id)
            prev_info = dict(repo.head.info) if repo is not None and repo.order else {}
            index = len(repo.order) if repo is not None else 0
            merged = {**prev_info, **(info or {})}
            for k in ("safetensors", "config", "cardData", "tags", "sha", "siblings", "lastModified"):
                if k not in (info or {}) and prev_info.get(f"_auto_{k}"):
                    merged.pop(k, None)  # derived from the previous revision's files: derive again
            merged = {k: v for k, v in merged.items() if not k.startswith("_auto_")}
            self._derive(repo_id, blobs, merged, info or {})
            if revision_sha is None:
                h = hashlib.sha1(f"{repo_id}\0{index}\0".encode())
                for p, b in blobs.items():
                    h.update(f"{p}\0{b.oid}\0".encode())
                revision_sha = h.hexdigest()
            revision_sha = revision_sha.lower()
            if not re.fullmatch(r"[0-9a-f]{40}", revision_sha):
                raise ValueError("revision_sha must be 40 hex digits")
            date = merged.get("lastModified") if "lastModified" in (info or {}) else None
            rev = _Revision(
                sha=revision_sha,
                files=blobs,
                info=merged,
                title=commit_title or f"Upload revision {index}",
                date=_dt.datetime.fromisoformat(date.replace("Z", "+00:00")) if isinstance(date, str)
                else (date or _BASE_DATE + _dt.timedelta(hours=index)),
                index=index,
            )
            if repo is None:
                repo = store[repo_id] = _Repo(repo_id)
            repo.revisions[revision_sha] = rev
            if revision_sha in repo.order:
                repo.order.remove(revision_sha)
            repo.order.append(revision_sha)
            repo.refs[branch] = revision_sha
            for b in blobs.values():
                if b.is_lfs:
                    self._blobs_by_sha256[b.sha256] = b
        return revision_sha

    def add_model_from_dir(self, repo_id: str, folder: str | os.PathLike, revision_sha: str | None = None,
                           info: Mapping[str, Any] | None = None, **kw) -> str:
        """``add_model`` with every file under ``folder`` (skipping .git, __pycache__, *.pyc)."""
        folder = Path(folder)
        files: dict[str, Path] = {}
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder)
            if p.is_file() and not any(part in (".git", "__pycache__") for part in rel.parts) and p.suffix != ".pyc":
                files[rel.as_posix()] = p
        if not files:
            raise ValueError(f"no files under {folder}")
        return self.add_model(repo_id, files, revision_sha, info, **kw)

    def create_repo(self, repo_id: str, repo_type: str = "model", *, private: bool = False) -> str:
        """Create an empty repository as the Hub does: one initial commit holding the default ``.gitattributes``
        (``filter=lfs`` for :data:`DEFAULT_LFS_PATTERNS`). Returns the commit sha."""
        attrs = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()
        return self.add_model(repo_id, {".gitattributes": attrs}, info={"private": private} if private else None,
                              commit_title="initial commit", repo_type=repo_type)

    def add_hubbox(self, root: str | os.PathLike, *, week: int = 1) -> dict:
        """Serve a hub-in-a-box (``python -m hubscan.demo.hubbox ROOT``): every repository of its
        ``manifest.json`` with the manifest's Hub metadata (``info``), gated ones gated, those marked
        ``delete_after_listing`` armed (:meth:`delete_after_listing`). ``week=2`` then applies the box's week-2
        mutation (``ROOT/week2/manifest.json``: new revisions as new commits, new repositories, deletions,
        newly gated repositories). Returns the manifest (of the week served)."""
        root = Path(root)
        manifest = json.loads((root / "manifest.json").read_text())
        for r in manifest["repos"]:
            self.add_model_from_dir(r["repo_id"], root / r["folder"], info=r["info"])
            if r.get("hub", {}).get("delete_after_listing"):
                self.delete_after_listing(r["repo_id"])
        if week == 1:
            return manifest
        week2 = json.loads((root / "week2" / "manifest.json").read_text())
        for c in week2["changes"]:
            if c["change"] in ("revision", "new"):
                self.add_model_from_dir(c["repo_id"], root / c["folder"], info=c.get("info"),
                                        commit_title=c.get("title"))
            elif c["change"] == "deleted":
                self.remove_model(c["repo_id"])
            elif c["change"] == "gated":
                self.set_info(c["repo_id"], gated=c.get("gated", "manual"))
        with self._lock:
            self._vanish.clear()  # week 1's deletions happened in week 1
        return week2

    def remove_model(self, repo_id: str, repo_type: str = "model") -> None:
        with self._lock:
            self._stores[repo_type].pop(repo_id, None)

    def sha(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha ``revision`` resolves to."""
        rev = self._stores[repo_type][repo_id].resolve(revision)
        if rev is None:
            raise KeyError(revision)
        return rev.sha

    def file_bytes(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        return self._stores[repo_type][repo_id].resolve(revision).files[path].read()

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """The paths in a revision of a repository, sorted."""
        return sorted(self._stores[repo_type][repo_id].resolve(revision).files)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """The commit shas of a repository, oldest first."""
        with self._lock:
            return list(self._stores[repo_type][repo_id].order)

    def set_info(self, repo_id: str, **info) -> None:
        """Update metadata (downloads, likes, ...) of the head revision in place."""
        with self._lock:
            self._repos[repo_id].head.info.update(info)

    def grant(self, token: str, repo_id: str | None = None, *, write: bool = False) -> None:
        """Let ``Authorization: Bearer <token>`` through gated/private ``repo_id`` (None: every repo); with
        ``write=True`` it may also create repositories and commit (no other token may)."""
        with self._lock:
            self._grants.setdefault(repo_id, set()).add(token)
            if write:
                self._writers.setdefault(repo_id, set()).add(token)

    def _derive(self, repo_id: str, blobs: dict[str, _Blob], merged: dict, given: Mapping) -> None:
        if "safetensors" not in merged:
            heads = [h for p, b in blobs.items() if p.endswith(".safetensors") and (h := _safetensors_header(b))]
            st = _param_counts(heads)
            if st:
                merged["safetensors"] = st
                merged["_auto_safetensors"] = True
        if "config" not in merged and "config.json" in blobs:
            with contextlib.suppress(Exception):
                cfg = json.loads(blobs["config.json"].read())
                merged["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
                if isinstance(cfg.get("quantization_config"), dict):  # the Hub keeps its quant_method
                    merged["config"]["quantization_config"] = {"quant_method": cfg["quantization_config"].get(
                        "quant_method")}
                merged["_auto_config"] = True
        if "cardData" not in merged and "README.md" in blobs:
            card = _front_matter(blobs["README.md"].read().decode(errors="replace"))
            if card:
                merged["cardData"] = card
                merged["_auto_cardData"] = True
        if "tags" not in merged:
            card_tags = (merged.get("cardData") or {}).get("tags") or []
            tags = [t for t in [*card_tags, merged.get("library_name"), merged.get("pipeline_tag")]
                    if isinstance(t, str) and t]
            tags += _base_model_tags(merged.get("cardData") or {})
            tags = list(dict.fromkeys(tags))
            if any(p.endswith(".safetensors") for p in blobs) and "safetensors" not in tags:
                tags.append("safetensors")
            merged["tags"] = tags
            merged["_auto_tags"] = True

    # ------------------------------------------------------------------ faults
    def inject(self, match: str | Callable[[RequestRecord], bool], fault: Fault, times: int | None = 1,
               method: str | None = None) -> Injection:
        """Apply ``fault`` to the next ``times`` requests (None: all) whose unquoted path+query contains
        ``match`` (or for which ``match(record)`` is true), optionally only for ``method``. A ``cut`` never
        takes a HEAD. Returns the Injection; its ``fired`` counts hits."""
        inj = Injection(match, fault, times, method)
        with self._lock:
            self._injections.append(inj)
        return inj

    def burst(self, seconds: float, code: int = 503, *, kind: str | None = None, after: float = 0.0) -> Injection:
        """An outage: from ``after`` seconds from now, for ``seconds``, every request (of rate kind ``kind``:
        ``"api"``, ``"resolvers"``; None: all but the CDN) answers ``code``. Returns the Injection (``fired``
        counts the requests it hit)."""
        begin = time.monotonic() + after
        end = begin + seconds

        def hit(rec: RequestRecord) -> bool:
            return begin <= rec.started < end and rec.rate_kind is not None and kind in (None, rec.rate_kind)

        return self.inject(hit, status(code, {"X-Error-Message": f"injected {code} burst"}), times=None)

    def delete_after_listing(self, repo_id: str) -> None:
        """Delete the model ``repo_id`` right after the first ``/api/models`` page that lists it is answered:
        the lister saw it, every later request for it gets 404 RepoNotFound (deleted between listing and
        reading)."""
        with self._lock:
            self._vanish.add(repo_id)

    def clear_faults(self) -> None:
        with self._lock:
            self._injections.clear()

    def faults_fired(self) -> int:
        with self._lock:
            return sum(i.fired for i in self._injections)

    def _match(self, rec: RequestRecord) -> Injection | None:
        with self._lock:
            for inj in self._injections:
                if inj.matches(rec):
                    inj.fired += 1
                    rec.fault = type(inj.fault).__name__.lower()
                    return inj
        return None

    # ------------------------------------------------------------------ accounting
    def _new_record(self, method: str, raw_target: str, headers, role: str = "hub") -> RequestRecord:
        parts = urlsplit(raw_target)
        path = unquote(parts.path)
        hdrs = {k: ("<redacted>" if k.lower() in ("authorization", "cookie") else v) for k, v in headers.items()}
        rec = RequestRecord(
            seq=0, method=method, target=path + ("?" + unquote(parts.query) if parts.query else ""), path=path,
            query=parse_qs(parts.query, keep_blank_values=True), headers=hdrs,
            authorized=headers.get("Authorization") is not None, range=headers.get("Range"),
            started=time.monotonic(),
        )
        rec.time = rec.started - self._t0
        self._classify(rec, raw_target, role)
        with self._lock:
            rec.seq = len(self._log)
            self._log.append(rec)
        return rec

    _API_KEYWORDS = frozenset({"revision", "tree", "paths-info", "refs", "commits", "safetensors-metadata",
                               "preupload", "commit"})

    def _classify(self, rec: RequestRecord, raw_target: str, role: str) -> None:
        """Fill kind / repo_type / repo_id / revision / file / rate_kind from the URL alone (before faults and
        routing)."""
        segs = urlsplit(raw_target).path.split("/")[1:]
        if role == "cdn":
            rec.kind = "upload" if segs[:1] == ["_upload"] else "cdn"
            rec.repo_id = (rec.query.get("repo") or [None])[0]
            rec.revision = (rec.query.get("rev") or [None])[0]
            rec.file = (rec.query.get("path") or [None])[0]
            return
        if segs and segs[0] == "api":
            rec.rate_kind = "api"
            if segs[1:2] == ["datasets"]:
                rec.repo_type = "dataset"
            if segs[1:] in (["repos", "create"], ["validate-yaml"]):
                rec.kind = "create" if segs[1] == "repos" else "validate-yaml"
                return
            if segs[1:2] in (["models"], ["datasets"]):
                if len(segs) == 2:
                    rec.kind = "list"
                    return
                rec.repo_id, rest = self._split_repo(segs[2:], self._API_KEYWORDS, self._stores[rec.repo_type])
                what = rest[0] if rest else ""
                rec.kind = {"": "info", "revision": "info", "safetensors-metadata": "st-metadata"}.get(what, what)
                if what in ("revision", "tree", "commits") and len(rest) > 1:
                    rec.revision = unquote(rest[1])
                elif what in ("paths-info", "preupload", "commit") and len(rest) > 1:
                    rec.revision = unquote("/".join(rest[1:]))
                elif what in ("", "tree", "paths-info", "commits", "safetensors-metadata"):
                    rec.revision = "main"
                if what == "tree" and len(rest) > 2:
                    rec.file = unquote("/".join(rest[2:])).strip("/")
            return
        if segs and segs[0] == "datasets":
            rec.repo_type = "dataset"
            segs = segs[1:]
        git = next((i for i, x in enumerate(segs[:2]) if x.endswith(".git")), None)
        if git is not None and segs[git + 1:git + 4] in (["info", "lfs", "objects"],):
            rec.rate_kind = "api"
            rec.kind = "lfs-verify" if segs[git + 4:] == ["verify"] else "lfs-batch"
            rec.repo_id = "/".join(unquote(x) for x in segs[:git + 1]).removesuffix(".git")
            return
        for i in (2, 1):
            if len(segs) > i + 1 and segs[i] == "resolve" and segs[0] not in ("api", "datasets", "spaces"):
                rec.kind = "resolve"
                rec.rate_kind = "resolvers"
                rec.repo_id = "/".join(unquote(x) for x in segs[:i])
                rec.revision = unquote(segs[i + 1])
                rec.file = unquote("/".join(segs[i + 2:]))
                return

    def _count(self, rec: RequestRecord, n: int) -> None:
        with self._lock:
            rec.bytes_sent += n

    def requests(self, method: str | None = None, repo_id: str | None = None, path: str | None = None,
                 kind: str | None = None, status: int | None = None) -> list[RequestRecord]:
        """The request log, oldest first, filtered (path = file path in repo for resolve/cdn requests)."""
        with self._lock:
            recs = list(self._log)
        return [
            r for r in recs
            if (method is None or r.method == method.upper())
            and (repo_id is None or r.repo_id == repo_id)
            and (path is None or r.file == path)
            and (kind is None or r.kind == kind)
            and (status is None or r.status == status)
        ]

    def bytes_sent(self, repo_id: str | None = None, path: str | None = None, kind: str | None = None) -> int:
        """Body bytes sent (all requests, or those for ``repo_id`` / file ``path`` / ``kind``)."""
        with self._lock:
            return sum(r.bytes_sent for r in self.requests(repo_id=repo_id, path=path, kind=kind))

    def window_counts(self, rate_kind: str, window_s: float | None = None, *, status: int | None = None) -> dict[int, int]:
        """Requests of one rate kind (``"api"``, ``"resolvers"``) received per fixed window: window index → count.

        Windows are those of ``rate_limits[rate_kind]`` (counted from ``start()``), or of ``window_s`` seconds.
        Every request received counts (429s included) unless ``status`` selects one status."""
        w = window_s if window_s is not None else self.rate_limits[rate_kind][1]
        out: dict[int, int] = {}
        for r in self.requests(status=status):
            if r.rate_kind == rate_kind:
                i = int(r.time // w)
                out[i] = out.get(i, 0) + 1
        return out

    def reset_stats(self) -> None:
        """Forget the request log (injections keep their counters; rate-limit windows keep theirs)."""
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ load: rate limits, latency
    def _admit(self, rec: RequestRecord) -> tuple[_Response | None, dict[str, str]]:
        """Count ``rec`` in its rate-limit window: (a 429 response when the window's budget is spent, else
        None; the ``RateLimit`` / ``RateLimit-Policy`` headers for the response)."""
        limit = self.rate_limits.get(rec.rate_kind) if rec.rate_kind else None
        if not limit:
            return None, {}
        quota, w = int(limit[0]), float(limit[1])
        win = int(rec.time // w)
        with self._lock:
            used = self._window_used.get((rec.rate_kind, win), 0)
            ok = used < quota
            if ok:
                used = self._window_used[(rec.rate_kind, win)] = used + 1
        rec.window = win
        reset = max(1, math.ceil((win + 1) * w - rec.time))
        headers = {"RateLimit": f'"{rec.rate_kind}";r={quota - used};t={reset}',
                   "RateLimit-Policy": f'"fixed window";"{rec.rate_kind}";q={quota};w={math.ceil(w)}'}
        if ok:
            return None, headers
        return _error(429, None, f"You have been rate-limited; you can retry this action in {reset} seconds.",
                      headers), headers

    def _latency_for(self, rec: RequestRecord) -> float:
        lat = self.latency
        if isinstance(lat, Mapping):
            return float(lat.get(rec.rate_kind or "cdn", 0.0))
        return float(lat or 0.0)

    # ------------------------------------------------------------------ auth
    def _token(self, rec_headers) -> str | None:
        v = rec_headers.get("Authorization")
        if v and v.lower().startswith("bearer "):
            return v[7:].strip()
        return None

    def _granted(self, repo_id: str, token: str | None) -> bool:
        if token is None:
            return False
        with self._lock:
            return token in self._grants.get(None, set()) or token in self._grants.get(repo_id, set())

    # ------------------------------------------------------------------ routing
    def _route(self, rec: RequestRecord, raw_target: str, token: str | None, body: bytes, role: str) -> _Response:
        raw_path = urlsplit(raw_target).path
        segs = raw_path.split("/")[1:]
        if role == "cdn":
            return self._upload(rec, segs, body) if rec.kind == "upload" else self._cdn(rec, segs)
        if rec.kind in ("create", "validate-yaml") and rec.method == "POST":
            return self._create_repo(rec, body, token) if rec.kind == "create" else self._validate_yaml(body)
        if rec.kind in ("lfs-batch", "lfs-verify") and rec.method == "POST":
            return self._lfs(rec, body, token)
        if segs and segs[0] == "api":
            if len(segs) >= 2 and segs[1] in ("spaces", "kernels") and len(segs) > 2:
                return _error(404, "RepoNotFound", "Repository not found")
            if len(segs) == 2 and segs[1] == "models" and rec.method == "GET":
                return self._list_models(rec, token)
            if len(segs) >= 3 and segs[1] in ("models", "datasets"):
                return self._api_repo(rec, raw_path, segs[2:], body, token)
            return _error(404, None, "Not found")
        return self._resolve(rec, segs, token)

    def _split_repo(self, segs: list[str], keywords, store: Mapping[str, _Repo] | None = None) -> tuple[str, list[str]]:
        store = self._repos if store is None else store
        segs = [unquote(s) for s in segs[:2]] + segs[2:]
        if len(segs) >= 2 and f"{segs[0]}/{segs[1]}" in store:
            return f"{segs[0]}/{segs[1]}", segs[2:]
        if len(segs) >= 2 and segs[1] in keywords:
            return segs[0], segs[1:]
        if len(segs) >= 2:
            return f"{segs[0]}/{segs[1]}", segs[2:]
        return segs[0], []

    def _visible(self, repo: _Repo, token: str | None) -> _Response | None:
        info = repo.head.info
        if info.get("private") and not self._granted(repo.repo_id, token):
            if token is None:
                return _error(401, "RepoNotFound", "Invalid username or password.")
            return _error(404, "RepoNotFound", "Repository not found")
        return None

    def _get_repo(self, rec: RequestRecord, repo_id: str, token: str | None) -> tuple[_Repo | None, _Response | None]:
        rec.repo_id = repo_id
        repo = self._stores[rec.repo_type].get(repo_id)
        if repo is None or not repo.order or repo.deleted:
            return None, _error(404, "RepoNotFound", "Repository not found")
        return repo, self._visible(repo, token)

    def _get_rev(self, rec: RequestRecord, repo: _Repo, rev: str | None) -> tuple[_Revision | None, _Response | None]:
        rec.revision = rev or "main"
        r = repo.resolve(rev)
        if r is None:
            return None, _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return r, None

    # ---- /api/models
    _DEFAULT_LIST_FIELDS = ("id", "_id", "modelId", "likes", "trendingScore", "private", "downloads", "tags",
                            "pipeline_tag", "library_name", "createdAt")
    _FULL_EXTRA = ("author", "sha", "lastModified", "gated", "disabled", "siblings")
    _INFO_ONLY_EXPAND = ("baseModels", "childrenModelCount", "usedStorage")

    def _record(self, repo: _Repo, rev: _Revision, blobs_detail: bool = False) -> dict[str, Any]:
        info = rev.info
        first = repo.revisions[repo.order[0]]
        siblings = []
        for p, b in rev.files.items():
            s: dict[str, Any] = {"rfilename": p}
            if blobs_detail:
                s["size"] = b.size
                s["blobId"] = b.oid
                if b.is_lfs:
                    s["lfs"] = {"sha256": b.sha256, "size": b.size, "pointerSize": b.pointer_size}
            siblings.append(s)
        rec: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": rev.sha,
            "lastModified": _iso(rev.date),
            "createdAt": _iso(first.date),
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "downloadsAllTime": 0,
            "likes": 0,
            "trendingScore": 0,
            "library_name": None,
            "pipeline_tag": None,
            "tags": [],
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(b.size for b in rev.files.values()),
        }
        for k, v in info.items():
            if k in ("sha", "siblings", "id", "_id") or k.startswith("_auto_"):
                continue
            rec[k] = v
        if "lastModified" in info:
            rec["lastModified"] = info["lastModified"]
        card = rec.get("cardData")
        bases = [t.split(":", 2) for t in rec.get("tags") or [] if t.startswith("base_model:") and t.count(":") == 2]
        if bases:  # model_info's expand=baseModels (relation as the tags state it)
            rec["baseModels"] = {"relation": bases[0][1], "models": [{"id": b[2]} for b in bases]}
        if isinstance(card, dict) and "model-index" in card and "model-index" not in info:
            rec["model-index"] = card["model-index"]
        if rec.get("library_name") is None:
            rec.pop("library_name")
        if rec.get("pipeline_tag") is None:
            rec.pop("pipeline_tag")
        return rec

    @staticmethod
    def _select(rec: dict, keys) -> dict:
        out = {"_id": rec["_id"], "id": rec["id"]}
        for k in keys:
            if k in rec:
                out[k] = rec[k]
        return out

    def _list_models(self, rec: RequestRecord, token: str | None) -> _Response:
        rec.kind = "list"
        q = rec.query
        one = lambda k: (q.get(k) or [None])[0]  # noqa: E731
        filters = q.get("filter", []) + q.get("filter[]", [])
        expand = q.get("expand", []) + q.get("expand[]", [])
        search, author, pipeline = one("search"), one("author"), one("pipeline_tag")
        gated = one("gated")
        cursor = one("cursor") or f"0.{self._deletions}"  # offset . deletions when the walk began
        offset, walk = (int(x) for x in cursor.split(".")) if "." in cursor else (int(cursor), self._deletions)
        refused = [e for e in expand if e in self._INFO_ONLY_EXPAND]
        if refused:  # the Hub accepts these on model_info only (huggingface_hub PR #3182)
            return _error(400, None, f"expand {refused[0]} is not allowed when listing models")
        with self._lock:
            repos = list(self._repos.values())
        rows = []
        for repo in repos:
            if not repo.order or self._visible(repo, token) is not None:
                continue
            if repo.deleted and repo.deleted <= walk:
                continue  # deleted before this walk through the pages began; later ones keep their offsets
            r = self._record(repo, repo.head)
            labels = set(r.get("tags") or []) | {r.get("library_name"), r.get("pipeline_tag")} - {None}
            if any(f not in labels for f in filters):
                continue
            if search and search.lower() not in repo.repo_id.lower():
                continue
            if author and r.get("author") != author:
                continue
            if pipeline and r.get("pipeline_tag") != pipeline:
                continue
            if gated is not None and bool(r.get("gated")) != _truthy(gated):
                continue
            rows.append(r)
        sort = one("sort")
        if sort:
            key = {"downloads": "downloads", "likes": "likes", "createdAt": "createdAt", "created_at": "createdAt",
                   "lastModified": "lastModified", "last_modified": "lastModified",
                   "trendingScore": "trendingScore", "trending_score": "trendingScore"}.get(sort, sort)
            ascending = one("direction") in ("1", "asc")
            present = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[key],
                             reverse=not ascending)
            rows = present + [r for r in rows if r.get(key) is None]
        if expand:
            rows = [self._select(r, expand) for r in rows]
        else:
            keys = list(self._DEFAULT_LIST_FIELDS)
            if _truthy(one("full")):
                keys += self._FULL_EXTRA
            if _truthy(one("cardData")):
                keys.append("cardData")
            if _truthy(one("config")):
                keys.append("config")
            rows = [{k: r[k] for k in keys if k in r} for r in rows]
        try:
            limit = int(one("limit")) if one("limit") else None
        except ValueError:
            return _error(400, None, "bad limit")
        page = min(limit, self.list_page_size) if limit else self.list_page_size
        chunk = rows[offset : offset + page]
        headers = {}
        if offset + len(chunk) < len(rows):
            params = [(k, v) for k, vs in q.items() if k != "cursor" for v in vs]
            params.append(("cursor", f"{offset + page}.{walk}"))
            headers["Link"] = f'<{self.endpoint}/api/models?{urlencode(params)}>; rel="next"'
        with self._lock:  # repos deleted during the walk keep their place (the cursor is an offset), unshown
            shown = [r for r in chunk if not self._repos[r["id"]].deleted]
            for r in shown:
                if r["id"] in self._vanish:  # deleted between this listing and any reading
                    self._vanish.discard(r["id"])
                    self._deletions += 1
                    self._repos[r["id"]].deleted = self._deletions
        return _json(200, shown, headers)

    # ---- /api/models/{repo}/...
    def _api_repo(self, rec: RequestRecord, raw_path: str, segs: list[str], body: bytes,
                  token: str | None) -> _Response:
        repo_id, rest = self._split_repo(segs, self._API_KEYWORDS, self._stores[rec.repo_type])
        repo, err = self._get_repo(rec, repo_id, token)
        what = rest[0] if rest else ""
        if err is not None:
            rec.kind = what if what in ("preupload", "commit") else "info"
            return err
        if what in ("preupload", "commit") and rec.method == "POST" and len(rest) >= 2:
            rec.kind = what
            if not self._may_write(repo_id, token):
                return _error(403 if token else 401, None, "You don't have the rights to write to this repository")
            rev, err = self._get_rev(rec, repo, unquote("/".join(rest[1:])))
            if err:
                return err
            return self._preupload(rev, body) if what == "preupload" else self._commit(rec, repo, rev, body)
        if what in ("", "revision") and rec.method == "GET":
            rec.kind = "info"
            rev, err = self._get_rev(rec, repo, unquote(rest[1]) if len(rest) > 1 else None)
            if err:
                return err
            r = self._record(repo, rev, blobs_detail=_truthy((rec.query.get("blobs") or [None])[0]))
            expand = rec.query.get("expand", []) + rec.query.get("expand[]", [])
            if expand:
                r = self._select(r, expand)
            else:
                for k in ("downloadsAllTime", "usedStorage", "trendingScore"):
                    if k not in rev.info:
                        r.pop(k, None)
            return _json(200, r)
        if what == "tree" and rec.method == "GET" and len(rest) >= 2:
            rec.kind = "tree"
            rev, err = self._get_rev(rec, repo, unquote(rest[1]))
            if err:
                return err
            return self._tree(rec, raw_path, rev, unquote("/".join(rest[2:])).strip("/"))
        if what == "paths-info" and rec.method == "POST" and len(rest) >= 2:
            rec.kind = "paths-info"
            rev, err = self._get_rev(rec, repo, unquote("/".join(rest[1:])))
            if err:
                return err
            return self._paths_info(rec, rev, body)
        if what == "refs" and rec.method == "GET":
            rec.kind = "refs"
            return _json(200, {
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.refs.items()],
                "tags": [], "converts": [], "pullRequests": [],
            })
        if what == "commits" and rec.method == "GET":
            rec.kind = "commits"
            rev, err = self._get_rev(rec, repo, unquote(rest[1]) if len(rest) > 1 else None)
            if err:
                return err
            shas = repo.order[: repo.order.index(rev.sha) + 1][::-1]
            return _json(200, [
                {"id": s, "title": repo.revisions[s].title, "message": "", "authors": [{"user": "fakehub"}],
                 "date": _iso(repo.revisions[s].date)}
                for s in shas
            ])
        if what == "safetensors-metadata" and rec.method == "GET":
            rec.kind = "st-metadata"
            return self._st_metadata(rec, repo, unquote("/".join(rest[1:])) or "model.safetensors.index.json")
        return _error(404, None, "Not found")

    def _entry(self, rev: _Revision, path: str, expand: bool) -> dict | None:
        b = rev.files.get(path)
        if b is not None:
            e: dict[str, Any] = {"type": "file", "oid": b.oid, "size": b.size, "path": path}
            if b.is_lfs:
                e["lfs"] = {"oid": b.sha256, "size": b.size, "pointerSize": b.pointer_size}
        elif path in rev.dirs():
            e = {"type": "directory", "oid": hashlib.sha1(f"{rev.sha}:{path}".encode()).hexdigest(), "size": 0,
                 "path": path}
        else:
            return None
        if expand:
            e["lastCommit"] = {"id": rev.sha, "title": rev.title, "date": _iso(rev.date)}
            if e["type"] == "file":
                e["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                           "pickleImportScan": None}
        return e

    def _tree(self, rec: RequestRecord, raw_path: str, rev: _Revision, path: str) -> _Response:
        q = rec.query
        recursive = _truthy((q.get("recursive") or [None])[0])
        expand = _truthy((q.get("expand") or [None])[0])
        rec.file = path or None
        dirs = rev.dirs()
        if path and path not in dirs:
            if path in rev.files:
                return _json(200, [self._entry(rev, path, expand)])
            return _error(404, "EntryNotFound", f"{path} does not exist on \"{rev.sha}\"",
                          {"X-Repo-Commit": rev.sha})
        prefix = path + "/" if path else ""
        names = set()
        for p in list(rev.files) + sorted(dirs):
            if not p.startswith(prefix) or p == path:
                continue
            rel = p[len(prefix):]
            if recursive:
                names.add(p)
            else:
                names.add(prefix + rel.split("/")[0])
        entries = [self._entry(rev, n, expand) for n in names]
        entries.sort(key=lambda e: (e["type"] != "directory", e["path"]))
        size = self.tree_page_size_expand if expand else self.tree_page_size
        offset = int((q.get("cursor") or ["0"])[0])
        chunk = entries[offset : offset + size]
        headers = {}
        if offset + len(chunk) < len(entries):
            params = [(k, v) for k, vs in q.items() if k != "cursor" for v in vs] + [("cursor", str(offset + size))]
            headers["Link"] = f'<{self.endpoint}{raw_path}?{urlencode(params)}>; rel="next"'
        return _json(200, chunk, headers)

    def _paths_info(self, rec: RequestRecord, rev: _Revision, body: bytes) -> _Response:
        ctype = rec.headers.get("Content-Type", "") or rec.headers.get("content-type", "")
        if "json" in ctype:
            data = json.loads(body or b"{}")
            paths = data.get("paths", [])
            paths = [paths] if isinstance(paths, str) else paths
            expand = bool(data.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", []) + form.get("paths[]", [])
            expand = _truthy((form.get("expand") or [None])[0])
        out = [e for p in paths if (e := self._entry(rev, p.strip("/"), expand)) is not None]
        return _json(200, out)

    def _st_metadata(self, rec: RequestRecord, repo: _Repo, filename: str) -> _Response:
        rev = repo.head
        rec.file = filename
        idx = rev.files.get(filename)
        if idx is None:
            return _error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": rev.sha})
        index = json.loads(idx.read())
        headers = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            b = rev.files.get(shard)
            h = _safetensors_header(b) if b is not None else None
            if h is None:
                return _error(404, "EntryNotFound", f"{shard} missing or unreadable", {"X-Repo-Commit": rev.sha})
            headers[shard] = h
        return _json(200, {"index": {k: v for k, v in index.items() if k != "weight_map"}, "headers": headers})

    # ---- the write API: create_repo, validate-yaml, preupload, LFS batch / upload / verify, commit
    def _may_write(self, repo_id: str | None, token: str | None) -> bool:
        """Only tokens granted with ``grant(token, write=True)`` (for this repo or all) may write."""
        with self._lock:
            return token is not None and (token in self._writers.get(None, set())
                                          or token in self._writers.get(repo_id, set()))

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def _create_repo(self, rec: RequestRecord, body: bytes, token: str | None) -> _Response:
        data = json.loads(body or b"{}")
        org = data.get("organization")
        if not self._may_write(f"{org}/{data.get('name')}" if org else None, token):
            return _error(401 if token is None else 403, None,
                          "Invalid username or password." if token is None else "You don't have the rights to create this repository")
        rec.repo_type = data.get("type") or "model"
        if rec.repo_type not in self._stores:
            return _error(400, None, f"repo type {rec.repo_type} is not served by the fake hub")
        repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else f"user/{data.get('name')}"
        rec.repo_id = repo_id
        url = self._repo_url(rec.repo_type, repo_id)
        with self._lock:
            if repo_id in self._stores[rec.repo_type]:
                return _json(409, {"error": "You already created this repo", "url": url},
                             {"X-Error-Message": "You already created this repo"})
            self.create_repo(repo_id, rec.repo_type, private=data.get("visibility") == "private" or bool(data.get("private")))
        return _json(200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    @staticmethod
    def _validate_yaml(body: bytes) -> _Response:
        content = json.loads(body or b"{}").get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
        if m:
            try:
                import yaml

                data = yaml.safe_load(m.group(1))
            except Exception as exc:  # noqa: BLE001 - any YAML error is the answer
                return _json(400, {"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []})
            if data is not None and not isinstance(data, dict):
                return _json(400, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []})
        return _json(200, {"errors": [], "warnings": []})

    @staticmethod
    def _upload_mode(rev: _Revision, path: str, size: int) -> str:
        ga = rev.files.get(".gitattributes")
        patterns = _lfs_patterns_from_gitattributes(ga.read().decode(errors="replace")) if ga else DEFAULT_LFS_PATTERNS
        return "lfs" if size >= LFS_SIZE_THRESHOLD or _matches_any(path, patterns) else "regular"

    def _preupload(self, rev: _Revision, body: bytes) -> _Response:
        files = json.loads(body or b"{}").get("files", [])
        out = []
        for f in files:
            mode = self._upload_mode(rev, f["path"], int(f.get("size", 0)))
            old = rev.files.get(f["path"])
            oid = None if old is None else (old.sha256 if old.is_lfs else old.oid)
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json(200, {"files": out, "commitOid": rev.sha})

    def _lfs(self, rec: RequestRecord, body: bytes, token: str | None) -> _Response:
        repo, err = self._get_repo(rec, rec.repo_id or "", token)
        if err is not None:
            return err
        if not self._may_write(rec.repo_id, token):
            return _error(403 if token else 401, None, "You don't have the rights to write to this repository")
        data = json.loads(body or b"{}")
        if rec.kind == "lfs-verify":
            with self._lock:
                ok = data.get("oid") in self._uploads or data.get("oid") in self._blobs_by_sha256
            return _json(200, {}) if ok else _error(404, None, f"object {data.get('oid')} was not uploaded")
        prefix = f"{self.endpoint}/{'datasets/' if rec.repo_type == 'dataset' else ''}{rec.repo_id}.git/info/lfs/objects"
        objects = []
        for o in data.get("objects", []):
            obj = {"oid": o["oid"], "size": int(o["size"]), "authenticated": True}
            with self._lock:
                have = o["oid"] in self._blobs_by_sha256 or o["oid"] in self._uploads
            if not have:  # no "actions": the content is already stored (the client skips the upload)
                obj["actions"] = {"upload": {"href": f"{self.cdn_endpoint}/_upload/{o['oid']}"},
                                  "verify": {"href": f"{prefix}/verify"}}
            objects.append(obj)
        return _json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                     {"Content-Type": "application/vnd.git-lfs+json"})

    def _upload(self, rec: RequestRecord, segs: list[str], body: bytes) -> _Response:
        """PUT of an LFS object to the second listener (the Hub's S3): kept when its sha256 matches."""
        if rec.method != "PUT" or len(segs) != 2:
            return _Response(405, {"Content-Type": "text/plain"}, b"Method not allowed")
        if hashlib.sha256(body).hexdigest() != segs[1]:
            return _Response(400, {"Content-Type": "text/plain"}, b"sha256 mismatch")
        with self._lock:
            self._uploads[segs[1]] = body
        return _Response(200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b"")

    def _commit(self, rec: RequestRecord, repo: _Repo, rev: _Revision, body: bytes) -> _Response:
        """An NDJSON commit: the head's files, plus added / minus deleted ones, as one new revision."""
        lines = [json.loads(x) for x in body.splitlines() if x.strip()]
        header = next((x["value"] for x in lines if x.get("key") == "header"), {})
        parent = header.get("parentCommit")
        if parent and not rev.sha.startswith(parent):
            return _error(412, None, f"A commit has happened since. Please refresh and try again. ({parent} is not the head)")
        files = dict(rev.files)
        for item in lines:
            key, v = item.get("key"), item.get("value") or {}
            if key == "file":
                data = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                files[v["path"]] = _Blob(data, False, (), v["path"])
            elif key == "lfsFile":
                with self._lock:
                    data = self._uploads.get(v["oid"])
                    known = self._blobs_by_sha256.get(v["oid"])
                if data is None and known is None:
                    return _error(400, None, f"LFS object {v['oid']} for {v['path']} was not uploaded")
                files[v["path"]] = _Blob(data if data is not None else known.read(), True, (), v["path"])
            elif key == "deletedFile":
                if v["path"] not in files:
                    return _error(404, "EntryNotFound", f"A file with this name doesn't exist: {v['path']}")
                del files[v["path"]]
            elif key == "deletedFolder":
                prefix = v["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
        title = header.get("summary") or "Upload"
        sha = self._add_revision(rec.repo_type, repo.repo_id, files, None, None, commit_title=title)
        url = self._repo_url(rec.repo_type, repo.repo_id)
        return _json(200, {"success": True, "commitOid": sha, "commitUrl": f"{url}/commit/{sha}",
                           "commitMessage": title, "pullRequestUrl": None})

    # ---- /{repo}/resolve/{rev}/{path}
    def _resolve(self, rec: RequestRecord, segs: list[str], token: str | None) -> _Response:
        rec.kind = "resolve"
        if rec.method not in ("GET", "HEAD"):
            return _error(405, None, "Method not allowed")
        if segs and segs[0] == "datasets":
            segs = segs[1:]
        elif segs and segs[0] in ("spaces", "kernels", "buckets"):
            return _error(404, "RepoNotFound", "Repository not found")
        if len(segs) >= 4 and segs[2] == "resolve":
            repo_id, rev_s, path_segs = f"{unquote(segs[0])}/{unquote(segs[1])}", segs[3], segs[4:]
        elif len(segs) >= 3 and segs[1] == "resolve":
            repo_id, rev_s, path_segs = unquote(segs[0]), segs[2], segs[3:]
        else:
            rec.kind = "unknown"
            return _error(404, None, "Not found")
        path = unquote("/".join(path_segs))
        rec.file = path
        repo, err = self._get_repo(rec, repo_id, token)
        if err is not None:
            return err
        rev, err = self._get_rev(rec, repo, unquote(rev_s))
        if err is not None:
            return err
        gated = rev.info.get("gated") or repo.head.info.get("gated")
        if gated and not self._granted(repo_id, token):
            msg = f"Access to {rec.repo_type} {repo_id} is restricted. You must have access to it and be authenticated to access it."
            return _error(401 if token is None else 403, "GatedRepo", msg)
        blob = rev.files.get(path)
        if blob is None:
            return _error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": rev.sha})
        base = {"X-Repo-Commit": rev.sha, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
        if blob.is_lfs:
            base["X-Linked-Etag"] = f'"{blob.sha256}"'
            base["X-Linked-Size"] = str(blob.size)
            if self.lfs_redirect:
                base["ETag"] = f'"{blob.oid}"'
                loc = (f"{self.cdn_endpoint}/_cdn/{blob.sha256}?"
                       + urlencode({"repo": repo_id, "rev": rev.sha, "path": path}))
                base["Location"] = loc
                return _Response(302, base, b"")
        return self._serve_blob(rec, blob, base)

    def _cdn(self, rec: RequestRecord, segs: list[str]) -> _Response:
        rec.kind = "cdn"
        rec.repo_id = (rec.query.get("repo") or [None])[0]
        rec.revision = (rec.query.get("rev") or [None])[0]
        rec.file = (rec.query.get("path") or [None])[0]
        if len(segs) != 2 or segs[0] != "_cdn" or rec.method not in ("GET", "HEAD"):
            return _Response(404, {"Content-Type": "text/plain"}, b"Not found")
        blob = self._blobs_by_sha256.get(segs[1])
        if blob is None:
            return _Response(404, {"Content-Type": "text/plain"}, b"Not found")
        return self._serve_blob(rec, blob, {"ETag": f'"{blob.sha256}"', "Accept-Ranges": "bytes",
                                            "Content-Type": "application/octet-stream"})

    def _serve_blob(self, rec: RequestRecord, blob: _Blob, headers: dict[str, str]) -> _Response:
        size = blob.size
        rng = rec.range
        if rng:
            m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", rng)
            if m and (m.group(1) or m.group(2)):
                a, b = m.group(1), m.group(2)
                if a == "":
                    n = int(b)
                    start, end = max(0, size - n), size - 1
                    ok = n > 0 and size > 0
                else:
                    start = int(a)
                    end = min(int(b), size - 1) if b else size - 1
                    ok = start < size and (b == "" or int(b) >= start)
                    if b and int(b) < start:  # syntactically invalid: ignore the header
                        m = None
                if m is not None:
                    if not ok:
                        return _Response(416, {**headers, "Content-Range": f"bytes */{size}"}, b"")
                    rec.served = (start, end)
                    return _Response(206, {**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
                                     blob=blob, span=(start, end - start + 1))
        rec.served = (0, size - 1) if size else None
        return _Response(200, headers, blob=blob, span=(0, size))


@contextlib.contextmanager
def serve(root_models: Mapping[str, Any] | None = None, **kwargs) -> Iterator[FakeHub]:
    """``with serve({...}) as hub:`` — a started FakeHub, closed on exit."""
    hub = FakeHub(root_models, **kwargs)
    hub.start()
    try:
        yield hub
    finally:
        hub.close()


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class _Guard:
    def __init__(self):
        self.blocked: list[str] = []


@contextlib.contextmanager
def isolated_hf_client(cache_dir: str | os.PathLike | None = None) -> Iterator[_Guard]:
    """Make the real ``huggingface_hub`` client safe to test offline, and restore everything on exit.

    * ``HF_HUB_OFFLINE`` off, ``HF_HUB_DISABLE_TELEMETRY`` and ``HF_HUB_DISABLE_XET`` on, in the environment
      *and* in ``huggingface_hub.constants`` (read once at import); Xet off makes uploads take the git-LFS
      path the fake serves. Telemetry off matters: otherwise every
      request's User-Agent is built with ``detect_agent()``, which fetches
      ``https://huggingface.co/api/agent-harnesses`` (``constants.ENDPOINT``, not the ``endpoint=`` given).
    * ``constants.HF_HUB_CACHE`` → ``cache_dir`` when given (calls that take no ``cache_dir=``, e.g. the index
      download inside ``get_safetensors_metadata``, land there).
    * DNS lookups and TCP connects to anything but loopback fail; the attempts are listed in ``.blocked``.
    * loopback is added to ``NO_PROXY`` and the client's shared ``httpx`` session is recreated (on entry and
      exit), so an ``HTTP(S)_PROXY`` in the environment cannot capture requests to the fake hub.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    names = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_CACHE", "HF_HUB_DISABLE_XET")
    saved = {k: getattr(constants, k) for k in names}
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_XET",
                                                "NO_PROXY", "no_proxy")}
    guard = _Guard()
    orig_connect, orig_gai = socket.socket.connect, socket.getaddrinfo

    def gai(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else host
        if h is not None and h not in _LOOPBACK:
            guard.blocked.append(f"getaddrinfo {h}")
            raise socket.gaierror(socket.EAI_NONAME, f"fake hub: lookup of {h!r} blocked")
        return orig_gai(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            guard.blocked.append(f"connect {address[0]}")
            raise ConnectionRefusedError(f"fake hub: connection to {address[0]!r} blocked")
        return orig_connect(sock, address)

    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    for k in ("NO_PROXY", "no_proxy"):
        os.environ[k] = ",".join(x for x in (os.environ.get(k), "127.0.0.1,localhost,::1") if x)
    close_session()
    constants.HF_HUB_OFFLINE = False
    constants.HF_HUB_DISABLE_TELEMETRY = True
    constants.HF_HUB_DISABLE_XET = True  # uploads take the LFS path the fake serves (no Xet CAS server here)
    if cache_dir is not None:
        constants.HF_HUB_CACHE = os.fspath(cache_dir)
    socket.getaddrinfo, socket.socket.connect = gai, connect
    try:
        yield guard
    finally:
        close_session()
        socket.getaddrinfo, socket.socket.connect = orig_gai, orig_connect
        for k, v in saved.items():
            setattr(constants, k, v)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _until_interrupted() -> None:  # pragma: no cover
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _serve_demo_tree(folder: str) -> None:  # pragma: no cover - a manual entry point (README's walkthrough)
    """Build hubscan's demo model tree under ``folder`` and serve it on a loopback port until Ctrl-C."""
    from hubscan.demo.tree import build_tree

    tree = build_tree(Path(folder))
    with FakeHub() as hub:
        for node in tree:
            hub.add_model_from_dir(node.repo_id, node.folder, info={"downloads": 10})
        print(f"serving {len(tree)} models of the demo tree (root tree/base) at {hub.endpoint}", flush=True)
        print(f"  hubscan survey --source hf --lineage tree/base --out DATASET --endpoint {hub.endpoint}", flush=True)
        _until_interrupted()


def _serve_hubbox(folder: str, week: int, latency: float, rate_limits: dict) -> None:  # pragma: no cover
    """Serve a generated hub-in-a-box on a loopback port until Ctrl-C."""
    with FakeHub(latency=latency, rate_limits=rate_limits) as hub:
        m = hub.add_hubbox(folder, week=week)
        print(f"serving {len(m['repos'])} repositories of the hub-in-a-box {folder} (week {week}) at {hub.endpoint}",
              flush=True)
        print(f"  hubscan survey --source hf --out DATASET --endpoint {hub.endpoint}", flush=True)
        _until_interrupted()


def _cli(argv: list[str] | None = None) -> None:  # pragma: no cover - manual entry points
    import argparse

    ap = argparse.ArgumentParser(prog="python tests/hub_server.py", description="Serve a fake Hugging Face Hub on 127.0.0.1.")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--demo-tree", metavar="DIR", help="build hubscan's demo model tree under DIR and serve it")
    g.add_argument("--hubbox", metavar="DIR", help="serve a hub-in-a-box made by python -m hubscan.demo.hubbox DIR")
    ap.add_argument("--week", type=int, choices=(1, 2), default=1, help="--hubbox: serve week 2's mutation")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    ap.add_argument("--rate-limit", action="append", default=[], metavar="KIND=R/W",
                    help='e.g. api=1000/300 resolvers=5000/300 (the Hub\'s free tier per 5 minutes)')
    args = ap.parse_args(argv)
    limits = {}
    for spec in args.rate_limit:
        kind, _, rw = spec.partition("=")
        r, _, w = rw.partition("/")
        limits[kind] = (int(r), float(w))
    if args.demo_tree:
        _serve_demo_tree(args.demo_tree)
    else:
        _serve_hubbox(args.hubbox, args.week, args.latency, limits)


if __name__ == "__main__":  # pragma: no cover
    _cli()
