"""One Redis database per deployment: each API process claims its Redis database for its own deployment.

Workers take every job queued in their Redis database. Two deployments given the same one (a staging and a
production stack both on ``redis://…/0``) take each other's chunks and ask the wrong API for them, silently:
nothing is lost, but jobs crawl through re-queues. So every API process keeps a key in its Redis database
naming its deployment (the id in its database's ``deployment`` table, the same for every process of a
deployment) and renews it while it runs. A process that finds the key held by another deployment reports it:
``/ready`` answers 503 with the reason, so that deployment's API is not routed to and its workers (which wait
for a ready API) take no jobs, and an error is logged. The claim lapses ``redis_claim_ttl_s`` after the
holder's last API process stopped, so re-pointing a Redis database at a new deployment waits at most that.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.annotation_api.db import LoopFailures
from services.annotation_api.jobs.queue import REDIS_DOWN, ChunkQueue
from services.annotation_api.models import Deployment

log = logging.getLogger(__name__)
CLAIM_KEY = "labelloop:deployment"


class RedisClaim:
    """This process's view of who holds its Redis database: ``conflict`` is None while it is ours."""

    def __init__(self, redis_url: str, ttl_s: float) -> None:
        self.redis_url = redis_url
        self.ttl_s = ttl_s
        self.conflict: str | None = None

    async def keep(self, maker: async_sessionmaker[AsyncSession], queue: ChunkQueue) -> None:
        """Claim, and renew every third of the TTL; while Redis or Postgres is down, keep the last view."""
        failures = LoopFailures("redis claim")
        deployment: uuid.UUID | None = None
        while True:
            try:
                if deployment is None:
                    async with maker() as session:
                        deployment = (await session.execute(select(Deployment.id))).scalar_one()
                await self._renew(queue, str(deployment))
                failures.succeeded()
            except REDIS_DOWN:
                pass  # the queue's users report Redis; a claim that lapses meanwhile is taken again
            except Exception as exc:
                failures.failed(exc)
            await asyncio.sleep(self.ttl_s / 3)

    async def _renew(self, queue: ChunkQueue, deployment: str) -> None:
        pool = await queue.pool()
        ttl_ms = max(1, int(self.ttl_s * 1000))
        if await pool.set(CLAIM_KEY, deployment, nx=True, px=ttl_ms):
            self._ours()
            return
        holder = await pool.get(CLAIM_KEY)
        if holder is None:
            return  # lapsed between the two calls: taken next round
        holder_id = holder.decode()  # arq's client answers bytes
        if holder_id == deployment:
            await pool.pexpire(CLAIM_KEY, ttl_ms)
            self._ours()
            return
        conflict = (
            f"the Redis database {redis_url_without_password(self.redis_url)} is in use by another labelloop "
            f"deployment (database id {holder_id}; this one's is {deployment}): workers take every job of "
            "their Redis database, so give each deployment its own (REDIS_URL …/1, …/2, or another server)"
        )
        if self.conflict != conflict:
            log.error("%s", conflict)
        self.conflict = conflict

    def _ours(self) -> None:
        if self.conflict is not None:
            log.warning("the Redis database is this deployment's again")
        self.conflict = None


def redis_url_without_password(url: str) -> str:
    """``redis://:secret@host:6379/0`` as ``redis://host:6379/0``: safe to log and show in ``/ready``."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
