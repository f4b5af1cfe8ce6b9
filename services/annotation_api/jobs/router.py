"""``/api/jobs``: follow and cancel background jobs (ours; Label Studio has no equivalent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import PathId, SerialQueryId
from services.annotation_api.jobs import actions as _actions  # noqa: F401 (registers the DM action)
from services.annotation_api.jobs import service
from services.annotation_api.jobs.schemas import JobOut

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("", response_model=list[JobOut])
@router.get("/", response_model=list[JobOut], include_in_schema=False)
async def list_jobs(
    session: SessionDep,
    _: CurrentUser,
    project: SerialQueryId | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """Newest first."""
    return await service.list_jobs(session, project, limit)


@router.get("/{job_id}", response_model=JobOut)
@router.get("/{job_id}/", response_model=JobOut, include_in_schema=False)
async def get_job(job_id: PathId, session: SessionDep, _: CurrentUser) -> JobOut:
    """Status, counters (total / done / skipped / failed), rate, ETA and a sample of per-task errors."""
    return await service.get_job_view(session, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
@router.post("/{job_id}/cancel/", response_model=JobOut, include_in_schema=False)
async def cancel_job(job_id: PathId, session: SessionDep, _: CurrentUser) -> JobOut:
    """Stop a queued or running job; results a worker reports afterwards are dropped."""
    return await service.cancel_job(session, job_id)
