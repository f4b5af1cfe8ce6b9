"""Alembic environment: the API's engine (``db.make_engine``, so ``DATABASE_URL`` takes the same parameters,
e.g. ``?sslmode=require``), URL from ``DATABASE_URL``, models' metadata for autogenerate."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from services.annotation_api.db import make_engine
from services.annotation_api.models import Base
from shared.settings import asyncpg_url

target_metadata = Base.metadata


def _url() -> str:
    configured = context.config.get_main_option("sqlalchemy.url")
    return asyncpg_url(configured or os.environ["DATABASE_URL"])


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url(), pool_size=1, ping_after_idle_s=None)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
