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
from services.annotation_api.models import ApiToken, Organization, Project, User


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_token_key() -> str:
    return secrets.token_hex(20)


async def token_for_key(session: AsyncSession, key: str) -> tuple[User, ApiToken] | None:
    return await token_for_digest(session, token_digest(key))


async def token_for_digest(session: AsyncSession, digest: str) -> tuple[User, ApiToken] | None:
    """The token stored under ``digest`` (``token_digest`` of its key) and its user, or None."""
    stmt = (
        select(User, ApiToken)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.key_digest == digest)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


async def ensure_user_with_token(
    session: AsyncSession, email: str, key: str, organization_id: int | None = None
) -> User:
    """Create the user and token if missing; used for the configured bootstrap token and the CLI.

    A new user joins ``organization_id``, or gets an organization of its own when none is given.
    """
    user = await ensure_user(session, email, organization_id)
    await session.execute(
        insert(ApiToken)
        .values(user_id=user.id, key_digest=token_digest(key))
        .on_conflict_do_nothing(index_elements=[ApiToken.key_digest])
    )
    return user


async def create_user_with_token(session: AsyncSession, email: str, key: str, organization_id: int) -> User:
    """A new user of ``organization_id`` only: an existing e-mail is a 400 (no token is ever added to
    someone else's account)."""
    created = await session.execute(
        insert(User)
        .values(email=email, organization_id=organization_id)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User.id)
    )
    if created.scalar_one_or_none() is None:
        raise BadRequest(f"A user with e-mail {email} already exists.", field="email")
    return await ensure_user_with_token(session, email, key, organization_id)


async def ensure_backend_token(session: AsyncSession, backend_id: int, project_id: int, key: str) -> None:
    """The ML backend's own token, scoped to its project; deleted with the backend (cascade)."""
    organization_id = await session.scalar(select(Project.organization_id).where(Project.id == project_id))
    user = await ensure_user(session, f"ml-backend+project{project_id}@labelloop.local", organization_id)
    await session.execute(
        insert(ApiToken)
        .values(
            user_id=user.id, key_digest=token_digest(key), project_id=project_id, ml_backend_id=backend_id
        )
        .on_conflict_do_nothing(index_elements=[ApiToken.key_digest])
    )


async def ensure_user(session: AsyncSession, email: str, organization_id: int | None = None) -> User:
    existing = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    if existing is not None:
        return existing
    if organization_id is None:
        organization_id = await session.scalar(
            insert(Organization).values(title=email).returning(Organization.id)
        )
    await session.execute(
        insert(User)
        .values(email=email, organization_id=organization_id)
        .on_conflict_do_nothing(index_elements=[User.email])
    )
    return (await session.execute(select(User).where(User.email == email))).scalar_one()
