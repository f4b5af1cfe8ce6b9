"""Putting chunks on the arq queue.

Redis is only a doorbell: Postgres holds every chunk, so a failed or lost enqueue costs latency (the
sweeper rings again), never work. The pool is created on first use so the API starts, and serves
everything but new jobs, while Redis is down; after a Redis restart redis-py reconnects on the next
command, so callers only have to survive the calls that fail meanwhile (see ``REDIS_DOWN``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from redis.exceptions import RedisError

from shared.jobs import PROCESS_CHUNK, QUEUE_NAME, chunk_job_id
from shared.logging import carried_context

log = logging.getLogger(__name__)
_ENQUEUE_CONCURRENCY = 32

REDIS_DOWN = (RedisError, OSError)
"""What a call to an unreachable or restarting Redis raises (a connection lost mid-``WATCH`` even
surfaces as a WatchError): a warning for the loops, not a crash."""


class ChunkQueue:
    def __init__(self, redis_url: str) -> None:
        self._settings = RedisSettings.from_dsn(redis_url)
        # No connect retries with sleeps: an enqueue runs before a response is sent, and a missed
        # doorbell costs nothing, so a down Redis must fail fast instead of holding the request.
        self._settings.conn_retries = 0
        self._pool: ArqRedis | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> ArqRedis:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._settings, retry=0, default_queue_name=QUEUE_NAME)
            return self._pool

    async def enqueue(
        self, chunks: Sequence[tuple[int, int]], carried: Mapping[str, str] | None = None
    ) -> None:
        """Enqueue ``(chunk_id, attempt)`` pairs; an attempt already queued is a no-op in arq.

        ``carried`` is the job's trace context and request id (saved with the job), so chunks planned or
        re-queued later join the action's trace; without it, the current context rides along.
        """
        if not chunks:
            return
        pool = await self.pool()
        carried = dict(carried) if carried else carried_context()
        semaphore = asyncio.Semaphore(_ENQUEUE_CONCURRENCY)

        async def one(chunk_id: int, attempt: int) -> None:
            async with semaphore:
                await pool.enqueue_job(
                    PROCESS_CHUNK, chunk_id, carried, _job_id=chunk_job_id(chunk_id, attempt)
                )

        await asyncio.gather(*(one(chunk_id, attempt) for chunk_id, attempt in chunks))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
