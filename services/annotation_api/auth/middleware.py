"""Authenticate before a body is read: FastAPI reads and parses a route's body before it solves the
route's dependencies, so without this an anonymous client could make the API buffer and parse a body
as large as the route's cap before the 401.

Only requests that carry a body are checked here (the rest have nothing to read, and their route's
dependency answers as before); the route's own dependency still resolves the user.
"""

from __future__ import annotations

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
from services.annotation_api.auth.service import token_for_key


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or not length.isdigit() or int(length) > 0


class AuthenticateBeforeBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        maker: async_sessionmaker[AsyncSession] = state.sessionmaker
        async with maker() as session:
            return None if await token_for_key(session, key) is not None else INVALID_TOKEN

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
