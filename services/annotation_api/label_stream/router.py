"""``GET /api/projects/{id}/next``: the next task to label (Label Studio path)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.label_stream import service
from services.annotation_api.ml_backends.gateway_client import gateway_client
from services.annotation_api.projects.schemas import ProjectId
from services.annotation_api.routing import PrefixRouter
from services.annotation_api.tasks.schemas import TaskOut
from shared.http import JsonResponse

router = PrefixRouter(prefix="/api/projects", tags=["label stream"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": '`{"detail": "No more tasks"}` when every task is labeled or reserved.'},
}


@router.get("/{project_id}/next", response_model=TaskOut, responses=_RESPONSES)
@router.get("/{project_id}/next/", response_model=TaskOut, include_in_schema=False)
async def next_task(
    project_id: ProjectId, request: Request, session: SessionDep, user: CurrentUser
) -> JsonResponse:
    """The next unlabeled task by the project's ``sampling``, reserved for the caller for a while."""
    task = await service.next_task(
        session,
        gateway_client(request.app),
        project_id,
        user.id,
        request.app.state.settings.task_lock_ttl_s,
    )
    return JsonResponse(task)
