"""The API's background loops: the chunk sweeper, the job runner, the periodic ML backend check,
event delivery and the stuck-job watchdog.

They run in every API process whose ``background_loops`` setting is on; their SQL takes rows with
``SKIP LOCKED``, so such replicas share the work. A process with it off only serves requests, so users'
requests never share an event loop or a database pool with bulk jobs (``make run`` and ``deploy/`` run
the users' API that way and a second API, the one gateway workers call, with the loops). A job such a
process records wakes the runners elsewhere through Postgres ``NOTIFY`` (``JobDoorbell``); the runners'
poll (``job_poll_interval_s``) covers a lost notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.annotation_api.db import LoopFailures, after_commit, run_after_commit
from services.annotation_api.events.background import delivery_loop
from services.annotation_api.jobs.queue import REDIS_DOWN, ChunkQueue
from services.annotation_api.jobs.repository import fold_chunks
from services.annotation_api.jobs.runner import run_once
from services.annotation_api.jobs.service import sweep
from services.annotation_api.jobs.watchdog import fail_stalled
from services.annotation_api.ml_backends.gateway_client import close_gateway_client, gateway_client
from services.annotation_api.ml_backends.monitor import Rechecks, monitor_loop
from services.annotation_api.redis_claim import RedisClaim
from services.annotation_api.settings import ApiSettings
from shared.metrics import JOB_RUNNER_BATCHES
from shared.settings import plain_postgres_url

log = logging.getLogger(__name__)
_SWEEP_BATCH = 500
JOB_CHANNEL = "labelloop_job_runner"
"""The Postgres notification channel a process that recorded a job rings for the job runners."""
_NOTIFY = text(f"NOTIFY {JOB_CHANNEL}")
_LISTEN_CHECK_S = 30.0
_RELISTEN_S = 2.0


def chunk_queue(app: FastAPI) -> ChunkQueue:
    queue: ChunkQueue = app.state.chunk_queue
    return queue


async def sweep_once(maker: async_sessionmaker[AsyncSession], queue: ChunkQueue, lease_s: float) -> int:
    """One sweep; returns how many chunks were re-queued (a full batch means "go again")."""
    async with maker.begin() as session:
        to_enqueue = await sweep(session, lease_s, _SWEEP_BATCH)
    await run_after_commit(session)
    count = sum(len(group.chunks) for group in to_enqueue)
    if count:
        log.info("sweeper re-queued %d chunks", count)
    for group in to_enqueue:
        await queue.enqueue(group.chunks, group.carried)
    return count


async def sweeper_loop(
    maker: async_sessionmaker[AsyncSession], queue: ChunkQueue, settings: ApiSettings
) -> None:
    failures = LoopFailures("chunk sweep")
    while True:
        try:
            while await sweep_once(maker, queue, settings.chunk_lease_s) >= _SWEEP_BATCH:
                pass
            failures.succeeded()
        except REDIS_DOWN as exc:
            # The chunks stay pending in Postgres; the round after Redis is back enqueues them.
            log.warning("chunk sweep could not reach Redis: %s", exc)
        except Exception as exc:
            failures.failed(exc)
        await asyncio.sleep(settings.sweep_interval_s)


# Chunk rows only matter while their job runs; a finished job keeps its summary on the job row.
_PURGE_CHUNKS = text(
    """
    DELETE FROM job_chunk WHERE id IN (
        SELECT c.id FROM job_chunk c JOIN job j ON j.id = c.job_id
        WHERE j.status NOT IN ('queued', 'running') AND c.folded
          AND j.finished_at < now() - make_interval(secs => :retention)
        LIMIT :n
    )
    """
)


async def purge_finished_chunks(
    maker: async_sessionmaker[AsyncSession], retention_s: float, batch: int
) -> int:
    """Delete one batch of chunk rows of jobs finished longer ago than the retention; how many."""
    async with maker.begin() as session:
        result = await session.execute(_PURGE_CHUNKS, {"retention": retention_s, "n": batch})
    return int(result.rowcount)  # type: ignore[attr-defined]


async def fold_once(maker: async_sessionmaker[AsyncSession], batch: int) -> int:
    """Add one batch of reported chunks' counts to their jobs and projects; how many chunks."""
    async with maker.begin() as session:
        return await fold_chunks(session, batch)


async def runner_loop(
    app: FastAPI,
    maker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    queue: ChunkQueue,
    settings: ApiSettings,
) -> None:
    """Advance the runner's jobs batch by batch, fold chunk counts, purge old chunk rows; then sleep until
    woken or polled."""
    wake: asyncio.Event = app.state.job_doorbell.local
    failures = LoopFailures("job runner")
    while True:
        try:
            while await run_once(maker, engine, queue, settings, app):
                JOB_RUNNER_BATCHES.inc()
            while await fold_once(maker, settings.job_batch_size) >= settings.job_batch_size:
                pass
            while await purge_finished_chunks(maker, settings.chunk_retention_s, settings.job_batch_size):
                pass
            failures.succeeded()
        except Exception as exc:
            failures.failed(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), settings.job_poll_interval_s)
        wake.clear()


async def watchdog_once(maker: async_sessionmaker[AsyncSession], settings: ApiSettings) -> int:
    """Fail one batch of jobs without progress for ``job_stall_timeout_s``; how many."""
    async with maker.begin() as session:
        failed = await fail_stalled(session, settings.job_stall_timeout_s, settings.chunk_lease_s)
    await run_after_commit(session)
    return len(failed)


async def watchdog_loop(maker: async_sessionmaker[AsyncSession], settings: ApiSettings) -> None:
    # A tenth of the stall timeout between rounds (at most a minute): a stuck job is failed soon after
    # its time is up, and an idle system reads one index a minute.
    interval = min(60.0, max(settings.sweep_interval_s, settings.job_stall_timeout_s / 10))
    failures = LoopFailures("job watchdog")
    while True:
        try:
            while await watchdog_once(maker, settings):
                pass
            failures.succeeded()
        except Exception as exc:
            failures.failed(exc)
        await asyncio.sleep(interval)


class JobDoorbell:
    """Rung when a job is recorded (``runner.wake``), so the job starts at once rather than at the next
    poll: this process's runner when its loops run here, else the runners of the processes that run them
    (``NOTIFY``, delivered when they ``LISTEN``, see ``listen_loop``)."""

    def __init__(self, loops_here: bool) -> None:
        self._loops_here = loops_here
        self.local = asyncio.Event()

    async def ring(self, session: AsyncSession) -> None:
        """Ring as the session's transaction commits: ``NOTIFY`` within it (Postgres delivers it at
        commit, never on rollback), or this process's runner after it."""
        if self._loops_here:
            after_commit(session, self._ring_here)
        else:
            await session.execute(_NOTIFY)

    async def _ring_here(self) -> None:
        self.local.set()


async def listen_loop(database_url: str, wake: asyncio.Event) -> None:
    """Wake this process's runner whenever another process records a job (``JobDoorbell``).

    A connection of its own, outside the pools, opened again every ``_RELISTEN_S`` once lost. While it is
    down the runner still polls: a job starts at most ``job_poll_interval_s`` late. The loss is logged
    once, and the return once.
    """
    dsn = plain_postgres_url(database_url)
    lost_since: float | None = None

    def listening() -> None:
        nonlocal lost_since
        if lost_since is not None:
            log.warning("job notifications received again after %.1f s", time.monotonic() - lost_since)
            lost_since = None

    while True:
        try:
            await _listen_until_lost(dsn, wake, listening)
            reason = "the connection closed"
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
        if lost_since is None:
            lost_since = time.monotonic()
            log.warning("job notifications not received (%s); the runner polls meanwhile", reason)
        await asyncio.sleep(_RELISTEN_S)


async def _listen_until_lost(dsn: str, wake: asyncio.Event, listening: Callable[[], None]) -> None:
    """LISTEN on one connection until it is lost: asyncpg says at once when Postgres closes it, and a
    ``SELECT 1`` every ``_LISTEN_CHECK_S`` finds one a network dropped silently."""
    conn = await asyncpg.connect(dsn)
    try:
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _: closed.set())
        await conn.add_listener(JOB_CHANNEL, lambda *_: wake.set())
        wake.set()  # a job recorded while nobody listened
        listening()
        while not closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), _LISTEN_CHECK_S)
            if not closed.is_set():
                await conn.execute("SELECT 1", timeout=_LISTEN_CHECK_S)
    finally:
        conn.terminate()


@contextlib.asynccontextmanager
async def background(app: FastAPI, settings: ApiSettings) -> AsyncIterator[None]:
    """Start the chunk queue, the Redis claim, and the loops when ``settings.background_loops``, for the
    app's lifetime; stop and close them after. Without the loops, what requests need stays: the chunk
    queue (they enqueue after commit), the doorbell, backend re-checks (asked for by ``/internal`` calls)
    and the claim (``/ready`` reads it)."""
    queue = ChunkQueue(settings.redis_url)
    app.state.chunk_queue = queue
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    rechecks = Rechecks(maker, gateway_client(app), settings)
    app.state.rechecks = rechecks
    doorbell = JobDoorbell(settings.background_loops)
    app.state.job_doorbell = doorbell
    claim = RedisClaim(settings.redis_url, settings.redis_claim_ttl_s)
    app.state.redis_claim = claim
    tasks = [asyncio.create_task(claim.keep(maker, queue), name="redis-claim")]
    if settings.background_loops:
        loops = {
            "job-runner": runner_loop(app, maker, app.state.engine, queue, settings),
            "job-notifications": listen_loop(settings.database_url, doorbell.local),
            "chunk-sweeper": sweeper_loop(maker, queue, settings),
            "backend-monitor": monitor_loop(maker, gateway_client(app), settings),
            "event-delivery": delivery_loop(maker, queue, settings),
            "job-watchdog": watchdog_loop(maker, settings),
        }
        tasks += [asyncio.create_task(loop, name=name) for name, loop in loops.items()]
    else:
        log.info("background loops off: jobs recorded here are run by the API processes that have them on")
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await rechecks.aclose()
        await queue.aclose()
        await close_gateway_client(app)
