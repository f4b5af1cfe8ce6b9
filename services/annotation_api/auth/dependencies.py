"""Request authentication: ``Authorization: Token <key>`` on every ``/api`` route."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from services.annotation_api.auth.service import user_for_token
from services.annotation_api.db import SessionDep
from services.annotation_api.errors import Unauthorized
from services.annotation_api.models import User
from shared.api_docs import CLIENT_TOKEN, SERVICE_TOKEN

# Parameters that only declare the credential in the spec (Swagger's Authorize button); the header is
# parsed below, with the rules (both schemes, trimming) clients already rely on.
_ClientTokenDoc = Annotated[str | None, Security(CLIENT_TOKEN)]
_ServiceTokenDoc = Annotated[HTTPAuthorizationCredentials | None, Security(SERVICE_TOKEN)]


def _credential(request: Request, scheme: str) -> str | None:
    header = request.headers.get("authorization", "")
    given_scheme, _, value = header.partition(" ")
    if given_scheme.lower() != scheme.lower() or not value.strip():
        return None
    return value.strip()


async def current_user(request: Request, session: SessionDep, _doc: _ClientTokenDoc) -> User:
    key = _credential(request, "Token") or _credential(request, "Bearer")
    if key is None:
        raise Unauthorized("Authentication credentials were not provided (Authorization: Token <key>).")
    user = await user_for_token(session, key)
    if user is None:
        raise Unauthorized("Invalid token.")
    return user


async def service_caller(request: Request, _doc: _ServiceTokenDoc) -> None:
    """Only the model gateway, holding the service token, may call ``/internal`` routes."""
    expected: str = request.app.state.settings.service_token
    given = _credential(request, "Bearer")
    # Compared as bytes: compare_digest raises on a non-ASCII str, and a header may hold any byte
    # (Starlette decodes headers as latin-1, so this gives back the bytes sent).
    if (
        not expected
        or given is None
        or not secrets.compare_digest(given.encode("latin-1"), expected.encode())
    ):
        raise Unauthorized("This route is for labelloop services only.")


CurrentUser = Annotated[User, Depends(current_user)]
