"""Users and API tokens. Tokens are shown once and stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.models import ApiToken, User

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_token_key() -> str:
    return secrets.token_hex(20)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return secrets.compare_digest(digest.hex(), digest_hex)


async def user_for_token(session: AsyncSession, key: str) -> User | None:
    stmt = (
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.key_digest == token_digest(key))
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def ensure_user_with_token(
    session: AsyncSession, email: str, key: str, password: str | None = None
) -> User:
    """Create the user and token if missing; used for the configured bootstrap token and the CLI."""
    await session.execute(
        insert(User)
        .values(email=email, password_hash=hash_password(password) if password else None)
        .on_conflict_do_nothing(index_elements=[User.email])
    )
    user = (await session.execute(select(User).where(User.email == email))).scalar_one()
    await session.execute(
        insert(ApiToken)
        .values(user_id=user.id, key_digest=token_digest(key))
        .on_conflict_do_nothing(index_elements=[ApiToken.key_digest])
    )
    return user
