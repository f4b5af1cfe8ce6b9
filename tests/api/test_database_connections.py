"""Pooled connections of the users' API: those Postgres dropped are replaced before a request uses them,
and those used moments ago go out without a ping (``db._check_on_checkout``).

What a connection did last is read from ``pg_stat_activity.query`` of its server process, through a
connection of the test's own: a ping leaves ``ROLLBACK;`` there.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.annotation_api.db import make_engine, raw_connection
from services.annotation_api.settings import ApiSettings
from tests.support.databases import alembic
from tests.support.waiting import wait_for

_TERMINATE_OTHERS = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    return api_settings.model_copy(update={"db_ping_after_idle_s": 0.2})


async def _backend_pid(engine: AsyncEngine) -> int:
    """Check a connection out, run a statement in a transaction that commits, return the connection to
    the pool; its server process id."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT 1"))
        pid: int = (await raw_connection(conn)).get_server_pid()
    return pid


async def test_requests_after_postgres_dropped_every_idle_connection_all_succeed(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Through the real API: its pool holds several connections, Postgres terminates all of them, and
    after a pause longer than ``db_ping_after_idle_s`` every request of the next burst is answered."""
    warm = await asyncio.gather(*(api.get("/api/projects") for _ in range(5)))
    assert [answer.status_code for answer in warm] == [200] * 5
    assert await db.fetchval(_TERMINATE_OTHERS) >= 1
    await asyncio.sleep(0.3)
    after = await asyncio.gather(*(api.get("/api/projects") for _ in range(5)))
    assert [answer.status_code for answer in after] == [200] * 5, [answer.text for answer in after]


async def test_a_connection_postgres_closed_is_replaced_without_waiting_for_a_ping(
    database_url: str, db: asyncpg.Connection
) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0, ping_after_idle_s=3600)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            driver = await raw_connection(conn)
        first = driver.get_server_pid()
        assert await db.fetchval("SELECT pg_terminate_backend($1)", first)

        async def driver_saw_the_close() -> bool:
            return driver.is_closed()

        await wait_for(driver_saw_the_close, 10, "the driver to read the server's close")
        replacement = await _backend_pid(engine)
    finally:
        await engine.dispose()
    assert replacement != first


@pytest.mark.parametrize(("ping_after_idle_s", "last_statement"), [(3600.0, "COMMIT;"), (0.0, "ROLLBACK;")])
async def test_a_connection_used_moments_ago_goes_out_unpinged(
    database_url: str, db: asyncpg.Connection, ping_after_idle_s: float, last_statement: str
) -> None:
    """The connection back in the pool for less than ``ping_after_idle_s`` is handed out as it is; with 0,
    every checkout pings (``BEGIN``, ``;``, ``ROLLBACK``)."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0, ping_after_idle_s=ping_after_idle_s)
    try:
        pid = await _backend_pid(engine)
        async with engine.connect() as conn:
            assert (await raw_connection(conn)).get_server_pid() == pid
            seen = await db.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await engine.dispose()
    assert seen == last_statement


async def test_database_urls_take_libpq_parameters(database_url: str) -> None:
    """Managed Postgres services hand out URLs like ``…?sslmode=require``: the API's pools and the
    migrations take libpq's parameters (SQLAlchemy's asyncpg dialect refused ``sslmode``)."""
    url = f"{database_url}?sslmode=disable&application_name=labelloop-url-test"
    migrated = alembic(url, "upgrade", "head")
    assert migrated.returncode == 0, migrated.stderr
    engine = make_engine(url, 1)
    try:
        async with engine.begin() as conn:
            name = (await conn.execute(text("SELECT current_setting('application_name')"))).scalar()
    finally:
        await engine.dispose()
    assert name == "labelloop-url-test"
