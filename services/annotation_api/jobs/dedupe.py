"""One bulk job at a time per backend, version and selection: a second identical request joins it.

Twenty users pressing "retrieve predictions" together used to start twenty jobs over the same tasks,
each sending them all to the backend. Job creation for a backend is serialized by a transaction-scoped
advisory lock, so a request sees the job an earlier one committed, and answers with it while it runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.models import Job, JobStatus, MlBackend, Task

_LOCK_SPACE = 0x6A6F62
"""First key of the two-key advisory lock (``'job'``): the second is the backend id."""

_LOCK = text("SELECT pg_advisory_xact_lock(:space, :backend)")


async def lock_job_creation(session: AsyncSession, backend_id: int) -> None:
    """Until this transaction ends, no other request starts a job for this backend."""
    await session.execute(_LOCK, {"space": _LOCK_SPACE, "backend": backend_id})


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
