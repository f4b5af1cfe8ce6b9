"""Concurrent bulk jobs of one backend and version never send the same task to it twice.

Twenty users pressing "retrieve predictions" together used to start twenty jobs over the same tasks,
each sending them all to the backend. Two rules now:

- An identical request joins the running job (``running_twin``): job creation for a backend is
  serialized by a transaction-scoped advisory lock, so a request sees the job an earlier one committed.
- Jobs over overlapping selections are different jobs, so their chunks claim tasks (``unclaimed``): a
  lease leaves out the tasks in another job's live lease of the same backend and version; its report
  then counts them as skipped. While a backend has one active job, a lease only takes that lock shared
  (leases never wait for each other) and checks that no other job exists; creating a job takes it
  exclusively, so it waits for those leases to commit and every later lease sees the new job. Leases of
  a backend with several active jobs are serialized by a second lock, so each sees the others' claims.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.db import driver_connection
from services.annotation_api.models import Job, JobStatus, MlBackend, Task

_JOBS_SPACE = 0x6A6F62
"""First key of the advisory lock on a backend's set of jobs (``'job'``): the second is the backend id."""
_CLAIMS_SPACE = 0x636C6D
"""First key of the advisory lock serializing leases while a backend has several jobs (``'clm'``)."""

_LOCK = "SELECT pg_advisory_xact_lock($1, $2)"
_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared($1, $2)"


async def lock_job_creation(session: AsyncSession, backend_id: int) -> None:
    """Until this transaction ends, no other request starts a job for this backend."""
    await (await driver_connection(session)).execute(_LOCK, _JOBS_SPACE, backend_id)


def _same_request(job: Job, kind: str, params: dict[str, Any], summary: dict[str, Any]) -> bool:
    keys = ("selection", "unlabeled", "chunk_size")
    return (
        job.kind == kind
        and all(job.params.get(key) == params.get(key) for key in keys)
        and job.selection.get("batch_size") == summary.get("batch_size")
    )


async def running_twin(
    session: AsyncSession,
    backend: MlBackend,
    project_id: int,
    kind: str,
    params: dict[str, Any],
    summary: dict[str, Any],
) -> Job | None:
    """An active job of this backend and version over the same selection that covers every task the
    new one would: one still planning (it reaches tasks added meanwhile), or one whose planning ended
    at or past the project's newest task. Call with ``lock_job_creation`` held."""
    candidates = (
        await session.scalars(
            select(Job)
            .where(
                Job.ml_backend_id == backend.id,
                Job.project_id == project_id,
                Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                Job.model_version.is_not_distinct_from(backend.model_version),
            )
            .order_by(Job.id)
        )
    ).all()
    twins = [job for job in candidates if _same_request(job, kind, params, summary)]
    if not twins:
        return None
    newest = await session.scalar(select(func.max(Task.id)).where(Task.project_id == project_id)) or 0
    for job in twins:
        if job.step is not None or int(job.params.get("cursor", 0)) >= newest:
            return job
    return None


_OTHER_ACTIVE_JOB = """
    SELECT EXISTS (
        SELECT 1 FROM job
        WHERE ml_backend_id = $1 AND id <> $2 AND kind = $3
          AND status IN ('queued', 'running') AND model_version IS NOT DISTINCT FROM $4
    )
"""

# Tasks of this chunk that a live lease of another active job of the same backend and version holds.
_CLAIMED = """
    SELECT DISTINCT u.id
    FROM job_chunk c
    JOIN job j ON j.id = c.job_id
    CROSS JOIN LATERAL unnest(c.task_ids) AS u(id)
    WHERE c.status = 'leased' AND c.lease_expires_at > now() AND c.job_id <> $2
      AND j.ml_backend_id = $1 AND j.kind = $3 AND j.status IN ('queued', 'running')
      AND j.model_version IS NOT DISTINCT FROM $4
      AND u.id = ANY($5::bigint[])
"""


async def unclaimed(
    conn: asyncpg.Connection,
    job_id: int,
    backend_id: int,
    version: str | None,
    kind: str,
    task_ids: list[int],
) -> list[int]:
    """The chunk's tasks no other job of this backend and version is predicting right now (on the lease
    transaction's connection, ``repository.begin_chunk_transaction``)."""
    await conn.execute(_LOCK_SHARED, _JOBS_SPACE, backend_id)
    if not await conn.fetchval(_OTHER_ACTIVE_JOB, backend_id, job_id, kind, version):
        return task_ids
    await conn.execute(_LOCK, _CLAIMS_SPACE, backend_id)
    claimed = {row[0] for row in await conn.fetch(_CLAIMED, backend_id, job_id, kind, version, task_ids)}
    return [task_id for task_id in task_ids if task_id not in claimed]
