"""Request body size limits per route: an oversized body is refused with 413 naming the limit, before it
is read (from Content-Length) or as soon as the streamed bytes pass it.

Only the bulk routes (task and prediction import, chunk reports) take large bodies; every other route
parses its body whole as JSON, so it gets a small cap.
"""

from __future__ import annotations

import re

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.runtime import CycleCollectionBudget

BULK_PATHS = re.compile(
    r"^/api/projects/[^/]+/import(?:/predictions)?/?$|^/internal/chunks/[^/]+/complete/?$"
)
"""Routes that stream or read large bodies raw; everything else gets the small cap."""


class BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parsing passes it through."""


class BodySizeLimitMiddleware:
    """Also counts the bytes every body brought in, for the process's ``CycleCollectionBudget``."""

    def __init__(self, app: ASGIApp, max_bytes: int, bulk_max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.bulk_max_bytes = bulk_max_bytes
        self.cycles = CycleCollectionBudget()

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if BULK_PATHS.match(scope["path"]):
            return self.bulk_max_bytes, "LABELLOOP_MAX_REQUEST_BYTES"
        return self.max_bytes, "LABELLOOP_MAX_JSON_REQUEST_BYTES"

    @staticmethod
    def _detail(limit: int, setting: str) -> str:
        return f"Request body exceeds the limit of {limit} bytes for this route ({setting})."

    async def _reject(self, send: Send, limit: int, setting: str) -> None:
        body = orjson.dumps({"detail": self._detail(limit, setting), "limit_bytes": limit})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit, setting)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(413, self._detail(limit, setting))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._reject(send, limit, setting)
        finally:
            if received:
                self.cycles.spend(received)
