"""Live job progress as server-sent events, read from Postgres at a bounded interval.

Each read opens its own short session, so a stream (which may last as long as the job) never holds a
connection or a transaction between reads; the pool and vacuum are unaffected by open browser tabs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.annotation_api.errors import NotFound
from services.annotation_api.jobs.schemas import JobOut
from services.annotation_api.jobs.service import get_job_view
from services.annotation_api.models import JobStatus

KEEP_ALIVE = b": keep-alive\n\n"
_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})

_State = tuple[str, int, int, int, int, int, str | None, datetime]


def _state(job: JobOut) -> _State:
    """What a client sees change; rate and ETA move with the clock alone and do not count."""
    return (
        job.status,
        job.total,
        job.done,
        job.predicted,
        job.skipped,
        job.failed,
        job.error,
        job.updated_at,
    )


def _event(out: JobOut) -> bytes:
    return b"data: " + out.model_dump_json().encode() + b"\n\n"


async def _read(maker: async_sessionmaker[AsyncSession], job_id: int) -> JobOut | None:
    """The job as ``GET /api/jobs/{id}`` shows it: counters of reported chunks not folded yet included."""
    async with maker() as session:
        try:
            return await get_job_view(session, job_id)
        except NotFound:
            return None


async def job_events(
    maker: async_sessionmaker[AsyncSession],
    first: JobOut,
    poll_s: float,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    """``first`` at once, then the job whenever its state changes, until it is terminal (or deleted)."""
    job: JobOut | None = first
    last: _State | None = None
    quiet_since = time.monotonic()
    while job is not None:
        state = _state(job)
        if state != last:
            last = state
            quiet_since = time.monotonic()
            yield _event(job)
        elif time.monotonic() - quiet_since >= keepalive_s:
            quiet_since = time.monotonic()
            yield KEEP_ALIVE
        if job.status not in _ACTIVE:
            return
        await asyncio.sleep(poll_s)
        job = await _read(maker, first.id)
