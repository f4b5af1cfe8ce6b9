"""The stuck-job watchdog: no job stays queued or running without progress forever.

Progress is anything a job's owner records: the job row changing (a runner batch, a chunk folded, a
worker's report), a chunk leased, heartbeated or finished. A job with none of these for
``LABELLOOP_JOB_STALL_TIMEOUT_S`` is failed with a reason naming what it waited for (a running training
job is given its backend's call time on top, twice its ``timeout``). Rows are taken with ``FOR UPDATE
SKIP LOCKED``, so API replicas share the rounds and never fail a job another is finishing.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.jobs import runner
from services.annotation_api.jobs.repository import cancel_chunks
from services.annotation_api.models import Job, JobStatus, MlBackend, MlBackendState

log = logging.getLogger(__name__)

TRAIN_KIND = "train"  # training/service.py's kind; not imported, training imports jobs

_STALLED = text(
    """
    SELECT j.id, j.kind, j.status, j.step, j.ml_backend_id,
           floor(extract(epoch FROM now() - j.updated_at))::bigint
    FROM job j
    LEFT JOIN ml_backend b ON b.id = j.ml_backend_id
    WHERE j.status IN ('queued', 'running')
      AND j.updated_at < now() - make_interval(secs => :stall)
      AND NOT (j.kind = :train AND j.status = 'running'
               AND j.updated_at >= now() - make_interval(secs => :stall + 2 * COALESCE(b.timeout, 0)))
      AND NOT EXISTS (
          SELECT 1 FROM job_chunk c
          WHERE c.job_id = j.id
            AND (c.finished_at >= now() - make_interval(secs => :stall)
                 OR c.lease_expires_at >= now() - make_interval(secs => :stall) + make_interval(secs => :lease)))
    ORDER BY j.id
    LIMIT :limit
    FOR UPDATE OF j SKIP LOCKED
    """
)


def _reason(kind: str, status: str, step: str | None, idle_s: int) -> str:
    quiet = f"no progress for {idle_s} s (LABELLOOP_JOB_STALL_TIMEOUT_S)"
    if kind == TRAIN_KIND:
        if status == JobStatus.QUEUED:
            return f"Training never started: {quiet}; no worker took the job."
        return (
            f"Training failed: {quiet}; the worker running it stopped reporting, or its call to the "
            "backend can never complete."
        )
    if step is not None:
        return f"Job failed: {quiet} in its step {step!r}; each attempt at the next batch failed."
    return (
        f"Job failed: {quiet}; none of its chunks was leased, heartbeated or finished (no worker "
        "running, or its chunks cannot be served)."
    )


async def fail_stalled(session: AsyncSession, stall_s: float, lease_s: float, limit: int = 100) -> list[int]:
    """Fail one batch of stalled jobs; their ids."""
    params = {"stall": stall_s, "lease": lease_s, "train": TRAIN_KIND, "limit": limit}
    rows = (await session.execute(_STALLED, params)).all()
    for job_id, kind, status, step, backend_id, idle_s in rows:
        reason = _reason(kind, status, step, int(idle_s))
        log.warning("job %s (%s) failed by the watchdog: %s", job_id, kind, reason)
        await fail_job(session, job_id, kind, reason, runner_step=step is not None)
        if kind == TRAIN_KIND and backend_id is not None:
            await session.execute(
                update(MlBackend)
                .where(MlBackend.id == backend_id, MlBackend.state == MlBackendState.TRAINING)
                .values(state=MlBackendState.CONNECTED)
            )
    return [row[0] for row in rows]


_BACKEND_JOBS = text(
    """
    SELECT id, kind, step FROM job
    WHERE ml_backend_id = :backend AND status IN ('queued', 'running')
    ORDER BY id FOR UPDATE
    """
)


async def fail_backend_jobs(session: AsyncSession, backend_id: int) -> None:
    """The backend is being deleted: its unfinished jobs fail now, not when a worker next looks."""
    for job_id, kind, step in (await session.execute(_BACKEND_JOBS, {"backend": backend_id})).all():
        reason = (
            "Training failed: the ML backend was deleted while it trained."
            if kind == TRAIN_KIND
            else "The job's ML backend was deleted."
        )
        await fail_job(session, job_id, kind, reason, runner_step=step is not None)


async def fail_job(session: AsyncSession, job_id: int, kind: str, reason: str, *, runner_step: bool) -> None:
    """Fail a queued or running job now: its chunks cancelled, its runner step (and hooks) stopped; a
    training job counts its one task as failed, as a failed report does."""
    job = await session.get(Job, job_id)
    if job is None:
        return
    if runner_step:
        await runner.cancel(session, job)
    await cancel_chunks(session, job_id)
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .values(
            status=JobStatus.FAILED,
            error=reason,
            step=None,
            finished_at=func.now(),
            updated_at=func.now(),
            **({"failed": 1} if kind == TRAIN_KIND else {}),
        )
    )
