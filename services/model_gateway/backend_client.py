"""HTTP to ML backends: pooled keep-alive connections, the address policy at connect time, the one retry loop.

One httpx connection pool (transport) per backend origin lives as long as the process, so a bulk job
reuses warm connections instead of paying a TCP (and TLS) handshake per batch. Its connections are opened
by ``PolicyNetworkBackend``, which resolves the host, checks every address against the
``AddressPolicy`` and connects to a checked address.

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
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import httpcore
import httpx

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


_FIXED_HEADERS = (
    (b"Accept", b"application/json"),
    (b"User-Agent", USER_AGENT.encode()),
)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    """The first value of header ``name`` (lower case), or ''."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


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
            url_user=parsed.username or None,
            url_password=parsed.password or None,
        )

    def url(self, path: str) -> tuple[httpcore.URL, bytes]:
        """The request URL and its Host header value."""
        return _joined_url(self.base, path)


@functools.lru_cache(maxsize=4096)
def _joined_url(base: str, path: str) -> tuple[httpcore.URL, bytes]:
    url = httpx.URL(base + path)
    return httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    ), url.netloc


def authorization_header(spec: BackendSpec, endpoint: Endpoint) -> str | None:
    """Basic auth from the backend entry, else from credentials written into its URL."""
    if spec.auth_method == "BASIC_AUTH":
        user, password = spec.basic_auth_user or "", spec.basic_auth_pass or ""
    elif endpoint.url_user is not None:
        user, password = endpoint.url_user, endpoint.url_password or ""
    else:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class AsyncioStream(httpcore.AsyncNetworkStream):
    """An httpcore network stream on asyncio's own streams instead of anyio's.

    anyio wraps every read and write in a cancel scope and looks up the running task and async library
    each time; on a loopback call that was a fifth of the gateway's client-side CPU. Writes are held
    until the next read, so a request's head and body leave in one send (httpcore writes them
    separately: two syscalls and usually two packets where one does). HTTP/1.1 is request/response, so
    everything written is flushed before the answer is awaited.
    """

    _FLUSH_AT = 64 * 1024

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = bytearray()

    async def _flush(self, timeout_s: float | None) -> None:
        if not self._pending:
            return
        if self._writer.is_closing():
            raise httpcore.WriteError("connection closed")
        self._writer.write(bytes(self._pending))
        self._pending.clear()
        if self._writer.transport.get_write_buffer_size():
            try:
                async with asyncio.timeout(timeout_s):
                    await self._writer.drain()
            except TimeoutError:
                raise httpcore.WriteTimeout("write timed out") from None
            except OSError as exc:
                raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._pending += buffer
        if len(self._pending) >= self._FLUSH_AT:
            await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._flush(timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("read timed out") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._pending.clear()
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        await self._flush(timeout)
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._writer.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks before reusing an idle connection: data or EOF on it means it is unusable.
            return self._reader.at_eof() or self._writer.is_closing() or _socket_readable(self._writer)
        names = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername"}
        return self._writer.get_extra_info(names.get(info, info))


def _socket_readable(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class PolicyNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy allows, trying each checked address in turn."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.resolve(host, port)
        last: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(timeout):
                    reader, writer = await asyncio.open_connection(
                        address, port, local_addr=None if local_address is None else (local_address, 0)
                    )
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"connect to {address}:{port} timed out") from None
            except OSError as exc:
                last = httpcore.ConnectError(str(exc) or type(exc).__name__)
                continue
            sock = writer.get_extra_info("socket")
            for option in socket_options or ():
                sock.setsockopt(*option)
            return AsyncioStream(reader, writer)
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRejected("policy", "unix sockets are not allowed for backends")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class _Pooled:
    pool: httpcore.AsyncConnectionPool
    in_use: int = 0


class ConnectionPools:
    """One keep-alive connection pool per origin; beyond ``max_origins`` the least recently used idle
    ones close.

    Requests go to httpcore's pool directly: httpx's layers on top (client, transport, its own request
    and response models) cost more CPU than a backend call's own bookkeeping and add nothing it uses.
    """

    def __init__(self, policy: AddressPolicy, max_origins: int, keepalive_expiry_s: float) -> None:
        self._network = PolicyNetworkBackend(policy)
        self._max_origins = max_origins
        self._keepalive_expiry_s = keepalive_expiry_s
        self._ssl_context = httpx.create_ssl_context(trust_env=False)
        self._pools: OrderedDict[str, _Pooled] = OrderedDict()

    @asynccontextmanager
    async def pool(self, origin: str) -> AsyncIterator[httpcore.AsyncConnectionPool]:
        pooled = self._pools.get(origin)
        if pooled is None:
            await self._evict_idle()
            pool = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context,
                max_connections=None,
                max_keepalive_connections=64,
                keepalive_expiry=self._keepalive_expiry_s,
                network_backend=self._network,
            )
            pooled = self._pools[origin] = _Pooled(pool)
        self._pools.move_to_end(origin)
        pooled.in_use += 1
        try:
            yield pooled.pool
        finally:
            pooled.in_use -= 1

    async def _evict_idle(self) -> None:
        excess = len(self._pools) + 1 - self._max_origins
        for origin in [key for key, entry in self._pools.items() if entry.in_use == 0][: max(excess, 0)]:
            await self._pools.pop(origin).pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pooled in pools:
            await pooled.pool.aclose()


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

        ``timeout_s`` bounds each attempt's reads; ``deadline_s`` bounds the whole call, waiting for a
        concurrency slot, retries and backoffs included.
        """
        endpoint = Endpoint.parse(spec.url)
        state = self.state(spec, endpoint)
        url, host = endpoint.url(path)
        headers = [(b"Host", host), *_FIXED_HEADERS]
        if body is not None:
            headers += [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]
        auth = authorization_header(spec, endpoint)
        if auth is not None:
            headers.append((b"Authorization", auth.encode("latin-1")))
        deadline = time.monotonic() + (
            deadline_s if deadline_s is not None else self.settings.call_deadline_s
        )
        state.budget.on_request()
        retry = 0
        while True:
            outcome = await self._attempt(
                state, endpoint, method, url, path, headers, body, timeout_s, deadline, use_breaker
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
            if time.monotonic() + delay >= deadline:
                raise failure
            if not state.budget.try_spend():
                failure.message += " (not retried: retry budget for this backend exhausted)"
                raise failure
            await asyncio.sleep(delay)
            retry += 1

    async def _attempt(
        self,
        state: BackendState,
        endpoint: Endpoint,
        method: str,
        url: httpcore.URL,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        timeout_s: float,
        deadline: float,
        use_breaker: bool,
    ) -> BackendResponse | CallFailure:
        """One attempt; returns the failure instead of raising so the retry loop stays flat."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return CallFailure(FailureKind.TIMEOUT, f"{path}: deadline exceeded", retryable=False)
        if use_breaker:
            try:
                state.breaker.before_call()
            except CircuitOpen as exc:
                return CallFailure(FailureKind.CIRCUIT_OPEN, str(exc), retry_after_s=exc.retry_after_s)
        try:
            result = await self._send(state, endpoint, method, url, path, headers, body, timeout_s, remaining)
        except BaseException:
            if use_breaker:
                state.breaker.release_probe()
            raise
        if use_breaker:
            self._record(state.breaker, result)
        return result

    async def _send(
        self,
        state: BackendState,
        endpoint: Endpoint,
        method: str,
        url: httpcore.URL,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        timeout_s: float,
        remaining: float,
    ) -> BackendResponse | CallFailure:
        read_s = min(timeout_s, remaining)
        timeouts = {
            "connect": min(self.settings.connect_timeout_s, remaining),
            "read": read_s,
            "write": read_s,
            "pool": read_s,
        }
        try:
            request = httpcore.Request(
                method, url, headers=headers, content=body, extensions={"timeout": timeouts}
            )
            async with (
                asyncio.timeout(remaining),
                state.limiter.semaphore,
                self.pools.pool(endpoint.origin) as pool,
            ):
                response = await pool.handle_async_request(request)
                try:
                    content = await self._read_capped(response)
                finally:
                    await response.aclose()
        except AddressRejected as exc:
            return CallFailure(FailureKind(exc.kind), exc.message)
        except _TooLarge:
            limit = self.settings.max_response_bytes
            return CallFailure(FailureKind.TOO_LARGE, f"{path}: answer larger than {limit} bytes")
        except TimeoutError:
            message = f"{path}: no answer within {round(remaining, 2):g}s (deadline of the whole call)"
            return CallFailure(FailureKind.TIMEOUT, message, retryable=True)
        except httpcore.TimeoutException as exc:
            return self._timeout_failure(path, exc, timeout_s)
        except httpcore.ConnectError as exc:
            message = f"{path}: cannot connect to {endpoint.origin}: {exc}"
            return CallFailure(FailureKind.REFUSED, message, retryable=True)
        except (httpcore.ReadError, httpcore.WriteError, httpcore.RemoteProtocolError) as exc:
            message = f"{path}: connection to {endpoint.origin} lost: {exc or type(exc).__name__}"
            return CallFailure(FailureKind.CONNECTION_LOST, message, retryable=True)
        except (httpcore.LocalProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError) as exc:
            return CallFailure(FailureKind.INVALID_URL, f"{path}: {type(exc).__name__}: {exc}")
        except _Undecodable as exc:
            message = f"{path}: answer in an unreadable content-encoding: {exc}"
            return CallFailure(FailureKind.BACKEND_ERROR, message)
        return self._classify(path, response, content)

    async def _read_capped(self, response: httpcore.Response) -> bytes:
        """The body, decoded, refusing to hold more than ``max_response_bytes`` of one answer in memory."""
        limit = self.settings.max_response_bytes
        declared = _header(response.headers, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        decoder = _decoder(_header(response.headers, b"content-encoding"))
        chunks: list[bytes] = []
        size = 0
        async for chunk in cast(AsyncIterable[bytes], response.stream):
            if decoder is not None:
                try:
                    chunk = decoder.decompress(chunk, limit + 1 - size)
                except zlib.error as exc:
                    raise _Undecodable(str(exc)) from None
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

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

    def _timeout_failure(self, path: str, exc: httpcore.TimeoutException, timeout_s: float) -> CallFailure:
        if isinstance(exc, httpcore.ConnectTimeout):
            message = f"{path}: connect timed out after {self.settings.connect_timeout_s:g}s"
        elif isinstance(exc, httpcore.PoolTimeout):
            message = f"{path}: no free connection in time"
        else:
            message = f"{path}: no answer within {timeout_s:g}s"
        return CallFailure(FailureKind.TIMEOUT, message, retryable=True)

    @staticmethod
    def _classify(path: str, response: httpcore.Response, content: bytes) -> BackendResponse | CallFailure:
        status = response.status
        content_type = _header(response.headers, b"content-type")
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
                retry_after_s=retry_after_seconds(_header(response.headers, b"retry-after")),
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
