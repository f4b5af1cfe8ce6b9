"""Authenticate before a body is read: FastAPI reads and parses a route's body before it solves the
route's dependencies, so without this an anonymous client could make the API buffer and parse a body
as large as the route's cap before the 401.

Only requests that carry a body are checked here (the rest have nothing to read, and their route's
dependency answers as before); the route's own dependency still resolves the user.

A token found valid is remembered for ``RECENT_TOKEN_S`` (by digest, per process), so a client that writes
again and again (an annotator submitting, an SDK creating predictions) does not pay this check's own
session and lookup each time. The route's dependency still looks the token up in the request's
transaction: a token revoked meanwhile is refused there, only after its body was read.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from services.annotation_api.auth.dependencies import (
    INVALID_TOKEN,
    NO_CREDENTIALS,
    SERVICES_ONLY,
    is_service_token,
    user_key,
)
from services.annotation_api.auth.service import token_digest, token_for_digest

RECENT_TOKEN_S = 10.0
"""How long a token found valid passes this check without a lookup."""
RECENT_TOKENS_MAX = 4096
"""Tokens remembered at most; the least recently seen go first."""


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or not length.isdigit() or int(length) > 0


class _RecentTokens:
    """Digests of tokens found valid, with when; an LRU of at most ``RECENT_TOKENS_MAX``."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()

    def fresh(self, digest: str) -> bool:
        seen = self._seen.get(digest)
        return seen is not None and time.monotonic() - seen < RECENT_TOKEN_S

    def remember(self, digest: str) -> None:
        self._seen[digest] = time.monotonic()
        self._seen.move_to_end(digest)
        while len(self._seen) > RECENT_TOKENS_MAX:
            self._seen.popitem(last=False)


class AuthenticateBeforeBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._recent = _RecentTokens()

    async def _refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None when its credentials are good (or not checked here)."""
        path: str = scope["path"]
        headers = dict(scope["headers"])
        if not _has_body(headers):
            return None
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        state = scope["app"].state
        if path.startswith("/internal/"):
            return None if is_service_token(authorization, state.settings.service_token) else SERVICES_ONLY
        if not path.startswith("/api/"):
            return None
        key = user_key(authorization)
        if key is None:
            return NO_CREDENTIALS
        digest = token_digest(key)
        if self._recent.fresh(digest):
            return None
        maker: async_sessionmaker[AsyncSession] = state.sessionmaker
        async with maker() as session:
            if await token_for_digest(session, digest) is None:
                return INVALID_TOKEN
        self._recent.remember(digest)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (detail := await self._refusal(scope)) is not None:
            body = orjson.dumps({"detail": detail})
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b"Token"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
