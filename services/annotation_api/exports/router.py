"""``GET /api/projects/{id}/export``: Label Studio's JSON export, streamed as a download."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Query, Request
from fastapi.responses import StreamingResponse

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.exports import service
from services.annotation_api.projects.schemas import ProjectId
from services.annotation_api.projects.service import get_project
from services.annotation_api.routing import PrefixRouter

router = PrefixRouter(prefix="/api/projects", tags=["export"])

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "A JSON array of every task with its annotations and predictions.",
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
    }
}


@router.get("/{project_id}/export", response_class=StreamingResponse, responses=_RESPONSES)
@router.get(
    "/{project_id}/export/", response_class=StreamingResponse, responses=_RESPONSES, include_in_schema=False
)
async def export_project(
    project_id: ProjectId,
    request: Request,
    session: SessionDep,
    _: CurrentUser,
    export_type: str = Query(
        "JSON", alias="exportType", description="Export format; only JSON (any letter case) is supported."
    ),
    download_all_tasks: bool = Query(True, description="Accepted for compatibility; all tasks are exported."),
) -> StreamingResponse:
    service.check_export_type(export_type)
    await get_project(session, project_id)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S")
    return StreamingResponse(
        service.stream_project_json(request.app.state.engine, project_id),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="project-{project_id}-at-{stamp}.json"'},
    )
