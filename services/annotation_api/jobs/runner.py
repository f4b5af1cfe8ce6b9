"""Jobs the API runs itself, one bounded batch at a time: deletes, auto-labeling, chunk planning.

A request that would otherwise do work proportional to its selection records a job (``step`` set, its
input and cursor in ``params``), commits and answers. A selection of at most ``job_inline_tasks``
tasks is done within the request instead (a bounded amount of work), so Label Studio clients that act
on a few tasks and read back at once see the result, as they would from Label Studio. Every API replica runs ``run_once`` in its
background loop: it takes the least recently advanced job with ``FOR UPDATE SKIP LOCKED`` (replicas
never run the same batch) and advances it by one batch in one transaction together with the job's
cursor and counters. A crash rolls back one batch whole; whichever replica comes next resumes from
the cursor, so the outcome is exact however often the API dies. Jobs that delete end with a VACUUM
of the tables they touched (step ``vacuum``), so the dead rows they left cost later work nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.annotation_api.db import run_after_commit
from services.annotation_api.jobs.queue import ChunkQueue
from services.annotation_api.models import Job, JobStatus
from services.annotation_api.settings import ApiSettings

log = logging.getLogger(__name__)

WORK = "work"
PLAN = "plan"
VACUUM = "vacuum"
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass
class StepContext:
    """One batch of one job: the job row is locked for the transaction."""

    session: AsyncSession
    job: Job
    settings: ApiSettings
    queue: ChunkQueue

    @property
    def batch_size(self) -> int:
        return self.settings.job_batch_size

    @property
    def cursor(self) -> int:
        """The highest task id handled so far (0 before the first batch)."""
        return int(self.job.params.get("cursor", 0))

    def advance(self, cursor: int, done: int, **result: int) -> None:
        """Move the cursor past a batch and add its counts to the job (``result`` values are summed)."""
        self.job.params = {**self.job.params, "cursor": cursor}
        self.job.done += done
        merged: dict[str, Any] = dict(self.job.result or {})
        for key, value in result.items():
            merged[key] = int(merged.get(key, 0)) + value
        self.job.result = merged


Step = Callable[[StepContext], Awaitable[bool]]
"""Run one batch; True when nothing is left to do."""
Finish = Callable[[StepContext], Awaitable[None]]
Cancel = Callable[[AsyncSession, Job], Awaitable[None]]


@dataclass(frozen=True)
class Runnable:
    step: Step
    finish: Finish | None = None
    """Called in the last batch's transaction: fills the Label Studio-shaped summary in ``result``."""
    vacuum: tuple[str, ...] = ()
    """Tables to VACUUM once the work is done (those the job deleted from)."""
    on_cancel: Cancel | None = None
    """Undo what must not outlive a cancelled job (e.g. a project's ``deleting`` marker)."""


_RUNNABLE: dict[str, Runnable] = {}


def register(kind: str, runnable: Runnable) -> None:
    if kind in _RUNNABLE:
        raise ValueError(f"job kind {kind!r} is already registered")
    _RUNNABLE[kind] = runnable


def runnable_of(kind: str) -> Runnable | None:
    return _RUNNABLE.get(kind)


async def wake(session: AsyncSession) -> None:
    """Ring the job doorbell (``jobs.background.JobDoorbell``) as the session commits, so a new job starts
    at once: this process's runner, or the runners of the API processes that run the background loops."""
    app = session.info.get("app")
    doorbell = getattr(getattr(app, "state", None), "job_doorbell", None)
    if doorbell is not None:
        await doorbell.ring(session)


_INLINE_STEPS = 8
"""A small job done in the request still takes a few steps (e.g. a project delete's phases)."""


async def start_job(
    session: AsyncSession,
    *,
    kind: str,
    project_id: int,
    params: dict[str, Any],
    total: int,
    selection: dict[str, Any],
    model_version: str | None = None,
    inline: bool = True,
) -> Job:
    """Record a job; done here when small and ``inline`` (status ``completed``), else by the runner
    after commit."""
    job = Job(
        kind=kind,
        project_id=project_id,
        model_version=model_version,
        selection=selection,
        status=JobStatus.QUEUED,
        total=total,
        step=WORK,
        params=params,
        result={},
    )
    session.add(job)
    await session.flush()
    await session.refresh(job)
    app = session.info.get("app")
    spec = runnable_of(kind)
    if inline and app is not None and spec is not None and total <= app.state.settings.job_inline_tasks:
        ctx = StepContext(session, job, app.state.settings, app.state.chunk_queue)
        job.status, job.started_at = JobStatus.RUNNING, func.now()
        for _ in range(_INLINE_STEPS):
            if await _advance(ctx, spec, vacuum=False):
                await session.flush()
                await session.refresh(job)
                return job
    await wake(session)
    return job


async def _advance(ctx: StepContext, spec: Runnable, *, vacuum: bool = True) -> bool:
    """One step of the job; True when its work is done (then it is completed, or due for VACUUM)."""
    job = ctx.job
    if not await spec.step(ctx):
        return False
    if job.step is not None:  # a planner that ended its own step leaves the job to its chunks
        if spec.finish is not None:
            await spec.finish(ctx)
        if vacuum and spec.vacuum:
            job.step = VACUUM
        else:
            _complete(job)
    return True


async def cancel(session: AsyncSession, job: Job) -> None:
    """Stop a runner job: the batch running now finishes (it holds the row lock); none follows."""
    spec = runnable_of(job.kind)
    await session.execute(update(Job).where(Job.id == job.id).values(step=None))
    if spec is not None and spec.on_cancel is not None:
        await spec.on_cancel(session, job)


_PICK = (
    select(Job)
    .where(Job.step.is_not(None), Job.status.in_(_ACTIVE))
    .order_by(Job.updated_at, Job.id)
    .limit(1)
    # NO KEY UPDATE: the chunk and prediction rows written meanwhile reference this job, and their
    # foreign-key checks (KEY SHARE) must not wait for a planning step to commit.
    .with_for_update(skip_locked=True, key_share=True)
)


async def _pick(session: AsyncSession) -> Job | None:
    return (await session.execute(_PICK)).scalar_one_or_none()


def _complete(job: Job) -> None:
    job.step = None
    job.status = JobStatus.COMPLETED
    job.finished_at = func.now()


async def run_once(
    maker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    queue: ChunkQueue,
    settings: ApiSettings,
    app: Any = None,
) -> bool:
    """Advance one job by one batch (or run its VACUUM); False when no job has work left."""
    vacuum: tuple[str, ...] = ()
    async with maker.begin() as session:
        session.info["app"] = app
        job = await _pick(session)
        if job is None:
            return False
        spec = runnable_of(job.kind)
        if spec is None:
            log.warning("job %s of kind %r has a step but no runner here; skipped", job.id, job.kind)
            job.updated_at = func.now()
            return True
        job.updated_at = func.now()
        if job.status == JobStatus.QUEUED:
            job.status = JobStatus.RUNNING
            job.started_at = func.now()
        if job.step == VACUUM:
            vacuum, job_id = spec.vacuum, job.id
        else:
            await _advance(StepContext(session, job, settings, queue), spec)
    await run_after_commit(session)
    if vacuum:
        await vacuum_tables(engine, vacuum)
        async with maker.begin() as session:
            done = await session.get(Job, job_id, with_for_update=True)
            if done is not None and done.step == VACUUM:
                _complete(done)
    return True


async def vacuum_tables(engine: AsyncEngine, tables: tuple[str, ...]) -> None:
    """VACUUM (ANALYZE) the tables: the dead rows a delete left become free space at once.

    VACUUM cannot run in a transaction, hence a connection of its own in autocommit mode. It skips the
    pages that hold no dead rows (visibility map) but scans each index once.
    """
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text(f"VACUUM (ANALYZE) {', '.join(tables)}"))


async def flush_stats_at_commit(session: AsyncSession) -> None:
    """Have this backend publish its statistics when the transaction ends (Postgres 15+), so the dead
    rows a batch left are counted before the job's VACUUM reports them gone, never after."""
    version = int((await session.execute(text("SHOW server_version_num"))).scalar_one())
    if version >= 150000:
        await session.execute(text("SELECT pg_stat_force_next_flush()"))
