"""``POST /api/projects/{id}/import``: a JSON list of tasks, streamed raw (see imports.service for why)."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.imports import service
from services.annotation_api.imports.schemas import ImportResponse
from services.annotation_api.projects.schemas import ProjectId
from services.annotation_api.routing import PrefixRouter
from shared.http import JsonResponse

router = PrefixRouter(prefix="/api/projects", tags=["import"])

_TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'A task `{"data": {...}, "meta"?, "annotations"?: [{result, …}], "predictions"?: '
    "[{result, score?, model_version?}]}`, or a bare data object.",
    "additionalProperties": True,
}
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "array", "items": _TASK_SCHEMA}}},
    }
}


@router.post("/{project_id}/import", response_model=ImportResponse, status_code=201, openapi_extra=_BODY)
@router.post(
    "/{project_id}/import/",
    response_model=ImportResponse,
    status_code=201,
    openapi_extra=_BODY,
    include_in_schema=False,
)
async def import_tasks(
    project_id: ProjectId,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    return_task_ids: bool = Query(
        False, description="Also answer with the ids of the created tasks, in the order they were sent."
    ),
) -> JsonResponse:
    outcome = await service.import_tasks(session, project_id, request.stream(), user, return_task_ids)
    body = ImportResponse(
        task_count=outcome.task_count,
        annotation_count=outcome.annotation_count,
        prediction_count=outcome.prediction_count,
        duration=outcome.duration,
        data_columns=outcome.data_columns,
        task_ids=outcome.task_ids if return_task_ids else None,
    ).model_dump(exclude_none=True)
    return JsonResponse(body, status_code=201)
