"""The delivery loop: rings the doorbell for every backend still behind, re-queues training jobs Redis
lost, and trims outbox rows every backend has received.

It runs in each API replica next to the chunk sweeper; duplicate rings are absorbed by the arq job id
(one waiting "sweep" delivery per backend) and by the worker's per-backend lock.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.annotation_api.db import LoopFailures
from services.annotation_api.events import repository
from services.annotation_api.events.service import enqueue_deliveries
from services.annotation_api.jobs.queue import REDIS_DOWN, ChunkQueue
from services.annotation_api.settings import ApiSettings
from services.annotation_api.training.service import enqueue_training, lost_training_jobs

log = logging.getLogger(__name__)

_BACKLOG_BATCH = 1000
_PRUNE_EVERY_ROUNDS = 720
OUTBOX_RETENTION_S = 24 * 3600.0
"""Delivered events are kept this long (for inspection) before they are trimmed."""


async def ring_once(
    maker: async_sessionmaker[AsyncSession], queue: ChunkQueue, *, prune: bool = False
) -> int:
    """One round; returns how many backends were behind."""
    async with maker.begin() as session:
        behind = await repository.backlog(session, _BACKLOG_BATCH)
        lost = await lost_training_jobs(session)
        if prune:
            pruned = await repository.prune(session, OUTBOX_RETENTION_S)
            if pruned:
                log.info("trimmed %d delivered outbox events", pruned)
    if behind or lost:
        pool = await queue.pool()
        await enqueue_deliveries(pool, behind, "sweep")
        for job_id in lost:
            await enqueue_training(pool, job_id)
    return len(behind)


async def delivery_loop(
    maker: async_sessionmaker[AsyncSession], queue: ChunkQueue, settings: ApiSettings
) -> None:
    rounds = 0
    failures = LoopFailures("event delivery round")
    while True:
        try:
            await ring_once(maker, queue, prune=rounds % _PRUNE_EVERY_ROUNDS == _PRUNE_EVERY_ROUNDS - 1)
            failures.succeeded()
        except REDIS_DOWN as exc:
            log.warning("event delivery round could not reach Redis: %s", exc)
        except Exception as exc:
            failures.failed(exc)
        rounds += 1
        await asyncio.sleep(settings.sweep_interval_s)
