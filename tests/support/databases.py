"""Test databases: one migrated template per session, and a fresh copy of it for every test; a Redis
database of each test's (and benchmark's) own.

``CREATE DATABASE … TEMPLATE`` copies the migrated schema in tens of milliseconds, which gives every test
its own empty database (the isolation we chose over rolled-back transactions, because the servers under
test commit through their own connections and pools).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
_counter = itertools.count()


REDIS_DATABASES = 16
"""A stock Redis's database count; database 0 is ``make run``'s and holds the allocation counter."""
_REDIS_COUNTER = "labelloop-tests:next-db"


def own_redis_database(server_url: str) -> str:
    """An emptied Redis database of the caller's own on ``server_url``'s server, one of 1 to 15 in turn.

    Workers take every job in their database's queue: a test or benchmark sharing ``make run``'s database
    (0) would have its chunks taken by ``make run``'s worker, and the other way round. Up to
    ``REDIS_DATABASES - 1`` callers at once never see each other's keys.
    """
    with redis.Redis.from_url(server_url) as client:
        number = 1 + (int(client.incr(_REDIS_COUNTER)) - 1) % (REDIS_DATABASES - 1)
    parts = urlsplit(server_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{number}", parts.query, parts.fragment))
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin_dsn(url: str) -> str:
    return with_database(url, "postgres").replace("postgresql+asyncpg://", "postgresql://")


async def recreate_database(server_url: str, name: str, template: str | None = None) -> str:
    conn = await asyncpg.connect(_admin_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real Alembic CLI against ``database_url`` (a subprocess: env.py owns its event loop)."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=True,
    )


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


async def project_predictions(db: asyncpg.Connection, project_id: int | None = None) -> int:
    """A project's (or the only project's) prediction counter as the API reads it: the column plus the
    counts of chunk reports not folded into it yet, in one statement."""
    value = await db.fetchval(
        """
        SELECT p.total_predictions_number + (
            SELECT COALESCE(sum(c.predictions), 0) FROM job_chunk c JOIN job j ON j.id = c.job_id
            WHERE j.project_id = p.id AND NOT c.folded)
        FROM project p WHERE $1::int IS NULL OR p.id = $1
        """,
        project_id,
    )
    return int(value)


async def insert_tasks(db: asyncpg.Connection, project_id: int, count: int) -> list[int]:
    """``count`` text tasks straight into the table (much faster than an import at 100k); their ids, in order."""
    made = await db.fetchval(
        "WITH made AS (INSERT INTO task (project_id, data) SELECT $1, jsonb_build_object('text', 't' || n)"
        " FROM generate_series(1, $2) AS n RETURNING id) SELECT array_agg(id ORDER BY id) FROM made",
        project_id,
        count,
    )
    return list(made)
