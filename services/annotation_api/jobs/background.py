"""The API's background loops: the chunk sweeper, the job runner, the periodic ML backend check,
event delivery, the re-checks of backends that just received events, and the stuck-job watchdog.

They run in every API replica; their SQL takes rows with ``SKIP LOCKED``, so replicas share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.annotation_api.db import run_after_commit
from services.annotation_api.events.background import delivery_loop
from services.annotation_api.jobs.queue import REDIS_DOWN, ChunkQueue
from services.annotation_api.jobs.repository import fold_chunks
from services.annotation_api.jobs.runner import run_once
from services.annotation_api.jobs.service import sweep
from services.annotation_api.jobs.watchdog import fail_stalled
from services.annotation_api.ml_backends.gateway_client import close_gateway_client, gateway_client
from services.annotation_api.ml_backends.monitor import Rechecks, monitor_loop
from services.annotation_api.settings import ApiSettings

log = logging.getLogger(__name__)
_SWEEP_BATCH = 500


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
    while True:
        try:
            while await sweep_once(maker, queue, settings.chunk_lease_s) >= _SWEEP_BATCH:
                pass
        except REDIS_DOWN as exc:
            # The chunks stay pending in Postgres; the round after Redis is back enqueues them.
            log.warning("chunk sweep could not reach Redis: %s", exc)
        except Exception:
            log.exception("chunk sweep failed")
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
    wake: asyncio.Event = app.state.job_runner_wake
    while True:
        try:
            while await run_once(maker, engine, queue, settings, app):
                pass
            while await fold_once(maker, settings.job_batch_size) >= settings.job_batch_size:
                pass
            while await purge_finished_chunks(maker, settings.chunk_retention_s, settings.job_batch_size):
                pass
        except Exception:
            log.exception("job runner failed")
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
    while True:
        try:
            while await watchdog_once(maker, settings):
                pass
        except Exception:
            log.exception("job watchdog failed")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def background(app: FastAPI, settings: ApiSettings) -> AsyncIterator[None]:
    """Start the chunk queue and the loops for the app's lifetime; stop and close them after."""
    queue = ChunkQueue(settings.redis_url)
    app.state.chunk_queue = queue
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    rechecks = Rechecks(maker, gateway_client(app), settings)
    app.state.rechecks = rechecks
    app.state.job_runner_wake = asyncio.Event()
    tasks = [
        asyncio.create_task(runner_loop(app, maker, app.state.engine, queue, settings), name="job-runner"),
        asyncio.create_task(sweeper_loop(maker, queue, settings), name="chunk-sweeper"),
        asyncio.create_task(monitor_loop(maker, gateway_client(app), settings), name="backend-monitor"),
        asyncio.create_task(delivery_loop(maker, queue, settings), name="event-delivery"),
        asyncio.create_task(watchdog_loop(maker, settings), name="job-watchdog"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await rechecks.aclose()
        await queue.aclose()
        await close_gateway_client(app)
