"""HTTP to ML backends: pooled keep-alive connections, the address policy at connect time, the one retry loop.

Backends are called with a small HTTP/1.1 client of our own (``_Connection``, parsing with httptools):
on an interactive predict the gateway's overhead is mostly its client's CPU, and httpx/httpcore spent
several times what this does. Connections are pooled per backend origin for the life of the process, so
a bulk job reuses warm connections instead of paying a TCP (and TLS) handshake per batch. Every new
connection resolves the host, checks every address against the ``AddressPolicy`` and connects to a
checked address.

``BackendCaller.call`` makes one logical call: concurrency slot, circuit breaker, per-attempt timeout,
classification of the outcome, and retries (backoff with full jitter, ``Retry-After``, retry budget,
overall deadline). Callers get a ``BackendResponse`` for a 2xx answer and a ``CallFailure`` otherwise.
Credentials travel only in the ``Authorization`` header; they are never part of a URL, message or repr.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import select
import ssl
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import httptools
import httpx

from services.model_gateway import observe
from services.model_gateway.address_policy import AddressPolicy, AddressRejected
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
from shared.gateway_contract import BackendSpec
from shared.protocol import backend_error_detail

log = logging.getLogger(__name__)

USER_AGENT = "labelloop-model-gateway"
_UNAVAILABLE_STATUS = frozenset({502, 503, 504})


class FailureKind(StrEnum):
    INVALID_URL = "invalid_url"
    POLICY = "policy"
    DNS = "dns"
    REFUSED = "refused"
    CONNECTION_LOST = "connection_lost"
    TIMEOUT = "timeout"
    UNAUTHORIZED = "unauthorized"
    HTTP_ERROR = "http_error"
    """A 4xx other than 401/429: the request, not the backend's health, is the problem."""
    BACKEND_ERROR = "backend_error"
    """A 5xx answer (after retries for 502/503/504)."""
    THROTTLED = "throttled"
    CIRCUIT_OPEN = "circuit_open"
    TOO_LARGE = "too_large"
    """The answer exceeded ``max_response_bytes``; a smaller batch may fit."""


class _TooLarge(Exception):
    pass


class _Undecodable(Exception):
    pass


_FIXED_HEADERS = b"\r\nAccept: application/json\r\nUser-Agent: " + USER_AGENT.encode()
_MAX_HEAD_BYTES = 64 * 1024
"""Status line and headers of an answer may add this much to ``max_response_bytes``."""
_MAX_IDLE_PER_ORIGIN = 64


def _decoder(encoding: str) -> Any:
    """A zlib decompressor for a gzip or deflate body; None for identity. Other codings are refused.

    Calls ask for no encoding, but a backend that compresses anyway is still understood.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise _Undecodable(encoding)


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
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    @property
    def counts_against_backend(self) -> bool:
        """Whether this failure says the backend is unhealthy (feeds the circuit breaker)."""
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
    """A backend's base URL split into what the pool keys on and what requests use; no credentials."""

    origin: str
    base: str
    scheme: str
    host: str
    port: int
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
        origin = f"{clean.scheme}://{clean.netloc.decode('ascii')}"
        return cls(
            origin=origin,
            base=str(clean).rstrip("/"),
            scheme=clean.scheme,
            host=clean.raw_host.decode("ascii"),
            port=clean.port or (443 if clean.scheme == "https" else 80),
            url_user=parsed.username or None,
            url_password=parsed.password or None,
        )

    def request_line(self, method: str, path: str) -> bytes:
        """``<METHOD> <target> HTTP/1.1`` and the Host header, for ``<base url><path>``."""
        return _request_line(method, self.base, path)


@functools.lru_cache(maxsize=4096)
def _request_line(method: str, base: str, path: str) -> bytes:
    url = httpx.URL(base + path)
    return b"%s %s HTTP/1.1\r\nHost: %s" % (method.encode("ascii"), url.raw_path, url.netloc)


def authorization_header(spec: BackendSpec, endpoint: Endpoint) -> str | None:
    """Basic auth from the backend entry, else from credentials written into its URL."""
    if spec.auth_method == "BASIC_AUTH":
        user, password = spec.basic_auth_user or "", spec.basic_auth_pass or ""
    elif endpoint.url_user is not None:
        user, password = endpoint.url_user, endpoint.url_password or ""
    else:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class _ConnectFailed(Exception):
    """No TCP (or TLS) connection to any checked address of the backend."""


class _ConnectTimeout(Exception):
    pass


class _ReadTimeout(Exception):
    pass


class _ConnectionLost(Exception):
    """The connection broke, or the backend answered something that is not HTTP/1.1."""


class _Answer:
    """What the backend answered: status, headers (names lower case) and the body, decoded."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> str:
        """The first value of header ``name`` (lower case), or ''."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return ""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a backend, one request at a time.

    A purpose-built client rather than httpx/httpcore: those spend several times the CPU of the
    gateway's own work on a loopback call (h11's pure-Python parsing, anyio locks and cancel scopes,
    request/response models). Here the request is one ``write`` and the answer is parsed by
    ``httptools`` (llhttp, the parser uvicorn uses) as it arrives; ``request`` returns once the whole
    answer is in.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[_Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._received = 0
        self._limit = 0
        self._decoder: Any = None
        self._headers_done = False
        self._framed = False
        self._error: Exception | None = None
        """Set by a parser callback that refuses the answer; the parser then stops with an error."""
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    # ---- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # nothing was asked: a backend talking out of turn cannot be trusted
            return
        self._received += len(data)
        if self._received > self._limit + _MAX_HEAD_BYTES:
            self._fail(_TooLarge())
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(self._error or _ConnectionLost(f"not an HTTP/1.1 answer ({exc})"))

    def eof_received(self) -> bool | None:
        if self._answer is not None and not self._answer.done() and self._headers_done and not self._framed:
            self._complete(keep_alive=False)  # a body delimited by the end of the connection
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            reason = str(exc) if exc else "server closed the connection"
            self._answer.set_exception(_ConnectionLost(reason))

    # ---- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        encoding = ""
        for key, value in self._headers:
            if key == b"content-length":
                self._framed = True
                if value.isdigit() and int(value) > self._limit:
                    self._error = _TooLarge()
            elif key == b"transfer-encoding":
                self._framed = True
            elif key == b"content-encoding":
                encoding = value.decode("latin-1")
        try:
            self._decoder = _decoder(encoding)
        except _Undecodable as exc:
            self._error = exc
        if self._error is not None:
            raise self._error  # stops the parser; feed_data's caller answers with self._error

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body, self._limit + 1 - self._size)
            except zlib.error as exc:
                self._error = _Undecodable(str(exc))
                raise self._error from None
        self._size += len(body)
        if self._size > self._limit:
            self._error = _TooLarge()
            raise self._error
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            self._headers, self._headers_done, self._framed = [], False, False
            return  # an interim answer; the real one follows
        self._complete(keep_alive=self._parser.should_keep_alive())

    # ---- use ------------------------------------------------------------------------------

    def _complete(self, *, keep_alive: bool) -> None:
        assert self._answer is not None
        answer = _Answer(self._parser.get_status_code(), self._headers, b"".join(self._chunks))
        self.reusable = keep_alive
        self._answer.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def usable(self, now: float, expiry_s: float) -> bool:
        """Still open, not idle too long, and nothing (data or EOF) arrived since the last answer."""
        if self.closed or self._transport is None or self._transport.is_closing():
            return False
        if now - self.idle_since > expiry_s:
            return False
        sock = self._transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    async def request(self, data: bytes, limit: int, read_timeout_s: float) -> _Answer:
        """Send one request (head and body in one write) and wait for the whole answer."""
        if self.closed or self._transport is None:
            raise _ConnectionLost("server closed the connection")  # nothing would ever answer
        self._answer = asyncio.get_running_loop().create_future()
        self._headers, self._chunks = [], []
        self._size = self._received = 0
        self._limit = limit
        self._headers_done = self._framed = self.reusable = False
        self._error = None
        self._transport.write(data)
        try:
            async with asyncio.timeout(read_timeout_s):
                return await self._answer
        except TimeoutError:
            raise _ReadTimeout from None
        finally:
            if not self._answer.done():
                self._answer.cancel()
            if not self.reusable:
                self.close()

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


class _OriginPool:
    """Idle keep-alive connections to one origin, most recently used first out."""

    def __init__(self, policy: AddressPolicy, ssl_context: ssl.SSLContext, keepalive_expiry_s: float) -> None:
        self._policy = policy
        self._ssl_context = ssl_context
        self._expiry_s = keepalive_expiry_s
        self._idle: list[_Connection] = []
        self.in_use = 0

    async def acquire(self, endpoint: Endpoint, connect_timeout_s: float) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(now, self._expiry_s):
                return connection
            connection.close()
        return await self._connect(endpoint, connect_timeout_s)

    def release(self, connection: _Connection) -> None:
        if connection.reusable and not connection.closed and len(self._idle) < _MAX_IDLE_PER_ORIGIN:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    async def _connect(self, endpoint: Endpoint, timeout_s: float) -> _Connection:
        """Connect to the first checked address that answers; TLS for https, verified against the host."""
        loop = asyncio.get_running_loop()
        tls = endpoint.scheme == "https"
        addresses = await self._policy.resolve(endpoint.host, endpoint.port)
        last = ""
        for address in addresses:
            try:
                async with asyncio.timeout(timeout_s):
                    _, connection = await loop.create_connection(
                        _Connection,
                        address,
                        endpoint.port,
                        ssl=self._ssl_context if tls else None,
                        server_hostname=endpoint.host if tls else None,
                    )
            except TimeoutError:
                raise _ConnectTimeout from None
            except (OSError, ssl.SSLError) as exc:
                last = str(exc) or type(exc).__name__
                continue
            return connection
        raise _ConnectFailed(last or "no address to connect to")

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class ConnectionPools:
    """One keep-alive connection pool per origin; beyond ``max_origins`` the least recently used idle
    ones close."""

    def __init__(self, policy: AddressPolicy, max_origins: int, keepalive_expiry_s: float) -> None:
        self._policy = policy
        self._max_origins = max_origins
        self._keepalive_expiry_s = keepalive_expiry_s
        self._ssl_context = httpx.create_ssl_context(trust_env=False)
        self._pools: OrderedDict[str, _OriginPool] = OrderedDict()

    @asynccontextmanager
    async def connection(self, endpoint: Endpoint, connect_timeout_s: float) -> AsyncIterator[_Connection]:
        """A connection to the endpoint's origin, back to the pool afterwards if it can be reused."""
        pool = self._pools.get(endpoint.origin)
        if pool is None:
            self._evict_idle()
            pool = _OriginPool(self._policy, self._ssl_context, self._keepalive_expiry_s)
            self._pools[endpoint.origin] = pool
        self._pools.move_to_end(endpoint.origin)
        pool.in_use += 1
        try:
            connection = await pool.acquire(endpoint, connect_timeout_s)
            try:
                yield connection
            except BaseException:
                connection.close()
                raise
            pool.release(connection)
        finally:
            pool.in_use -= 1

    def _evict_idle(self) -> None:
        excess = len(self._pools) + 1 - self._max_origins
        for origin in [key for key, pool in self._pools.items() if pool.in_use == 0][: max(excess, 0)]:
            self._pools.pop(origin).close()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()


@dataclass(slots=True)
class BackendState:
    """What the process remembers about one backend (by URL) between calls."""

    breaker: CircuitBreaker
    budget: RetryBudget
    limiter: Limiter
    single_task: bool = False
    """The backend answered one result for a multi-task batch: send it one task per call."""


class BackendCaller:
    """Makes calls to backends for the whole process; see the module docstring."""

    def __init__(self, settings: GatewaySettings, policy: AddressPolicy) -> None:
        self.settings = settings
        self.pools = ConnectionPools(policy, settings.max_backend_clients, settings.keepalive_expiry_s)
        self.retry = RetryPolicy(
            attempts=settings.retry_attempts,
            base_s=settings.retry_base_s,
            max_s=settings.retry_max_s,
            retry_after_max_s=settings.retry_after_max_s,
        )
        self._states: OrderedDict[str, BackendState] = OrderedDict()

    def state(self, spec: BackendSpec, endpoint: Endpoint | None = None) -> BackendState:
        """The per-backend state, created on first use; bounded like the connection pools."""
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
    ) -> BackendResponse:
        """One logical call to ``<backend url><path>``; raises CallFailure unless the answer is 2xx.

        ``timeout_s`` bounds each attempt's wait for the whole answer once the request is sent;
        ``deadline_s`` bounds the whole call, waiting for a concurrency slot, retries and backoffs
        included.
        """
        endpoint = Endpoint.parse(spec.url)
        state = self.state(spec, endpoint)
        request = endpoint.request_line(method, path) + _FIXED_HEADERS + observe.header_lines()
        auth = authorization_header(spec, endpoint)
        if auth is not None:
            request += b"\r\nAuthorization: " + auth.encode("latin-1")
        if body is None:
            request += b"\r\n\r\n"
        else:
            request += b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        deadline = time.monotonic() + (
            deadline_s if deadline_s is not None else self.settings.call_deadline_s
        )
        state.budget.on_request()
        retry = 0
        while True:
            outcome = await self._attempt(state, endpoint, path, request, timeout_s, deadline, use_breaker)
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
            if time.monotonic() + delay >= deadline:
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
        path: str,
        request: bytes,
        timeout_s: float,
        deadline: float,
        use_breaker: bool,
    ) -> BackendResponse | CallFailure:
        """One attempt; returns the failure instead of raising so the retry loop stays flat.

        The breaker is consulted after the concurrency slot is taken: calls that queued behind a backend
        that then died fail fast on the open circuit instead of each trying it once more.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return CallFailure(FailureKind.TIMEOUT, f"{path}: deadline exceeded", retryable=False)
        semaphore = state.limiter.semaphore
        try:
            async with asyncio.timeout(remaining):
                await semaphore.acquire()
        except TimeoutError:
            message = f"{path}: no free concurrency slot within {round(remaining, 2):g}s (deadline of the whole call)"
            return CallFailure(FailureKind.TIMEOUT, message, retryable=True)
        try:
            if use_breaker:
                try:
                    state.breaker.before_call()
                except CircuitOpen as exc:
                    return CallFailure(FailureKind.CIRCUIT_OPEN, str(exc), retry_after_s=exc.retry_after_s)
            try:
                result = await self._send(endpoint, path, request, timeout_s, deadline - time.monotonic())
            except BaseException:
                if use_breaker:
                    state.breaker.release_probe()
                raise
        finally:
            semaphore.release()
        if use_breaker:
            self._record(state.breaker, result)
        return result

    async def _send(
        self,
        endpoint: Endpoint,
        path: str,
        request: bytes,
        timeout_s: float,
        remaining: float,
    ) -> BackendResponse | CallFailure:
        connect_s = min(self.settings.connect_timeout_s, remaining)
        try:
            async with (
                asyncio.timeout(remaining),
                self.pools.connection(endpoint, connect_s) as connection,
            ):
                answer = await connection.request(
                    request, self.settings.max_response_bytes, min(timeout_s, remaining)
                )
        except AddressRejected as exc:
            return CallFailure(FailureKind(exc.kind), exc.message)
        except _TooLarge:
            limit = self.settings.max_response_bytes
            return CallFailure(FailureKind.TOO_LARGE, f"{path}: answer larger than {limit} bytes")
        except TimeoutError:
            message = f"{path}: no answer within {round(remaining, 2):g}s (deadline of the whole call)"
            return CallFailure(FailureKind.TIMEOUT, message, retryable=True)
        except _ConnectTimeout:
            message = f"{path}: connect timed out after {self.settings.connect_timeout_s:g}s"
            return CallFailure(FailureKind.TIMEOUT, message, retryable=True)
        except _ReadTimeout:
            return CallFailure(
                FailureKind.TIMEOUT, f"{path}: no answer within {timeout_s:g}s", retryable=True
            )
        except _ConnectFailed as exc:
            message = f"{path}: cannot connect to {endpoint.origin}: {exc}"
            return CallFailure(FailureKind.REFUSED, message, retryable=True)
        except _ConnectionLost as exc:
            message = f"{path}: connection to {endpoint.origin} lost: {exc}"
            return CallFailure(FailureKind.CONNECTION_LOST, message, retryable=True)
        except _Undecodable as exc:
            message = f"{path}: answer in an unreadable content-encoding: {exc}"
            return CallFailure(FailureKind.BACKEND_ERROR, message)
        return self._classify(path, answer)

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
        elif isinstance(result, CallFailure) and result.kind in (FailureKind.POLICY, FailureKind.DNS):
            breaker.release_probe()
        else:
            breaker.record_success()

    @staticmethod
    def _classify(path: str, answer: _Answer) -> BackendResponse | CallFailure:
        status, content = answer.status, answer.body
        content_type = answer.header(b"content-type")
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
                retry_after_s=retry_after_seconds(answer.header(b"retry-after")),
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
        await self.pools.aclose()
