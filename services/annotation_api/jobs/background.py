"""The API's background loops: the chunk sweeper, the periodic ML backend check and event delivery,
and the re-checks of backends that just received events.

Both run in every API replica; their SQL takes rows with ``SKIP LOCKED``, so replicas share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.annotation_api.db import run_after_commit
from services.annotation_api.events.background import delivery_loop
from services.annotation_api.jobs.queue import REDIS_DOWN, ChunkQueue
from services.annotation_api.jobs.service import sweep
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
    if to_enqueue:
        log.info("sweeper re-queued %d chunks", len(to_enqueue))
        await queue.enqueue(to_enqueue)
    return len(to_enqueue)


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


@contextlib.asynccontextmanager
async def background(app: FastAPI, settings: ApiSettings) -> AsyncIterator[None]:
    """Start the chunk queue and the loops for the app's lifetime; stop and close them after."""
    queue = ChunkQueue(settings.redis_url)
    app.state.chunk_queue = queue
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    rechecks = Rechecks(maker, gateway_client(app), queue, settings)
    app.state.rechecks = rechecks
    tasks = [
        asyncio.create_task(sweeper_loop(maker, queue, settings), name="chunk-sweeper"),
        asyncio.create_task(
            monitor_loop(maker, gateway_client(app), queue, settings), name="backend-monitor"
        ),
        asyncio.create_task(delivery_loop(maker, queue, settings), name="event-delivery"),
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
