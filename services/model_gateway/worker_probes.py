"""The worker's small HTTP listener: ``/metrics``, ``/health`` (liveness) and ``/ready`` (readiness).

The worker has no web app, and a full ASGI server would fight arq over signal handling, so this is a
minimal HTTP/1.1 responder on the worker's own event loop: one request per connection, GET only.
Answering at all proves the event loop turns; ``/health`` also fails when the poll loop stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import orjson

from shared.metrics import metrics_response

log = logging.getLogger(__name__)
_READ_TIMEOUT_S = 5.0
_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}

Check = Callable[[], Awaitable[str | None]]
"""None when fine, else the reason it is not."""


class ProbeServer:
    def __init__(self, alive: Check, ready: Check) -> None:
        self._alive = alive
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port``; returns the port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("probes and metrics on http://%s:%d", host, bound)
        return bound

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _answer(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method != "GET":
            return 405, b'{"detail": "GET only"}', "application/json"
        if path == "/metrics":
            body, content_type = await metrics_response()
            return 200, body, content_type
        if path in ("/health", "/ready"):
            reason = await (self._alive if path == "/health" else self._ready)()
            if reason is None:
                return (
                    200,
                    b'{"status": "UP"}' if path == "/health" else b'{"status": "ready"}',
                    "application/json",
                )
            return 503, orjson.dumps({"status": "not ready", "reason": reason[:500]}), "application/json"
        return 404, b'{"detail": "Not Found"}', "application/json"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            method, target = parts[0], parts[1] if len(parts) > 1 else "/"
            status, body, content_type = await self._answer(method, target.split("?", 1)[0])
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (status, _REASONS[status], content_type.encode("latin-1"), len(body))
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
