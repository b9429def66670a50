"""The Hugging Face Hub client hubscan uses: ``huggingface_hub``'s public API only, no HTTP client of its own.

What hubscan adds, and how (all through public extension points):

* **An HTTP client** (an ``httpx2.Client``) with a bounded timeout (the library's default client has none,
  so a stalled server would hang ``list_models``) and a transport wrapper (``httpx2.BaseTransport``, httpx's
  public extension point) that

  - **counts requests** — every HTTP request (retries and redirects included) made inside
    :meth:`HubClient.call` is added to the client's ``requests`` and to the per-call ``stats`` dict given
    (a model's weight set), so a survey can record requests per model;
  - **fails fast** when the Hub cannot be reached at all: a name-resolution failure or a refused
    connection (``httpx2.ConnectError``) becomes :class:`~hubscan.errors.HubUnreachableError` at once,
    "cannot reach the Hub at <endpoint> (offline? set HF_HUB_OFFLINE=1 to use the cache)". It is not
    an ``httpx`` network error, so ``huggingface_hub``'s own backoff does not retry it (on a DNS failure
    that backoff alone sleeps 1 + 2 + 4 + 8 + 8 s and logs a warning per try). Timeouts, 408, 429 and 5xx
    are still retried.

  hubscan's own requests (the range reads of :mod:`hubscan.weights.remote`) always go through such a client
  (:attr:`HubClient.session`). ``huggingface_hub``'s requests (``model_info``, ``list_models``,
  ``hf_hub_download``) go through the process's client, which only an **entry point** replaces:
  :func:`install_http_client` (``huggingface_hub.set_client_factory``) is called by the CLI, the survey
  driver and its actors — never by a library call, so ``hubscan.analyze`` leaves a host program's client
  (its proxy, its timeout) as it is. Without it, a connection that cannot be made in a call of
  :meth:`HubClient.call` still fails fast as :class:`~hubscan.errors.HubUnreachableError`.

* **Retries where ``huggingface_hub`` has none** (:meth:`HubClient.call`): ``model_info`` and the
  streamed range reads of :mod:`hubscan.weights.remote` (a stream cut mid-body is resumed from the byte
  it stopped at — ``http_stream_backoff`` cannot resume a body already being read). Calls that retry
  inside ``huggingface_hub`` (``list_models`` pagination, ``hf_hub_download``) are made with
  ``retry=False`` so the two never multiply. The wait rule, in order:

  1. a 429 whose IETF ``RateLimit`` header says the quota is spent (``"resolvers";r=0;t=55``, parsed by
     ``huggingface_hub.utils.parse_ratelimit_headers``) → wait ``t`` seconds;
  2. a ``Retry-After`` header (seconds or an HTTP date) → wait that long;
  3. otherwise exponential backoff, ``backoff · 2^(attempt−1)`` capped at ``max_backoff``.

  A wait the server asked for is honoured up to :data:`MAX_SERVER_WAIT` (300 s, the Hub's rate-limit
  window). Waits go through ``HubClient.sleep`` (an injectable clock for tests).

Environment (read when a :class:`HubClient` is made, never modified): ``HF_ENDPOINT``, ``HF_TOKEN``
(never logged or written), ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` (through ``huggingface_hub``). Against a
mirror or on a cluster without internet, also set ``HF_HUB_DISABLE_TELEMETRY=1``: with telemetry on,
``huggingface_hub`` fetches an agent registry from huggingface.co once a day to build its User-Agent.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import email.utils
import logging
import os
import threading
import time
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlsplit

from hubscan import errors
from hubscan.errors import GatedModelError, HubUnreachableError, SourceError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Statuses retried (by :meth:`HubClient.call` and by ``huggingface_hub``'s own backoff).
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
#: Longest wait a server may ask for (``Retry-After`` / ``RateLimit``), seconds: the Hub's 5-minute window.
MAX_SERVER_WAIT = 300.0


def unreachable_message(url: str) -> str:
    """The one line shown when the Hub cannot be reached (``url``: any URL on it)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
    return f"cannot reach the Hub at {origin} (offline? set HF_HUB_OFFLINE=1 to use the cache)"


# --------------------------------------------------------------------------------------- HTTP layer
_SINKS: contextvars.ContextVar[tuple] = contextvars.ContextVar("hubscan_request_sinks", default=())
_COUNT_LOCK = threading.Lock()


def _transport_class():
    import httpx2

    class CountingTransport(httpx2.BaseTransport):
        """Counts requests into the sinks of the current :meth:`HubClient.call`; a connection that cannot
        be made at all (DNS failure, refused) raises :class:`HubUnreachableError` instead of a retryable
        ``httpx2.ConnectError``."""

        def __init__(self):
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request):
            with _COUNT_LOCK:
                for sink in _SINKS.get():
                    sink["requests"] = sink.get("requests", 0) + 1
            try:
                return self.inner.handle_request(request)
            except httpx2.ConnectError as exc:
                raise HubUnreachableError(str(request.url.copy_with(query=None)),
                                          unreachable_message(str(request.url))) from exc

        def close(self):
            self.inner.close()

    return CountingTransport


_FACTORY: dict = {}  # made once: hubscan's transport class, and the library's own request hooks


def _client_factory(timeout: float, hooks: list) -> Callable:
    """A factory of hubscan's ``httpx2.Client``: counting, failing fast, ``timeout`` (connect: at most 3 s)."""
    import httpx2

    if "transport" not in _FACTORY:
        _FACTORY["transport"] = _transport_class()
    transport = _FACTORY["transport"]

    def factory():
        return httpx2.Client(transport=transport(), event_hooks={"request": list(hooks)}, follow_redirects=True,
                             timeout=httpx2.Timeout(timeout, connect=min(3.0, timeout)))

    return factory


def install_http_client(timeout: float) -> None:
    """Install hubscan's ``httpx2.Client`` factory in ``huggingface_hub`` (``set_client_factory``): its
    requests are then counted per model and fail fast when the Hub cannot be reached.

    Process-wide: only entry points call it (the CLI, the survey driver and its actors; a program of yours
    may, in its own ``main``). The library's own request hooks (offline guard, request ids) are those of the
    client its factory builds (``get_session().event_hooks``), taken once, before hubscan's factory first
    replaces it.

    Parameters
    ----------
    timeout : float
        Default seconds the server may stay silent (connect: at most 3 s) for calls that give none.
    """
    from huggingface_hub import get_session, set_client_factory

    if "hooks" not in _FACTORY:
        _FACTORY["hooks"] = list(get_session().event_hooks.get("request", []))
    set_client_factory(_client_factory(timeout, _FACTORY["hooks"]))


# ---------------------------------------------------------------------------------------- the client
@dataclasses.dataclass
class HubClient:
    """Settings and counters of hub access.

    Attributes
    ----------
    endpoint : str or None
        Hub URL; None → ``$HF_ENDPOINT`` or ``https://huggingface.co``.
    token : str or None
        Access token; None → ``$HF_TOKEN`` (or the saved login). Never logged.
    max_retries : int
        Retries of one operation on 408/429/5xx, timeouts and cut streams.
    backoff, max_backoff : float
        Exponential backoff base and cap, seconds (see the module docstring for the wait rule).
    timeout : float
        Seconds the server may stay silent before a request fails.
    offline : bool or None
        No network: files only from the local cache. None → ``$HF_HUB_OFFLINE``.
    cache_dir : str or None
        Download cache for whole-file formats; None → a temporary folder per model.
    keep_cache : bool
        Keep downloaded files after each model (default: removed).
    sleep : callable or None
        ``sleep(seconds)`` used between retries; None → ``time.sleep`` (tests inject a fake clock).
    retries, requests : int
        Counters: retries made by :meth:`call`, HTTP requests sent inside it (redirects and retries
        included).
    """

    endpoint: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    max_retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 30.0
    offline: bool | None = None
    cache_dir: str | None = None
    keep_cache: bool = False
    sleep: Callable[[float], None] | None = dataclasses.field(default=None, repr=False, compare=False)
    retries: int = dataclasses.field(default=0, init=False)

    def __post_init__(self):
        self.endpoint = (self.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        if self.token is None:
            self.token = os.environ.get("HF_TOKEN") or None
        if self.offline is None:
            self.offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        self._api = None
        self._session = None
        self._lock = threading.Lock()
        self._sink: dict = {"requests": 0}

    @property
    def api(self):
        """A ``huggingface_hub.HfApi`` bound to this endpoint and token."""
        if self._api is None:
            from huggingface_hub import HfApi
            self._api = HfApi(endpoint=self.endpoint, token=self.token, library_name="hubscan")
        return self._api

    @property
    def session(self):
        """This client's own ``httpx2.Client`` for direct requests (range reads): counted, failing fast, with
        this client's timeout; never installed in ``huggingface_hub``."""
        with self._lock:
            if self._session is None:
                self._session = _client_factory(self.timeout, [])()
            return self._session

    def headers(self) -> dict:
        """Request headers for a direct ``get_session()`` call (``huggingface_hub.utils.build_hf_headers``)."""
        from huggingface_hub.utils import build_hf_headers
        return build_hf_headers(token=self.token, library_name="hubscan")

    def total_retries(self) -> int:
        """Retries made so far by :meth:`call`."""
        return self.retries

    def total_requests(self) -> int:
        """HTTP requests made so far inside :meth:`call` (what a survey records per model)."""
        return self.requests

    @property
    def requests(self) -> int:
        """HTTP requests sent inside :meth:`call` so far (redirects and retries included)."""
        return self._sink["requests"]

    @contextlib.contextmanager
    def counting(self, stats: dict | None = None):
        """Count the HTTP requests made inside the block into this client and into ``stats["requests"]``."""
        sinks = (self._sink,) + ((stats,) if stats is not None else ())
        token = _SINKS.set(sinks)
        try:
            yield
        finally:
            _SINKS.reset(token)

    def call(self, fn: Callable[..., T], *args, what: str, stats: dict | None = None, retry: bool = True,
             **kwargs) -> T:
        """Run a hub operation, counting its requests, with retries (see the module docstring).

        Parameters
        ----------
        fn : callable
            The ``huggingface_hub`` call (or a function of hubscan's making a request through it).
        what : str
            The model or file it is about (for errors).
        stats : dict, optional
            Also count requests into ``stats["requests"]`` (e.g. a weight set's stats).
        retry : bool
            False for calls that retry inside ``huggingface_hub`` already.

        Returns
        -------
        Whatever ``fn`` returns.

        Raises
        ------
        HubUnreachableError
            Name resolution failed or the connection was refused (no retry).
        GatedModelError
            401/403: gated or private repository (a survey records the model as skipped).
        RemoteFileNotFoundError
            A file of the repository is absent (404 on a file).
        SourceError
            Not found, or still failing after ``max_retries`` retries; one line with the reason.
        """
        attempt = 0
        while True:
            try:
                with self.counting(stats):
                    return fn(*args, **kwargs)
            except HubUnreachableError as exc:
                raise HubUnreachableError(what, exc.reason) from None
            except Exception as exc:  # noqa: BLE001 - classified below
                if _cannot_connect(exc):  # through the process's own client (no hubscan transport): the same
                    raise HubUnreachableError(what, unreachable_message(self.endpoint)) from None
                again, wait, reason = self._classify(exc)
                if not (again and retry) or attempt >= self.max_retries:
                    raise self._error(exc, what, reason, attempt) from exc
                attempt += 1
                self.retries += 1
                delay = wait if wait is not None else min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                log.info("%s: %s; retry %d/%d in %.1fs", what, reason, attempt, self.max_retries, delay)
                (self.sleep or time.sleep)(delay)

    def iterate(self, fn: Callable[..., Iterator[T]], *args, what: str, **kwargs) -> Iterator[T]:
        """Iterate a paginated ``huggingface_hub`` listing (``list_models`` …), fetching every page inside
        :meth:`call` (requests counted, errors in one line) without retrying what the library's own
        pagination already retries.

        Yields
        ------
        The listing's items.
        """
        items = iter(self.call(fn, *args, what=what, retry=False, **kwargs))
        end = object()
        while (item := self.call(next, items, end, what=what, retry=False)) is not end:
            yield item

    def _classify(self, exc: BaseException) -> tuple[bool, float | None, str]:
        """(retry?, seconds to wait or None for the backoff, reason) for an exception of a hub call."""
        import httpx2
        from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                            RepositoryNotFoundError, RevisionNotFoundError)
        if isinstance(exc, OfflineModeIsEnabled):
            return False, None, "offline mode (HF_HUB_OFFLINE=1) and not in the local cache"
        if isinstance(exc, GatedRepoError):
            return False, None, "gated repository: accept its terms on the hub and set HF_TOKEN"
        if isinstance(exc, RepositoryNotFoundError):
            return False, None, "repository not found (or private: set HF_TOKEN)"
        if isinstance(exc, RevisionNotFoundError):
            return False, None, "revision not found"
        if isinstance(exc, (EntryNotFoundError, FileNotFoundError)):
            return False, None, "file not found in the repository"
        if isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None:
            code = exc.response.status_code
            if code in (401, 403):
                return False, None, f"HTTP {code}: access denied (gated or private: set HF_TOKEN)"
            if code in RETRY_STATUS:
                return True, server_wait(exc.response.headers, code), f"HTTP {code}"
            if code == 404:
                return False, None, "HTTP 404: not found"
            return False, None, f"HTTP {code}"
        if isinstance(exc, (httpx2.TimeoutException, httpx2.TransportError)):
            return True, None, f"connection error ({' '.join(str(exc).split())[:120] or 'timed out'})"
        return False, None, " ".join(str(exc).split())[:200] or type(exc).__name__

    def _error(self, exc: BaseException, what: str, reason: str, attempts: int) -> SourceError:
        from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
        if isinstance(exc, GatedRepoError) or (
                isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None
                and exc.response.status_code in (401, 403)):
            return GatedModelError(what, reason)
        if isinstance(exc, RepositoryNotFoundError):
            return errors.RepositoryNotFoundError(what, reason)
        if isinstance(exc, RevisionNotFoundError):
            return errors.RevisionNotFoundError(what, reason)
        if isinstance(exc, (EntryNotFoundError, FileNotFoundError)) or (
                isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None
                and exc.response.status_code == 404):
            return errors.RemoteFileNotFoundError(what, reason)
        if attempts:
            reason = f"{reason} (after {attempts} retries)"
        return SourceError(what, reason)


def _cannot_connect(exc: BaseException) -> bool:
    """A connection that could not be made at all (name resolution failed, connection refused)."""
    import httpx2

    return isinstance(exc, httpx2.ConnectError)


def server_wait(headers, status: int) -> float | None:
    """Seconds a throttled response asks the client to wait, or None (then: exponential backoff).

    Parameters
    ----------
    headers : mapping
        Response headers.
    status : int
        Response status.

    Returns
    -------
    float or None
        For a 429 whose ``RateLimit`` header says the quota is spent (IETF draft
        draft-ietf-httpapi-ratelimit-headers, as the Hub sends it: ``"resolvers";r=0;t=55``): ``t``.
        Else ``Retry-After`` (delay-seconds or HTTP-date, RFC 9110 §10.2.3). Capped at
        :data:`MAX_SERVER_WAIT`.
    """
    from huggingface_hub.utils import parse_ratelimit_headers

    if headers is None:
        return None
    headers = {str(k).lower(): v for k, v in headers.items()}
    wait = None
    if status == 429:
        info = parse_ratelimit_headers(headers)
        if info is not None and info.remaining == 0:
            wait = float(info.reset_in_seconds)
    if wait is None:
        value = (headers.get("retry-after") or "").strip()
        if value.isdigit():
            wait = float(value)
        elif value:
            try:
                wait = max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                wait = None
    return None if wait is None else min(wait, MAX_SERVER_WAIT)
