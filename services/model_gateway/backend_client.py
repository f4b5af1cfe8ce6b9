"""HTTP to ML backends: aiohttp's client with the address policy at connect time, and the one retry loop.

One ``aiohttp.ClientSession`` per process keeps keep-alive pools per backend origin, so a bulk job reuses
warm connections instead of paying a TCP (and TLS) handshake per batch. What aiohttp is told:
- its resolver is the ``AddressPolicy``: every address a host name resolves to is checked and the
  connection goes to a checked address (no DNS rebinding between check and connect); IP-literal URLs
  skip resolvers, so ``_send`` checks those itself before anything is opened;
- no redirects (a 3xx is an answer like any other 4xx); no cookies; no environment proxies;
- status line and each header at most ``max_header_bytes``, at most 128 header fields, and the body read
  chunk by chunk up to ``max_response_bytes`` (decoded size), the connection dropped the moment it is over;
  all answers being read at once share ``max_buffered_response_bytes``;
- TLS verified against ``backend_ca_bundle`` (default: certifi's roots), optionally with a client
  certificate (mTLS); a proxy only when ``backend_proxy_url`` is set.

``BackendCaller.call`` makes one logical call: concurrency slot, circuit breaker, per-attempt timeout,
classification of the outcome, and retries (backoff with full jitter, ``Retry-After``, retry budget,
overall deadline). Callers get a ``BackendResponse`` for a 2xx answer and a ``CallFailure`` otherwise.
Credentials travel only in the ``Authorization`` header; they are never part of a URL, message or repr.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import socket
import ssl
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import ip_address
from typing import Any

import aiohttp
import httpx
from aiohttp import http_exceptions
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy
from yarl import URL

from services.model_gateway import observe
from services.model_gateway.address_policy import AddressPolicy, AddressRejected, IPAddress
from services.model_gateway.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    Limiter,
    RetryBudget,
    RetryPolicy,
    retry_after_seconds,
)
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.slots import BackendSlots
from shared.gateway_contract import BackendSpec
from shared.logging import outgoing_request_headers
from shared.protocol import backend_error_detail

log = logging.getLogger(__name__)

USER_AGENT = "labelloop-model-gateway"
_UNAVAILABLE_STATUS = frozenset({502, 503, 504})
_MAX_HEADERS = 128
"""Header fields per answer; with ``max_header_bytes`` each, the head of an answer is bounded too."""
_READ_BUFSIZE = 64 * 1024
"""aiohttp stops reading the socket once twice this much waits unread: a body arrives at our pace."""


class FailureKind(StrEnum):
    INVALID_URL = "invalid_url"
    POLICY = "policy"
    DNS = "dns"
    REFUSED = "refused"
    TLS = "tls"
    """The TLS handshake failed (certificate untrusted, expired, for another host, client cert refused)."""
    CONNECTION_LOST = "connection_lost"
    TIMEOUT = "timeout"
    UNAUTHORIZED = "unauthorized"
    HTTP_ERROR = "http_error"
    """A 3xx or a 4xx other than 401/429: the request, not the backend's health, is the problem."""
    BACKEND_ERROR = "backend_error"
    """A 5xx answer (after retries for 502/503/504)."""
    THROTTLED = "throttled"
    CIRCUIT_OPEN = "circuit_open"
    TOO_LARGE = "too_large"
    """The answer (body or head) exceeded its cap; a smaller batch may fit."""


class CallFailure(Exception):
    """A backend call that did not produce a 2xx answer; ``message`` is safe to show to users."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        caller_limit: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.caller_limit = caller_limit
        """A timeout the caller chose tighter than the backend's own: it says nothing about the backend."""

    @property
    def counts_against_backend(self) -> bool:
        """Whether this failure says the backend is unhealthy (feeds the circuit breaker)."""
        if self.caller_limit:
            return False
        return self.kind in {
            FailureKind.REFUSED,
            FailureKind.CONNECTION_LOST,
            FailureKind.TIMEOUT,
            FailureKind.BACKEND_ERROR,
        }


@dataclass(frozen=True, slots=True)
class BackendResponse:
    status_code: int
    content: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A backend's base URL split into what requests use; no credentials."""

    origin: str
    base: str
    scheme: str
    host: str
    port: int
    literal: IPAddress | None
    """The host when the URL names an IP address: no resolver sees it, so the policy is asked directly."""
    url_user: str | None
    url_password: str | None = field(repr=False)

    @classmethod
    @functools.lru_cache(maxsize=1024)  # parsing a URL costs more than the rest of a call's bookkeeping
    def parse(cls, url: str) -> Endpoint:
        try:
            parsed = httpx.URL(url.strip())
        except httpx.InvalidURL as exc:
            raise CallFailure(FailureKind.INVALID_URL, f"backend url is not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise CallFailure(
                FailureKind.INVALID_URL, "backend url must look like http(s)://host[:port][/path]"
            )
        clean = parsed.copy_with(username=None, password=None, query=None, fragment=None)
        host = clean.raw_host.decode("ascii")
        try:
            literal: IPAddress | None = ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            literal = None
        return cls(
            origin=f"{clean.scheme}://{clean.netloc.decode('ascii')}",
            base=str(clean).rstrip("/"),
            scheme=clean.scheme,
            host=host,
            port=clean.port or (443 if clean.scheme == "https" else 80),
            literal=literal,
            url_user=parsed.username or None,
            url_password=parsed.password or None,
        )

    def url(self, path: str) -> URL:
        return _url(self.base, path)


@functools.lru_cache(maxsize=4096)
def _url(base: str, path: str) -> URL:
    return URL(str(httpx.URL(base + path)), encoded=True)


def authorization_header(spec: BackendSpec, endpoint: Endpoint) -> str | None:
    """Basic auth from the backend entry, else from credentials written into its URL."""
    if spec.auth_method == "BASIC_AUTH":
        user, password = spec.basic_auth_user or "", spec.basic_auth_pass or ""
    elif endpoint.url_user is not None:
        user, password = endpoint.url_user, endpoint.url_password or ""
    else:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class PolicyResolver(AbstractResolver):
    """aiohttp's resolver for backend hosts: every address checked by the ``AddressPolicy``.

    ``exempt`` hosts (the operator's proxy) are resolved without the policy: the proxy is configuration,
    not user input, and the backend behind it is checked before each call instead.
    """

    def __init__(self, policy: AddressPolicy, exempt: frozenset[str] = frozenset()) -> None:
        self._policy = policy
        self._exempt = exempt

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host in self._exempt:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        else:
            addresses = await self._policy.resolve(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def tls_context(settings: GatewaySettings) -> ssl.SSLContext:
    """Verification against the configured CA bundle (else certifi's roots), plus a client cert for mTLS."""
    if settings.backend_ca_bundle:
        context = ssl.create_default_context(cafile=settings.backend_ca_bundle)
    else:
        context = httpx.create_ssl_context(trust_env=False)
    if settings.backend_client_cert:
        context.load_cert_chain(settings.backend_client_cert, settings.backend_client_key)
    return context


class _TooLarge(Exception):
    def __init__(self, over_budget: bool) -> None:
        super().__init__()
        self.over_budget = over_budget


class _ConnectTimeout(Exception):
    pass


class MemoryBudget:
    """Bytes of backend answers the whole process may hold while reading them.

    Each call is capped by ``max_response_bytes``, but a hostile backend answering many concurrent calls
    would still multiply that cap; past this budget a call is refused (as too large, so a batch is split)
    instead of waited for, which could deadlock callers that each hold part of an answer.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


async def _read_capped(response: aiohttp.ClientResponse, cap: int, budget: MemoryBudget) -> bytes:
    """The decoded body; raises _TooLarge as soon as it exceeds ``cap`` or the process's budget.

    Read into one buffer that grows in place: freed whole when refused, and large enough that the
    allocator hands it back to the system rather than keeping fragments.
    """
    length = response.content_length
    if length is not None and "Content-Encoding" not in response.headers and length > cap:
        raise _TooLarge(False)
    buffer = bytearray()
    held = 0
    try:
        stream = response.content
        while chunk := await stream.readany():
            size = len(chunk)
            if len(buffer) + size > cap:
                raise _TooLarge(False)
            if not budget.take(size):
                raise _TooLarge(True)
            held += size
            buffer += chunk
        return bytes(buffer)
    finally:
        budget.give(held)


@dataclass(slots=True)
class BackendState:
    """What the process remembers about one backend (by URL) between calls."""

    breaker: CircuitBreaker
    budget: RetryBudget
    limiter: Limiter
    single_task: bool = False
    """The backend answered one result for a multi-task batch: send it one task per call."""


@dataclass(frozen=True, slots=True)
class _Request:
    """What every attempt of one call sends, and the cap on what it may receive."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    cap: int


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class BackendCaller:
    """Makes calls to backends for the whole process; see the module docstring."""

    def __init__(
        self, settings: GatewaySettings, policy: AddressPolicy, slots: BackendSlots | None = None
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.slots = slots
        """Cross-process concurrency slots (workers); None: the per-process limit alone (the HTTP app)."""
        self.retry = RetryPolicy(
            attempts=settings.retry_attempts,
            base_s=settings.retry_base_s,
            max_s=settings.retry_max_s,
            retry_after_max_s=settings.retry_after_max_s,
        )
        self._states: OrderedDict[str, BackendState] = OrderedDict()
        self._proxy = URL(settings.backend_proxy_url) if settings.backend_proxy_url else None
        self._tls = tls_context(settings)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.budget = MemoryBudget(settings.max_buffered_response_bytes)

    def _client(self) -> aiohttp.ClientSession:
        """The process's session, made on first use (aiohttp wants a running event loop)."""
        if self._session is None:
            s = self.settings
            exempt = (
                frozenset({self._proxy.host}) if self._proxy is not None and self._proxy.host else frozenset()
            )
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(self.policy, exempt),
                use_dns_cache=False,
                ssl=self._tls,
                limit=0,  # in-flight calls are bounded per backend by its Limiter
                keepalive_timeout=s.keepalive_expiry_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                skip_auto_headers=("Accept-Encoding",),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=self._timeout,
                read_bufsize=_READ_BUFSIZE,
                max_line_size=s.max_header_bytes,
                max_field_size=s.max_header_bytes,
                max_headers=_MAX_HEADERS,
            )
        return self._session

    def state(self, spec: BackendSpec, endpoint: Endpoint | None = None) -> BackendState:
        """The per-backend state, created on first use; at most ``4 * max_backend_clients`` kept."""
        key = (endpoint or Endpoint.parse(spec.url)).base
        state = self._states.get(key)
        if state is None:
            s = self.settings
            state = BackendState(
                breaker=CircuitBreaker(key, s.breaker_failure_threshold, s.breaker_cool_down_s),
                budget=RetryBudget(s.retry_budget_ratio, s.retry_budget_burst),
                limiter=Limiter(spec.max_concurrency),
            )
            self._states[key] = state
            while len(self._states) > 4 * s.max_backend_clients:
                self._states.popitem(last=False)
        else:
            state.limiter = state.limiter.resized(spec.max_concurrency)
            self._states.move_to_end(key)
        return state

    async def call(
        self, spec: BackendSpec, method: str, path: str, body: bytes | None = None, **options: Any
    ) -> BackendResponse:
        """``_call``, observed: a client span, latency and outcome per backend, the breaker's state."""
        return await observe.observed(
            spec.id,
            method,
            path,
            lambda: self._call(spec, method, path, body, **options),
            lambda: self._breaker_state(spec),
            lambda exc: exc.kind.value if isinstance(exc, CallFailure) else None,
        )

    def _breaker_state(self, spec: BackendSpec) -> BreakerState | None:
        try:
            return self.state(spec).breaker.state
        except CallFailure:  # not a URL: no breaker
            return None

    async def _call(
        self,
        spec: BackendSpec,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        timeout_s: float,
        deadline_s: float | None = None,
        retries: bool = True,
        retry_on_timeout: bool = True,
        use_breaker: bool = True,
        caller_timeout: bool = False,
        max_response_bytes: int | None = None,
    ) -> BackendResponse:
        """One logical call to ``<backend url><path>``; raises CallFailure unless the answer is 2xx.

        ``timeout_s`` bounds each attempt; ``deadline_s`` bounds the whole call, waiting for a
        concurrency slot, retries and backoffs included. ``caller_timeout``: ``timeout_s`` is the
        caller's own choice, tighter than the backend's, so running out of it is not the backend's fault.
        ``max_response_bytes`` lowers the process-wide cap on the answer for this call.
        """
        cap = min(max_response_bytes or self.settings.max_response_bytes, self.settings.max_response_bytes)
        endpoint = Endpoint.parse(spec.url)
        state = self.state(spec, endpoint)
        headers = outgoing_request_headers()
        auth = authorization_header(spec, endpoint)
        if auth is not None:
            headers["Authorization"] = auth
        if body is not None:
            headers["Content-Type"] = "application/json"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (deadline_s if deadline_s is not None else self.settings.call_deadline_s)
        state.budget.on_request()
        retry = 0
        while True:
            outcome = await self._attempt(
                state,
                endpoint,
                _Request(method, path, headers, body, cap),
                timeout_s,
                deadline,
                use_breaker,
                caller_timeout,
            )
            if isinstance(outcome, BackendResponse):
                return outcome
            failure = outcome
            if not (
                retries and failure.retryable and (retry_on_timeout or failure.kind != FailureKind.TIMEOUT)
            ):
                raise failure
            if retry + 1 >= self.retry.attempts:
                raise failure
            delay = self.retry.backoff(retry)
            if failure.retry_after_s is not None:
                if failure.retry_after_s > self.retry.retry_after_max_s:
                    raise failure
                delay = max(delay, failure.retry_after_s)
            if loop.time() + delay >= deadline:
                raise failure
            if not state.budget.try_spend():
                failure.message += " (not retried: retry budget for this backend exhausted)"
                raise failure
            await asyncio.sleep(delay)
            retry += 1
            observe.retried(spec.id, path)

    async def _attempt(
        self,
        state: BackendState,
        endpoint: Endpoint,
        request: _Request,
        timeout_s: float,
        deadline: float,
        use_breaker: bool,
        caller_timeout: bool,
    ) -> BackendResponse | CallFailure:
        """One attempt; returns the failure instead of raising so the retry loop stays flat.

        The breaker is consulted after the concurrency slot is taken: calls that queued behind a backend
        that then died fail fast on the open circuit instead of each trying it once more.
        """
        path = request.path
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return CallFailure(FailureKind.TIMEOUT, f"{path}: deadline exceeded", caller_limit=caller_timeout)
        semaphore = state.limiter.semaphore
        try:
            async with asyncio.timeout(remaining):
                await semaphore.acquire()
        except TimeoutError:
            message = f"{path}: no free concurrency slot within {round(remaining, 2):g}s (deadline of the whole call)"
            return CallFailure(FailureKind.TIMEOUT, message, retryable=True, caller_limit=caller_timeout)
        try:
            async with contextlib.AsyncExitStack() as held:
                if self.slots is not None:
                    try:
                        await held.enter_async_context(
                            self.slots.hold(endpoint.base, state.limiter.limit, deadline - loop.time())
                        )
                    except TimeoutError:
                        message = (
                            f"{path}: no free concurrency slot of this backend within the call's deadline"
                        )
                        return CallFailure(
                            FailureKind.TIMEOUT, message, retryable=True, caller_limit=caller_timeout
                        )
                if use_breaker:
                    try:
                        state.breaker.before_call()
                    except CircuitOpen as exc:
                        return CallFailure(
                            FailureKind.CIRCUIT_OPEN, str(exc), retry_after_s=exc.retry_after_s
                        )
                try:
                    result = await self._send(endpoint, request, timeout_s, deadline - loop.time())
                except BaseException:
                    if use_breaker:
                        state.breaker.release_probe()
                    raise
        finally:
            semaphore.release()
        if caller_timeout and isinstance(result, CallFailure) and result.kind is FailureKind.TIMEOUT:
            # The caller's own limit: neither the breaker nor the shared retry budget pays for it.
            result.caller_limit, result.retryable = True, False
        if use_breaker:
            self._record(state.breaker, result)
        return result

    async def _send(
        self, endpoint: Endpoint, request: _Request, timeout_s: float, remaining: float
    ) -> BackendResponse | CallFailure:
        path = request.path
        limit = min(timeout_s, remaining)
        try:
            await self._check_address(endpoint)
            async with asyncio.timeout(limit):
                answer = await self._exchange(endpoint, request)
        except AddressRejected as exc:
            return CallFailure(FailureKind(exc.kind), exc.message)
        except _TooLarge as exc:
            if exc.over_budget:
                message = (
                    f"{path}: answers in flight exceed the gateway's memory budget "
                    f"({self.budget.limit} bytes); try a smaller batch or later"
                )
                return CallFailure(FailureKind.TOO_LARGE, message)
            return CallFailure(FailureKind.TOO_LARGE, f"{path}: answer larger than {request.cap} bytes")
        except _ConnectTimeout:
            message = f"{path}: connect timed out after {self.settings.connect_timeout_s:g}s"
            return CallFailure(FailureKind.TIMEOUT, message, retryable=True)
        except TimeoutError:
            if remaining < timeout_s:
                message = f"{path}: no answer within {round(remaining, 2):g}s (deadline of the whole call)"
            else:
                message = f"{path}: no answer within {timeout_s:g}s"
            return CallFailure(FailureKind.TIMEOUT, message, retryable=True)
        except aiohttp.ClientSSLError as exc:
            message = f"{path}: TLS with {endpoint.origin} failed: {_reason(exc)}"
            return CallFailure(FailureKind.TLS, message)
        except aiohttp.ClientConnectorError as exc:
            message = f"{path}: cannot connect to {endpoint.origin}: {_reason(exc)}"
            return CallFailure(FailureKind.REFUSED, message, retryable=True)
        except aiohttp.ClientResponseError as exc:  # the parser refused the answer's head
            return self._bad_head(path, endpoint, exc)
        except aiohttp.ClientPayloadError as exc:
            if isinstance(exc.__cause__, http_exceptions.ContentEncodingError):
                message = f"{path}: answer in an unreadable content-encoding: {exc}"
                return CallFailure(FailureKind.BACKEND_ERROR, message)
            message = f"{path}: connection to {endpoint.origin} lost: {exc}"
            return CallFailure(FailureKind.CONNECTION_LOST, message, retryable=True)
        except aiohttp.ClientError as exc:
            message = f"{path}: connection to {endpoint.origin} lost: {_reason(exc)}"
            return CallFailure(FailureKind.CONNECTION_LOST, message, retryable=True)
        return self._classify(path, answer)

    async def _check_address(self, endpoint: Endpoint) -> None:
        """What the resolver cannot see: IP-literal hosts, and (behind a proxy) the backend's own name."""
        if endpoint.literal is not None:
            reason = self.policy.rejection(endpoint.literal)
            if reason is not None:
                raise AddressRejected("policy", reason)
        elif self._proxy is not None:
            await self.policy.resolve(endpoint.host, endpoint.port)

    async def _exchange(self, endpoint: Endpoint, request: _Request) -> _Answer:
        try:
            response = await self._client().request(
                request.method,
                endpoint.url(request.path),
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                proxy=self._proxy,
            )
        except aiohttp.ConnectionTimeoutError:
            raise _ConnectTimeout from None
        try:
            content = await _read_capped(response, request.cap, self.budget)
        except BaseException:
            response.close()  # the rest is never read: drop the connection with whatever is in flight
            raise
        response.release()
        return _Answer(response.status, response.headers, content)

    def _bad_head(self, path: str, endpoint: Endpoint, exc: aiohttp.ClientResponseError) -> CallFailure:
        if _oversized_head(exc):
            cap = self.settings.max_header_bytes
            message = f"{path}: answer headers too large (at most {_MAX_HEADERS} fields of {cap} bytes)"
            return CallFailure(FailureKind.TOO_LARGE, message)
        message = (
            f"{path}: connection to {endpoint.origin} lost: not an HTTP/1.1 answer ({exc.message[:200]})"
        )
        return CallFailure(FailureKind.CONNECTION_LOST, message, retryable=True)

    @staticmethod
    def _record(breaker: CircuitBreaker, result: BackendResponse | CallFailure) -> None:
        if isinstance(result, CallFailure) and result.counts_against_backend:
            was_open = breaker.state is BreakerState.OPEN
            breaker.record_failure()
            if breaker.state is BreakerState.OPEN and not was_open:
                log.warning(
                    "circuit opened for backend %s for %gs: %s",
                    breaker.name,
                    breaker.cool_down_s,
                    result.message,
                    extra={"backend": breaker.name},
                )
        elif isinstance(result, CallFailure) and (
            result.caller_limit or result.kind in (FailureKind.POLICY, FailureKind.DNS, FailureKind.TLS)
        ):
            breaker.release_probe()
        else:
            breaker.record_success()

    @staticmethod
    def _classify(path: str, answer: _Answer) -> BackendResponse | CallFailure:
        status, content = answer.status, answer.body
        content_type = answer.headers.get("Content-Type", "")
        if 200 <= status < 300:
            return BackendResponse(status, content, content_type)
        detail = backend_error_detail(status, content_type, content)
        message = f"{path} answered {status}: {detail}"
        if status == 401:
            return CallFailure(FailureKind.UNAUTHORIZED, message, status_code=status)
        if status == 429:
            return CallFailure(
                FailureKind.THROTTLED,
                message,
                status_code=status,
                retryable=True,
                retry_after_s=retry_after_seconds(answer.headers.get("Retry-After")),
            )
        if status >= 500:
            return CallFailure(
                FailureKind.BACKEND_ERROR,
                message,
                status_code=status,
                retryable=status in _UNAVAILABLE_STATUS,
            )
        return CallFailure(FailureKind.HTTP_ERROR, message, status_code=status)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if self.slots is not None:
            await self.slots.aclose()


def _oversized_head(exc: BaseException) -> bool:
    """Whether the parser gave up on a line too long or too many header fields (the cause chain says)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, http_exceptions.LineTooLong) or "Too many headers" in str(cause):
            return True
        cause = cause.__cause__
    return False


def _reason(exc: aiohttp.ClientError) -> str:
    """The underlying OS or TLS error's text, without aiohttp's repeat of the address."""
    cause = getattr(exc, "os_error", None) or exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return cause.verify_message or str(cause)
    if isinstance(cause, BaseException):
        return getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return str(exc) or type(exc).__name__
