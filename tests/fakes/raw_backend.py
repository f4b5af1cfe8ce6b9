"""A hand-written HTTP/1.1 backend: a test controls the exact bytes of an answer, when a kept-alive
connection closes, and sees how many connections the gateway opened (plain TCP or TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson

ANSWER = orjson.dumps(
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

_SLICE = 64 * 1024


@dataclass
class RawBackend:
    """Answers every request with one prediction; ``close_after_answer`` drops the connection after
    answering, without saying so (an idle timeout on the backend's side)."""

    close_after_answer: bool = False
    gzip_answer: bool = False
    reply: bytes | None = None
    """Sent instead of the normal answer, as is."""
    connections: int = 0
    requests: int = 0
    request_lines: list[bytes] = field(default_factory=list)
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
                self.requests += 1
                self.request_lines.append(head.split(b"\r\n", 1)[0])
                if self.reply is not None:
                    for start in range(0, len(self.reply), _SLICE):  # big replies never sit in our buffer
                        writer.write(self.reply[start : start + _SLICE])
                        await writer.drain()
                    if self.close_after_answer:
                        break
                    continue
                answer, encoding = ANSWER, b""
                if self.gzip_answer:
                    answer, encoding = gzip.compress(ANSWER), b"content-encoding: gzip\r\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + encoding
                    + b"content-length: %d\r\n\r\n" % len(answer)
                    + answer
                )
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        self.closed.set()


@asynccontextmanager
async def serve_raw(
    backend: RawBackend, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve ``backend`` on 127.0.0.1 (TLS with ``tls``); yields the port, sets ``backend.url`` for ``host``."""
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0, ssl=tls)
    port = int(server.sockets[0].getsockname()[1])
    backend.url = f"{'https' if tls else 'http'}://{host}:{port}"
    async with server:
        yield port
