"""Users and API tokens. Tokens are shown once and stored only as a SHA-256 digest.

Users exist to own tokens and to be named in ``completed_by``/``created_by``; there is no password
login: a token comes from ``LABELLOOP_API_TOKEN``, ``POST /api/users`` (``labelloop users create``) or
``python -m services.annotation_api.cli``.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.errors import BadRequest
from services.annotation_api.models import ApiToken, User


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_token_key() -> str:
    return secrets.token_hex(20)


async def user_for_token(session: AsyncSession, key: str) -> User | None:
    stmt = (
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.key_digest == token_digest(key))
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def ensure_user_with_token(session: AsyncSession, email: str, key: str) -> User:
    """Create the user and token if missing; used for the configured bootstrap token and the CLI."""
    await session.execute(
        insert(User).values(email=email).on_conflict_do_nothing(index_elements=[User.email])
    )
    user = (await session.execute(select(User).where(User.email == email))).scalar_one()
    await session.execute(
        insert(ApiToken)
        .values(user_id=user.id, key_digest=token_digest(key))
        .on_conflict_do_nothing(index_elements=[ApiToken.key_digest])
    )
    return user


async def create_user_with_token(session: AsyncSession, email: str, key: str) -> User:
    """A new user only: an existing e-mail is a 400 (no token is ever added to someone else's account)."""
    created = await session.execute(
        insert(User)
        .values(email=email)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User.id)
    )
    if created.scalar_one_or_none() is None:
        raise BadRequest(f"A user with e-mail {email} already exists.", field="email")
    return await ensure_user_with_token(session, email, key)
