"""The gateway's backend client (aiohttp under ``backend_client``) against a raw HTTP/1.1 server
(``tests.fakes.raw_backend``): framing, keep-alive, encodings, and the caps on what a backend may send."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from services.model_gateway.predictor import BackendGateway
from shared.gateway_contract import BackendSpec, ProjectRef
from tests.fakes.raw_backend import ANSWER, RawBackend, serve_raw
from tests.gateway.conftest import MakeGateway, tasks


@pytest.fixture
async def raw_backend() -> AsyncIterator[RawBackend]:
    backend = RawBackend()
    async with serve_raw(backend):
        yield backend


async def _predict(gateway: BackendGateway, backend: RawBackend, project: ProjectRef) -> None:
    result = await gateway.predict(BackendSpec(url=backend.url), project, tasks(1), interactive=True)
    assert result.errors == [] and [p.model_version for p in result.predictions] == ["raw-v1"]


async def test_connection_is_kept_alive_between_calls(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    gateway = make_gateway()
    for _ in range(3):
        await _predict(gateway, raw_backend, project)
    assert raw_backend.connections == 1


async def test_connection_the_backend_closed_while_idle_is_not_reused(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    """An interactive call has one attempt: it must not be spent on a connection that is already gone."""
    raw_backend.close_after_answer = True
    gateway = make_gateway()
    await _predict(gateway, raw_backend, project)
    await asyncio.wait_for(raw_backend.closed.wait(), 5)
    await _predict(gateway, raw_backend, project)
    assert raw_backend.connections == 2


async def test_compressed_answer_is_decoded(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    """Calls ask for no encoding; a backend that gzips anyway is still understood."""
    raw_backend.gzip_answer = True
    await _predict(make_gateway(), raw_backend, project)


def _chunked(body: bytes, size: int) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


async def test_chunked_answer_on_a_kept_alive_connection(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    raw_backend.reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + _chunked(ANSWER, 7)
    )
    gateway = make_gateway()
    await _predict(gateway, raw_backend, project)
    await _predict(gateway, raw_backend, project)
    assert raw_backend.connections == 1


async def test_answer_delimited_by_closing_the_connection(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    raw_backend.reply = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + ANSWER
    raw_backend.close_after_answer = True
    gateway = make_gateway()
    await _predict(gateway, raw_backend, project)
    await _predict(gateway, raw_backend, project)
    assert raw_backend.connections == 2


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_answer_over_the_cap_is_refused(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend, framing: str
) -> None:
    big = b"[" + b"0," * 2000 + b"0]"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    if framing == "chunked":
        raw_backend.reply = head + b"transfer-encoding: chunked\r\n\r\n" + _chunked(big, 100)
    else:
        raw_backend.reply = head + b"content-length: %d\r\n\r\n" % len(big) + big
    gateway = make_gateway(max_response_bytes=1024)
    result = await gateway.predict(BackendSpec(url=raw_backend.url), project, tasks(1), interactive=True)
    assert [error.message for error in result.errors] == ["/predict: answer larger than 1024 bytes"]


async def test_an_answer_that_is_not_http_is_a_lost_connection(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    raw_backend.reply = b"SSH-2.0-OpenSSH_9.6\r\n"
    result = await make_gateway().predict(
        BackendSpec(url=raw_backend.url), project, tasks(1), interactive=True
    )
    [error] = result.errors
    assert error.message.startswith(f"/predict: connection to {raw_backend.url} lost: not an HTTP/1.1 answer")


@pytest.mark.parametrize(
    "head",
    [
        b"x-padding: " + b"a" * 20_000 + b"\r\n",  # one field over max_header_bytes
        b"".join(b"x-h%d: 1\r\n" % i for i in range(200)),  # more fields than allowed
    ],
    ids=["long-field", "many-fields"],
)
async def test_answer_headers_over_the_cap_are_refused(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend, head: bytes
) -> None:
    raw_backend.reply = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + head
        + b"content-length: %d\r\n\r\n" % len(ANSWER)
        + ANSWER
    )
    result = await make_gateway().predict(
        BackendSpec(url=raw_backend.url), project, tasks(1), interactive=True
    )
    [error] = result.errors
    assert error.message.startswith("/predict: answer headers too large (at most 128 fields of 8190 bytes)")


async def test_redirects_are_not_followed(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    """A backend must not steer the gateway to another address (e.g. cloud metadata) by redirecting."""
    raw_backend.reply = b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://169.254.169.254/latest\r\ncontent-length: 0\r\n\r\n"
    result = await make_gateway().predict(
        BackendSpec(url=raw_backend.url), project, tasks(1), interactive=True
    )
    [error] = result.errors
    assert error.message.startswith("/predict answered 307")
    assert raw_backend.requests == 1


async def test_a_refused_answer_is_freed_at_once(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    """An answer over the cap is dropped when refused, not kept alive by a reference cycle until a GC
    pass: with the collector off, the memory the call allocated is back after it (within 1 MB of 8 MB)."""
    big = b"[" + b"0," * (4 * 1024 * 1024) + b"0]"
    raw_backend.reply = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(
            b"%x\r\n%s\r\n" % (len(big[i : i + 65536]), big[i : i + 65536]) for i in range(0, len(big), 65536)
        )
        + b"0\r\n\r\n"
    )
    raw_backend.close_after_answer = True
    gateway = make_gateway(max_response_bytes=2 * 1024 * 1024)
    spec = BackendSpec(url=raw_backend.url)
    await gateway.predict(spec, project, tasks(1), interactive=True)  # warm-up: pools, caches, parser
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        result = await gateway.predict(spec, project, tasks(1), interactive=True)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert [error.message for error in result.errors] == ["/predict: answer larger than 2097152 bytes"]
    assert after - before < 1024 * 1024


async def test_an_opted_in_proxy_carries_the_calls_and_the_policy_still_applies(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    """The raw backend plays the proxy: it sees absolute-form requests for the backend's name. A backend
    name resolving to a denied address is refused before anything reaches the proxy."""
    names = {"backend.test": "127.0.0.1", "inside.test": "10.1.2.3"}

    async def resolver(host: str, port: int) -> list[str]:
        return [names[host]]

    gateway = make_gateway(resolver=resolver, backend_proxy_url=raw_backend.url)
    result = await gateway.predict(
        BackendSpec(url="http://backend.test:9"), project, tasks(1), interactive=True
    )
    assert result.errors == [] and raw_backend.request_lines == [
        b"POST http://backend.test:9/predict HTTP/1.1"
    ]
    refused = await gateway.predict(
        BackendSpec(url="http://inside.test:9"), project, tasks(1), interactive=True
    )
    [error] = refused.errors
    assert "10.1.2.3 is in denied network 10.0.0.0/8" in error.message
    assert raw_backend.requests == 1
