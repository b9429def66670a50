"""The Hugging Face Hub client hubscan uses: ``huggingface_hub`` only (no HTTP code of its own),
plus retries that honour ``Retry-After``, bounded timeouts, retry counting, and the mapping of hub
errors to a model status (``skipped`` for gated / private, ``failed`` otherwise).

Environment (read when a :class:`HubClient` is made, not at import): ``HF_ENDPOINT``, ``HF_TOKEN``
(never logged or written), ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` (through ``huggingface_hub``).
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import os
import threading
import time
from typing import Callable, TypeVar

from hubscan import errors
from hubscan.errors import GatedModelError, SourceError

log = logging.getLogger(__name__)
T = TypeVar("T")

# huggingface_hub's request headers call home (huggingface.co, whatever the endpoint) unless telemetry
# is off; a survey against a mirror or an offline cluster must not. Users can still set it to 0.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class _RetryCounter(logging.Handler):
    """Counts the retries ``huggingface_hub``'s own ``http_backoff`` makes (it logs each one)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.count = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith(("Retrying in", "Rate limited")):
            with self._lock:
                self.count += 1


_COUNTER = _RetryCounter()
logging.getLogger("huggingface_hub.utils._http").addHandler(_COUNTER)


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
        Retries of one operation on 408/429/5xx and connection errors.
    backoff, max_backoff : float
        Exponential backoff base and cap, seconds; a ``Retry-After`` header takes precedence
        (capped at ``max_backoff``).
    timeout : float
        Seconds the server may stay silent before a request fails.
    offline : bool or None
        No network: files only from the local cache. None → ``$HF_HUB_OFFLINE``.
    cache_dir : str or None
        Download cache for whole-file formats; None → ``$HF_HUB_CACHE`` / the default cache.
    keep_cache : bool
        Keep downloaded files after each model (default: removed).
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
    retries: int = dataclasses.field(default=0, init=False)

    def __post_init__(self):
        if os.environ.get("HF_HUB_DISABLE_TELEMETRY") == "1":
            from huggingface_hub import constants
            constants.HF_HUB_DISABLE_TELEMETRY = True
        self.endpoint = (self.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        if self.token is None:
            self.token = os.environ.get("HF_TOKEN") or None
        if self.offline is None:
            self.offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        self._api = None
        self._fs = None
        self._counted = _COUNTER.count
        _bound_timeouts(self.timeout)

    @property
    def api(self):
        """A ``huggingface_hub.HfApi`` bound to this endpoint and token."""
        if self._api is None:
            from huggingface_hub import HfApi
            self._api = HfApi(endpoint=self.endpoint, token=self.token)
        return self._api

    @property
    def fs(self):
        """A ``huggingface_hub.HfFileSystem`` bound to this endpoint and token (no instance cache)."""
        if self._fs is None:
            from huggingface_hub import HfFileSystem
            self._fs = HfFileSystem(endpoint=self.endpoint, token=self.token, skip_instance_cache=True)
        return self._fs

    def total_retries(self) -> int:
        """Retries made so far: hubscan's own plus those ``huggingface_hub`` made inside a call."""
        return self.retries + (_COUNTER.count - self._counted)

    def call(self, fn: Callable[..., T], *args, what: str, **kwargs) -> T:
        """Run a hub operation with retries.

        Parameters
        ----------
        fn : callable
            The ``huggingface_hub`` call.
        what : str
            The model or file it is about (for errors).

        Returns
        -------
        Whatever ``fn`` returns.

        Raises
        ------
        GatedModelError
            401/403: gated or private repository (a survey records the model as skipped).
        SourceError
            Not found, or still failing after ``max_retries`` retries; one line with the reason.
        """
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified below
                retry, wait, reason = self._classify(exc)
                if not retry or attempt >= self.max_retries:
                    raise self._error(exc, what, reason, attempt) from exc
                attempt += 1
                self.retries += 1
                delay = wait if wait is not None else min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                log.info("%s: %s; retry %d/%d in %.1fs", what, reason, attempt, self.max_retries, delay)
                time.sleep(min(delay, self.max_backoff))

    def _classify(self, exc: BaseException) -> tuple[bool, float | None, str]:
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                            RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)
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
                return True, _retry_after(exc.response.headers), f"HTTP {code}"
            if code == 404:
                return False, None, "HTTP 404: not found"
            return False, None, f"HTTP {code}"
        if _is_transport_error(exc):
            return True, None, f"connection error ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        return False, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

    def _error(self, exc: BaseException, what: str, reason: str, attempts: int) -> SourceError:
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError
        if isinstance(exc, GatedRepoError) or (
                isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None
                and exc.response.status_code in (401, 403)):
            return GatedModelError(what, reason)
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
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


_TIMEOUT_SET: list = []


def _bound_timeouts(seconds: float) -> None:
    """Give huggingface_hub's shared HTTP client a timeout (its default client has none, so a stalled
    server would hang ``list_models`` forever). Leaves a user-installed client factory alone."""
    from huggingface_hub.utils import _http

    if _TIMEOUT_SET and _TIMEOUT_SET[-1] == seconds:
        return
    if _http._GLOBAL_CLIENT_FACTORY is not _http.default_client_factory and not _TIMEOUT_SET:
        return
    import httpx2

    def factory():
        return httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook]}, follow_redirects=True,
                             timeout=httpx2.Timeout(seconds, connect=min(10.0, seconds)))

    _http.set_client_factory(factory)
    from huggingface_hub import constants
    constants.HF_HUB_DOWNLOAD_TIMEOUT = max(1, int(seconds))
    _TIMEOUT_SET.append(seconds)


def _is_transport_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TransportError", "TimeoutException", "ConnectError", "RemoteProtocolError",
                         "ReadError", "ConnectionError", "IncompleteRead", "ChunkedEncodingError"})


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
