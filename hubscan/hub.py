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

* **One request budget** (:class:`HubBudget`) shared by every process of a survey: the transport takes a
  token for each request to the Hub's own host (not its CDN) before sending it — ``resolvers`` for a
  ``/resolve/`` URL, ``api`` for everything else, the Hub's two rate-limit kinds — and waits when the
  window's budget is spent. Seeded from ``--hub-budget`` (a plan: :data:`PLANS`) or from the Hub's
  ``RateLimit`` / ``RateLimit-Policy`` headers (``huggingface_hub.utils.parse_ratelimit_headers``).
  :func:`install_http_client` installs it (``budget=``); a survey holds it in one Ray actor.

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
            budget = _FACTORY.get("budget")
            kind = budget.kind(str(request.url)) if budget is not None else None
            if kind is not None:
                budget.take(kind)
            try:
                response = self.inner.handle_request(request)
            except httpx2.ConnectError as exc:
                raise HubUnreachableError(str(request.url.copy_with(query=None)),
                                          unreachable_message(str(request.url))) from exc
            if kind is not None:
                budget.saw(kind, response.status_code, response.headers)
            return response

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


def install_http_client(timeout: float, budget: "BudgetGate | None" = None) -> None:
    """Install hubscan's ``httpx2.Client`` factory in ``huggingface_hub`` (``set_client_factory``): its
    requests are then counted per model and fail fast when the Hub cannot be reached; with ``budget``, every
    request to the Hub (``huggingface_hub``'s and hubscan's own range reads) first takes a token of it.

    Process-wide: only entry points call it (the CLI, the survey driver and its actors; a program of yours
    may, in its own ``main``). The library's own request hooks (offline guard, request ids) are those of the
    client its factory builds (``get_session().event_hooks``), taken once, before hubscan's factory first
    replaces it.

    Parameters
    ----------
    timeout : float
        Default seconds the server may stay silent (connect: at most 3 s) for calls that give none.
    budget : BudgetGate, optional
        The process's gate to the survey's request budget (None: no budget, also removing one installed
        before).
    """
    from huggingface_hub import get_session, set_client_factory

    _FACTORY["budget"] = budget

    if "hooks" not in _FACTORY:
        _FACTORY["hooks"] = list(get_session().event_hooks.get("request", []))
    set_client_factory(_client_factory(timeout, _FACTORY["hooks"]))


# ---------------------------------------------------------------------------------------- the budget
#: The Hub's published request budgets per 5-minute window (hub-docs ``rate-limits.md``, FIELD-NOTES):
#: plan → {kind: requests per :data:`PLAN_WINDOW` seconds}.
PLANS = {"anonymous": {"api": 500, "resolvers": 3000}, "free": {"api": 1000, "resolvers": 5000},
         "pro": {"api": 2500, "resolvers": 12000}}
#: The Hub's rate-limit window, seconds.
PLAN_WINDOW = 300.0
#: The Hub's rate-limit kinds: ``resolvers`` (every ``/resolve/`` GET, range reads included), ``api`` (the rest).
RATE_KINDS = ("api", "resolvers")


def parse_budget(specs) -> dict[str, tuple[int, float]]:
    """``--hub-budget`` values → ``{kind: (requests, window seconds)}``.

    Parameters
    ----------
    specs : iterable of str
        A plan of :data:`PLANS` (``anonymous``, ``free``, ``pro``: both kinds, 5-minute windows) or
        ``KIND=REQUESTS/SECONDS`` (``api=1000/300``); later values override earlier ones.

    Raises
    ------
    ValueError
        An unknown plan or kind, or a malformed / non-positive value (the message says which).
    """
    out: dict[str, tuple[int, float]] = {}
    for spec in specs:
        spec = spec.strip()
        if spec.lower() in PLANS:
            out.update({k: (n, PLAN_WINDOW) for k, n in PLANS[spec.lower()].items()})
            continue
        kind, eq, rest = spec.partition("=")
        n, slash, w = rest.partition("/")
        try:
            n, w = int(n), float(w)
        except ValueError:
            n = w = 0
        if kind not in RATE_KINDS or not (eq and slash) or n < 1 or not w > 0:
            raise ValueError(f"hub budget {spec!r}: expected one of {', '.join(PLANS)} or KIND=REQUESTS/SECONDS "
                             f"with KIND in {', '.join(RATE_KINDS)} (e.g. api=1000/300)")
        out[kind] = (n, w)
    return out


class HubBudget:
    """Requests allowed per window, one bucket per rate kind; the one instance a survey's processes share
    (a Ray actor, :class:`hubscan.survey.Survey`), or a process's own.

    Each bucket holds ``limit`` tokens; a token taken at time *t* comes back at *t* + ``window`` + ``slack``.
    So any interval of ``window`` seconds holds at most ``limit`` grants — whatever the alignment of the
    Hub's fixed windows — and once the budget binds, requests go out at ``limit / (window + slack)`` per
    second. :meth:`take` never blocks: it reserves the next free slot and says how long the caller waits
    for it, so concurrent callers are served in order.

    Parameters
    ----------
    limits : dict, optional
        ``{kind: (requests, window seconds)}`` known in advance (``--hub-budget``, :func:`parse_budget`);
        kinds not named are unlimited until the Hub's headers say otherwise (:meth:`observe`).
    slack : float
        Seconds added to each token's return: covers the spread between a grant and the request's arrival
        (connection set-up, the server's clock). Default 1.
    state : dict, optional
        A :meth:`snapshot` to start from (the driver's budget handed to the survey's actor).

    Attributes
    ----------
    limits : dict
        ``{kind: (requests, window seconds)}`` in force.
    """

    def __init__(self, limits: dict | None = None, slack: float = 1.0, state: dict | None = None):
        self.limits = {k: (int(n), float(w)) for k, (n, w) in (limits or {}).items()}
        self.fixed = set(self.limits)  # given by the caller: the headers never override them
        self.slack = float(slack)
        self.grants: dict[str, list[float]] = {}  # kind -> grant times, ascending, the last `limit` only
        self.closed: dict[str, float] = {}        # kind -> no grant before this time (a 429 said so)
        if state:
            self.limits.update({k: tuple(v) for k, v in state["limits"].items()})
            self.fixed |= set(state["fixed"])
            self.grants = {k: list(v) for k, v in state["grants"].items()}
            self.closed = dict(state["closed"])

    def snapshot(self) -> dict:
        """The budget's state (limits, recent grants), for ``HubBudget(state=…)`` elsewhere."""
        return {"limits": dict(self.limits), "fixed": sorted(self.fixed), "grants": self.grants,
                "closed": self.closed}

    def take(self, kind: str, now: float | None = None) -> float:
        """Reserve the next request of ``kind``: seconds the caller waits before sending it (0: at once).

        ``now``: the caller's clock (``time.time()``, seconds since the epoch; processes of one cluster share it).
        """
        now = time.time() if now is None else now
        if kind not in self.limits:
            return 0.0
        limit, window = self.limits[kind]
        grants = self.grants.setdefault(kind, [])
        at = max(now, self.closed.get(kind, 0.0), grants[-1] if grants else 0.0)
        if len(grants) >= limit:
            at = max(at, grants[-limit] + window + self.slack)
        grants.append(at)
        del grants[:-limit]
        return at - now

    def observe(self, kind: str, limit: int | None, window: float | None, remaining: int | None,
                reset: float | None, now: float | None = None) -> None:
        """What a response's ``RateLimit`` / ``RateLimit-Policy`` headers said about ``kind``.

        A policy (``q`` requests per ``w`` seconds) seeds a kind the caller gave no limit for, its current
        window's ``q − r`` spent requests counted as taken when it began (``now + t − w``). ``remaining == 0``
        (a 429) closes the kind until ``now + reset`` (+ slack).
        """
        now = time.time() if now is None else now
        if limit and window and kind not in self.fixed and self.limits.get(kind) != (int(limit), float(window)):
            self.limits[kind] = (int(limit), float(window))
            if remaining is not None and reset is not None:
                began = now + float(reset) - float(window)
                self.grants[kind] = sorted([began] * max(0, int(limit) - int(remaining))
                                           + [g for g in self.grants.get(kind, []) if g > began])[-int(limit):]
        if remaining == 0 and reset is not None:
            self.closed[kind] = max(self.closed.get(kind, 0.0), now + float(reset) + self.slack)


class BudgetGate:
    """A process's way to a :class:`HubBudget` (its own, or the survey's actor): which requests count, and
    waiting for their tokens (installed by :func:`install_http_client`).

    Parameters
    ----------
    endpoint : str
        The Hub's URL: requests to its host count (``/resolve/`` → ``resolvers``, else ``api``); others (the
        CDN a resolve redirects to) do not.
    take : callable
        ``take(kind, now) → seconds to wait`` (:meth:`HubBudget.take`, or a call to the actor).
    observe : callable
        ``observe(kind, limit, window, remaining, reset, now)`` (:meth:`HubBudget.observe`).
    sleep : callable, optional
        ``sleep(seconds)``; default ``time.sleep``.
    """

    def __init__(self, endpoint: str, take: Callable[[str, float], float], observe: Callable[..., None],
                 sleep: Callable[[float], None] | None = None):
        self.host = urlsplit(endpoint).netloc
        self._take, self._observe, self._sleep = take, observe, sleep or time.sleep
        self._policies: dict[str, tuple] = {}  # kind -> the last policy passed on (tell the budget once)
        self.waited = 0.0  # seconds this process waited for tokens

    @classmethod
    def local(cls, endpoint: str, budget: HubBudget, sleep: Callable[[float], None] | None = None) -> "BudgetGate":
        """A gate to a budget held in this process."""
        return cls(endpoint, budget.take, budget.observe, sleep)

    def kind(self, url: str) -> str | None:
        """The rate kind of a request to ``url``; None when it is not to the Hub's host."""
        parts = urlsplit(url)
        if parts.netloc != self.host:
            return None
        return "resolvers" if "/resolve/" in parts.path else "api"

    def take(self, kind: str) -> None:
        """Wait for a token of ``kind``."""
        wait = self._take(kind, time.time())
        if wait > 0:
            self.waited += wait
            self._sleep(wait)

    def saw(self, kind: str, status: int, headers) -> None:
        """Pass on what a response's rate-limit headers say, when it is news: a policy not passed on yet, or a
        429 (the window spent)."""
        from huggingface_hub.utils import parse_ratelimit_headers

        info = parse_ratelimit_headers(headers)
        if info is None or info.resource_type not in RATE_KINDS:
            return
        policy = (info.limit, info.window_seconds)
        if status == 429 or (info.limit and self._policies.get(info.resource_type) != policy):
            self._policies[info.resource_type] = policy
            self._observe(info.resource_type, info.limit, info.window_seconds, info.remaining,
                          info.reset_in_seconds, time.time())


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
    content_check : callable or None
        ``content_check(sha256s, stats)``: called by the Hub's safetensors reader (:mod:`hubscan.weights.remote`)
        once the first response of every weight file of a model gave its sha256 (``X-Linked-Etag``; with several
        weight files, shards or components, the Hub's file metadata instead: one ``get_paths_info`` request before
        any weight file is read; the list sorted; None unless every file had one), before any header or tensor
        byte is read (``stats``: the weight set's ``bytes_read`` / ``requests`` so far); it may raise to stop
        reading (a survey's content dedupe raises :class:`~hubscan.errors.SameContentError`).
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
    content_check: Callable[[list | None, dict], None] | None = dataclasses.field(default=None, repr=False, compare=False)
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
            return True, None, f"connection error ({errors.one_line(exc, 120) or 'timed out'})"
        return False, None, errors.one_line(exc, 200) or type(exc).__name__

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
