"""The gateway's own HTTP/1.1 client (backend_client) against a raw HTTP/1.1 server.

The server is written by hand so a test controls the exact bytes of an answer, when a kept-alive
connection closes, and sees how many connections the gateway opened.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from services.model_gateway.predictor import BackendGateway
from shared.gateway_contract import BackendSpec, ProjectRef
from tests.gateway.conftest import MakeGateway, tasks

_ANSWER = orjson.dumps(
    {
        "results": [
            {
                "result": [
                    {
                        "from_name": "sentiment",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": ["Positive"]},
                    }
                ],
                "score": 0.5,
            }
        ],
        "model_version": "raw-v1",
    }
)


@dataclass
class RawBackend:
    """Answers every request with one prediction; ``close_after_answer`` drops the connection after
    answering, without saying so (an idle timeout on the backend's side)."""

    close_after_answer: bool = False
    gzip_answer: bool = False
    reply: bytes | None = None
    """Sent instead of the normal answer, as is."""
    connections: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if self.reply is not None:
                    writer.write(self.reply)
                    await writer.drain()
                    if self.close_after_answer:
                        break
                    continue
                answer, encoding = _ANSWER, b""
                if self.gzip_answer:
                    answer, encoding = gzip.compress(_ANSWER), b"content-encoding: gzip\r\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + encoding
                    + b"content-length: %d\r\n\r\n" % len(answer)
                    + answer
                )
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
        await writer.wait_closed()
        self.closed.set()


@pytest.fixture
async def raw_backend() -> AsyncIterator[RawBackend]:
    backend = RawBackend()
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    backend.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
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
        + _chunked(_ANSWER, 7)
    )
    gateway = make_gateway()
    await _predict(gateway, raw_backend, project)
    await _predict(gateway, raw_backend, project)
    assert raw_backend.connections == 1


async def test_answer_delimited_by_closing_the_connection(
    make_gateway: MakeGateway, project: ProjectRef, raw_backend: RawBackend
) -> None:
    raw_backend.reply = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + _ANSWER
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
