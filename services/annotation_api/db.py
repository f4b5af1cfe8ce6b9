"""Engine, sessions and the one place where a request's transaction commits.

Services never commit (except ``release_transaction`` before a remote call). ``get_session`` opens one session per request, commits it when the handler
returns, rolls back on error, and only then runs the callbacks registered with ``after_commit`` (e.g.
enqueueing arq work) so a background job can never point at a row that was rolled back.

``/internal`` (gateway workers' chunk leases and reports) takes ``get_internal_session`` instead: a pool
of its own, entered through ``InternalSlots``, so a bulk job's traffic never holds the connections user
requests need, and a burst of it is answered 503 + ``Retry-After`` (the workers back off) rather than
queued without bound inside the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from services.annotation_api.errors import ServiceBusy, database_gone
from services.annotation_api.settings import DEFAULT_DB_PING_AFTER_IDLE_S
from shared.settings import asyncpg_url, plain_postgres_url

log = logging.getLogger(__name__)
AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT_KEY = "labelloop_after_commit"


PLAN_EACH_EXECUTION = {"plan_cache_mode": "force_custom_plan"}
"""Statements are prepared once per connection but planned at each execution, for the data as it is then.

Tables here change size by orders of magnitude within minutes (a million tasks imported, a project
deleted). Postgres otherwise settles on a generic plan after five executions and keeps it until the
table's statistics change: one made while a table was empty scans it whole once it holds a million rows.
Planning the API's statements takes well under a millisecond."""

INDEX_PLANS_KEPT = "set_config('enable_seqscan', 'off', true), set_config('plan_cache_mode', 'auto', true)"
"""The select list that lets the rest of a transaction keep generic plans, each an index lookup.

``plan_cache_mode = auto``: a statement prepared on the connection, and the query Postgres runs per
row for a foreign key (its RI triggers: a check per row inserted, a cascade per row deleted), is
planned once per connection instead of at every execution as ``PLAN_EACH_EXECUTION`` has it.
``enable_seqscan = off``: such a plan is then an index lookup however small the table was when it was
made, never the sequential scan an empty table costs nothing for, kept while the table grows."""

_KEEP_INDEX_PLANS = text(f"SELECT {INDEX_PLANS_KEPT}")


async def keep_index_plans(session: AsyncSession) -> None:
    """For the rest of this transaction, per-row foreign key queries keep their plans (``INDEX_PLANS_KEPT``).

    For the transactions that write rows by the thousand: planned again for each row, a foreign key cost
    Postgres ~8 µs per row COPYed (task → project, prediction → task) and ~25 µs per task deleted (three
    cascades: predictions, annotations, locks), twice to four times the write itself (``bench/README.md``).
    Only where each later statement of the transaction has one right index (a key, the task index): a kept
    plan serves any values, so one whose best index depends on them (a project's size, a model version's
    share) must not run under it.
    """
    await session.execute(_KEEP_INDEX_PLANS)


_SCAN_IN_INDEX_ORDER = text(
    "SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan'),"
    " set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)"
)
_RESTORE_SCANS = text(
    "SELECT set_config('enable_seqscan', :seqscan, true), set_config('enable_bitmapscan', :bitmapscan, true)"
)


@asynccontextmanager
async def scanning_in_index_order(session: AsyncSession) -> AsyncIterator[None]:
    """Within the block, a window of task ids (``TaskSelection.ids_above``) reads the task index in order, a
    window's worth, whatever the statistics say; the transaction's settings are restored after it.

    Right after a big import, before autovacuum has analyzed the table, Postgres estimated a few hundred
    rows above the cursor, chose a bitmap scan of all of them and a sort: each window of 5,000 read every
    task after it, quadratic in the project. At a million tasks bulk prediction's planning took 38 s of
    Postgres (``bench/README.md``). Only the window: a later statement may need a bitmap scan.
    """
    previous = (await session.execute(_SCAN_IN_INDEX_ORDER)).one()
    yield
    await session.execute(_RESTORE_SCANS, {"seqscan": previous[0], "bitmapscan": previous[1]})


def make_engine(
    database_url: str,
    pool_size: int = 10,
    max_overflow: int | None = None,
    ping_after_idle_s: float | None = DEFAULT_DB_PING_AFTER_IDLE_S,
) -> AsyncEngine:
    """A pool of ``pool_size`` connections, plus ``max_overflow`` on demand (default: as many again).

    Unless ``ping_after_idle_s`` is None, a connection leaving the pool is checked first (``_check_on_checkout``),
    so one Postgres dropped is replaced before a request uses it. Without the check, the first request on
    such a connection is answered 503 with ``Retry-After`` (``errors.py``) and the pool reconnects.
    """
    dsn = plain_postgres_url(database_url)

    async def connect() -> asyncpg.Connection:
        """asyncpg's connect, where not reaching the server at all is Postgres's own connection failure
        (SQLSTATE 08006): SQLAlchemy passes OS errors through unwrapped, so a request made while Postgres
        is down or restarting ended as a bare 500, not as the 503 with ``Retry-After`` every lost
        connection gets (``errors.database_answer``)."""
        try:
            return await asyncpg.connect(dsn, server_settings=PLAN_EACH_EXECUTION)
        except OSError as exc:
            raise asyncpg.ConnectionFailureError(f"cannot connect to the database: {exc}") from exc

    engine = create_async_engine(
        asyncpg_url(database_url),
        async_creator=connect,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
    )
    if ping_after_idle_s is not None:
        _check_on_checkout(engine.sync_engine.pool, ping_after_idle_s)
    return engine


_RETURNED_AT = "labelloop_returned_at"


def _check_on_checkout(pool: Pool, ping_after_idle_s: float) -> None:
    """Check connections as they leave the pool, pinging only those idle ``ping_after_idle_s`` or longer.

    SQLAlchemy's ``pool_pre_ping`` pings every checkout: three round trips with asyncpg (``BEGIN``, an
    empty query, ``ROLLBACK``), on every request. A connection closed by Postgres (a restart, a
    terminated backend) is known to the driver without one as soon as the event loop reads the close:
    ``is_closed()``. What only a ping finds is a connection that died silently (a firewall or proxy
    dropping idle connections), which takes time idle; so a connection back in the pool for less than
    ``ping_after_idle_s`` goes out unpinged, as pools like HikariCP do. A failed check raises
    ``DisconnectionError``: the pool discards the connection and hands out another.
    """

    def stamp(_dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    def check(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: object) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("Postgres closed the connection")
        if time.monotonic() - record.info.get(_RETURNED_AT, 0.0) >= ping_after_idle_s:
            try:
                dbapi_connection.ping()
            except Exception as exc:
                raise DisconnectionError(f"ping failed: {exc}") from exc

    event.listen(pool, "connect", stamp)
    event.listen(pool, "checkin", stamp)
    event.listen(pool, "checkout", check)


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session, inside the session's transaction.

    SQLAlchemy's asyncpg adapter opens the database transaction lazily on its first statement; when
    the session has not run one yet, a trivial statement runs first, so raw writes never land outside
    the request's transaction.
    """
    conn = await raw_connection(await session.connection())
    if not conn.is_in_transaction():
        await session.execute(text("SELECT 1"))
    return conn


async def raw_connection(connection: AsyncConnection) -> asyncpg.Connection:
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, asyncpg.Connection)
    return driver


class InternalSlots:
    """At most ``size`` ``/internal`` calls at once per process (one pooled connection each); a call that
    finds none free within ``wait_s`` is refused with ``ServiceBusy``."""

    def __init__(self, size: int, wait_s: float, retry_after_s: int) -> None:
        self._free = asyncio.Semaphore(size)
        self._wait_s = wait_s
        self._retry_after_s = retry_after_s

    async def acquire(self) -> None:
        try:
            await asyncio.wait_for(self._free.acquire(), self._wait_s)
        except TimeoutError:
            raise ServiceBusy(
                "The API is busy with bulk work; retry later.", retry_after_s=self._retry_after_s
            ) from None

    def release(self) -> None:
        self._free.release()


class LoopFailures:
    """How a background loop reports a failed round: a lost database once when it goes and once when it
    is back (a loop retries every second or so, and a traceback per round would bury the rest of the log
    for the length of a restart or failover); anything else with its traceback, every time."""

    def __init__(self, loop: str) -> None:
        self._loop = loop
        self._down_since: float | None = None

    def failed(self, exc: Exception) -> None:
        """Call from the ``except`` block of the failed round."""
        if not database_gone(exc):
            log.exception("%s failed", self._loop)
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("%s: database unreachable (%s); retrying until it is back", self._loop, exc)

    def succeeded(self) -> None:
        if self._down_since is not None:
            log.warning(
                "%s: database reachable again after %.1f s", self._loop, time.monotonic() - self._down_since
            )
            self._down_since = None


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run ``callback`` once the request's transaction has committed (never if it rolls back)."""
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(callback)


async def release_transaction(session: AsyncSession) -> None:
    """Commit what the request did so far, before a remote call (the gateway, seconds for a slow
    backend): no transaction or pooled connection is held while it runs. Rows read before may have
    changed or gone by the time it answers: re-read (and lock) what is written afterwards. The
    ``after_commit`` callbacks still run once, at the request's end."""
    await session.commit()


async def run_after_commit(session: AsyncSession) -> None:
    """Run the session's ``after_commit`` callbacks; call it once its transaction has committed.

    Requests get this from ``get_session``; background loops that use ``maker.begin()`` call it after
    their block, so service functions written for requests enqueue their work there too.
    """
    callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            # The data is committed; whatever the callback should have started is picked up
            # again by the periodic sweeper, so a failure here must not turn into a 500.
            log.exception("after-commit callback failed")


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _request_session(request, request.app.state.sessionmaker) as session:
        yield session


async def get_internal_session(request: Request) -> AsyncIterator[AsyncSession]:
    """``get_session`` on the ``/internal`` pool, once one of the process's ``InternalSlots`` is free."""
    slots: InternalSlots = request.app.state.internal_slots
    await slots.acquire()
    try:
        async with _request_session(request, request.app.state.internal_sessionmaker) as session:
            yield session
    finally:
        slots.release()


@asynccontextmanager
async def _request_session(
    request: Request, maker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncSession]:
    async with maker() as session:
        # Lets code deep in a request (e.g. the event outbox) reach app-wide resources from after_commit.
        session.info["app"] = request.app
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        await run_after_commit(session)


# scope="function": the transaction commits before the response is sent, so a failed commit is an
# error response and never a 2xx for data that was not stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
InternalSessionDep = Annotated[AsyncSession, Depends(get_internal_session, scope="function")]
