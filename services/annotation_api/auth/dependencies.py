"""Request authentication: ``Authorization: Token <key>`` on every ``/api`` route."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request

from services.annotation_api.auth.access import authorize
from services.annotation_api.auth.service import token_for_key
from services.annotation_api.db import SessionDep
from services.annotation_api.errors import Unauthorized
from services.annotation_api.models import User


def _credential(request: Request, scheme: str) -> str | None:
    header = request.headers.get("authorization", "")
    given_scheme, _, value = header.partition(" ")
    if given_scheme.lower() != scheme.lower() or not value.strip():
        return None
    return value.strip()


async def current_user(request: Request, session: SessionDep) -> User:
    key = _credential(request, "Token") or _credential(request, "Bearer")
    if key is None:
        raise Unauthorized("Authentication credentials were not provided (Authorization: Token <key>).")
    found = await token_for_key(session, key)
    if found is None:
        raise Unauthorized("Invalid token.")
    user, token = found
    await authorize(request, session, user, token.project_id)
    return user


async def service_caller(request: Request) -> None:
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
