"""``/api/jobs``: follow and cancel background jobs (ours; Label Studio has no equivalent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import StreamingResponse

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import INT_MAX, JobId
from services.annotation_api.jobs import actions as _actions  # noqa: F401 (registers the DM action)
from services.annotation_api.jobs import service
from services.annotation_api.jobs.events import job_events
from services.annotation_api.jobs.schemas import JobOut
from services.annotation_api.routing import PrefixRouter

router = PrefixRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("", response_model=list[JobOut])
@router.get("/", response_model=list[JobOut], include_in_schema=False)
async def list_jobs(
    session: SessionDep,
    _: CurrentUser,
    project: Annotated[
        int | None, Query(ge=1, le=INT_MAX, description="Only this project's jobs (project id).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most jobs to list, 1 to 1000.")] = 100,
) -> list[JobOut]:
    """Newest first."""
    return await service.list_jobs(session, project, limit)


@router.get("/{job_id}", response_model=JobOut)
@router.get("/{job_id}/", response_model=JobOut, include_in_schema=False)
async def get_job(job_id: JobId, session: SessionDep, _: CurrentUser) -> JobOut:
    """Status, counters (total / done / skipped / failed), rate, ETA and a sample of per-task errors."""
    return await service.get_job_view(session, job_id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`data: <JobOut JSON>` at connect and on every change; `: keep-alive` "
            "comments while nothing changes; the stream ends once the job is terminal.",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "description": "One server-sent event.",
                        "properties": {
                            "event": {"type": "string", "description": "Always `message`."},
                            "data": {
                                "type": "string",
                                "description": "The job as `GET /api/jobs/{id}` returns it (JobOut), as JSON.",
                                "contentMediaType": "application/json",
                            },
                        },
                        "required": ["data"],
                    }
                }
            },
        }
    },
)
async def job_events_stream(
    job_id: JobId, request: Request, session: SessionDep, _: CurrentUser
) -> StreamingResponse:
    """Live progress (server-sent events) of a job: the same body as ``GET /api/jobs/{id}``.

    The job is re-read every `LABELLOOP_JOB_EVENTS_POLL_S` in a short session of its own, so an open
    stream holds no database connection between reads.
    """
    job = await service.get_job_view(session, job_id)
    settings = request.app.state.settings
    stream = job_events(
        request.app.state.sessionmaker, job, settings.job_events_poll_s, settings.job_events_keepalive_s
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.post("/{job_id}/cancel", response_model=JobOut)
@router.post("/{job_id}/cancel/", response_model=JobOut, include_in_schema=False)
async def cancel_job(job_id: JobId, session: SessionDep, _: CurrentUser) -> JobOut:
    """Stop a queued or running job; results a worker reports afterwards are dropped."""
    return await service.cancel_job(session, job_id)
