"""Request authentication: ``Authorization: Token <key>`` on every ``/api`` route."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from services.annotation_api.auth.access import authorize
from services.annotation_api.auth.service import token_for_key
from services.annotation_api.db import SessionDep
from services.annotation_api.errors import Unauthorized
from services.annotation_api.models import User
from shared.api_docs import CLIENT_TOKEN, SERVICE_TOKEN

# Parameters that only declare the credential in the spec (Swagger's Authorize button); the header is
# parsed below, with the rules (both schemes, trimming) clients already rely on.
_ClientTokenDoc = Annotated[str | None, Security(CLIENT_TOKEN)]
_ServiceTokenDoc = Annotated[HTTPAuthorizationCredentials | None, Security(SERVICE_TOKEN)]


def credential(authorization: str, scheme: str) -> str | None:
    """The key of an ``Authorization: <scheme> <key>`` header value, or None."""
    given_scheme, _, value = authorization.partition(" ")
    if given_scheme.lower() != scheme.lower() or not value.strip():
        return None
    return value.strip()


def user_key(authorization: str) -> str | None:
    return credential(authorization, "Token") or credential(authorization, "Bearer")


def is_service_token(authorization: str, expected: str) -> bool:
    """Compared as bytes: compare_digest raises on a non-ASCII str, and a header may hold any byte
    (Starlette decodes headers as latin-1, so this gives back the bytes sent)."""
    given = credential(authorization, "Bearer")
    return (
        bool(expected)
        and given is not None
        and secrets.compare_digest(given.encode("latin-1"), expected.encode())
    )


NO_CREDENTIALS = "Authentication credentials were not provided (Authorization: Token <key>)."
INVALID_TOKEN = "Invalid token."
SERVICES_ONLY = "This route is for labelloop services only."


async def current_user(request: Request, session: SessionDep, _doc: _ClientTokenDoc) -> User:
    key = user_key(request.headers.get("authorization", ""))
    if key is None:
        raise Unauthorized(NO_CREDENTIALS)
    found = await token_for_key(session, key)
    if found is None:
        raise Unauthorized(INVALID_TOKEN)
    user, token = found
    await authorize(request, session, user, token.project_id)
    return user


async def service_caller(request: Request, _doc: _ServiceTokenDoc) -> None:
    """Only the model gateway, holding the service token, may call ``/internal`` routes."""
    if not is_service_token(
        request.headers.get("authorization", ""), request.app.state.settings.service_token
    ):
        raise Unauthorized(SERVICES_ONLY)


CurrentUser = Annotated[User, Depends(current_user)]
