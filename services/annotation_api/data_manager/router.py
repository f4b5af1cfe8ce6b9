"""``/api/dm/actions`` (Label Studio path): list actions, run one on selected tasks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Query, Request

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.data_manager import service
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import INT_MAX
from services.annotation_api.routing import PrefixRouter

router = PrefixRouter(prefix="/api/dm/actions", tags=["data manager"])

ProjectParam = Annotated[int, Query(ge=1, le=INT_MAX, description="Project id.")]


@router.get("")
@router.get("/", include_in_schema=False)
async def list_actions(project: ProjectParam, session: SessionDep, _: CurrentUser) -> list[dict[str, Any]]:
    """``[{id, title, order, permission, experimental, dialog}]``, sorted by ``order``."""
    return await service.list_actions(session, project)


@router.post("")
@router.post("/", include_in_schema=False)
async def perform_action(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    id: Annotated[str, Query(description="Action id, e.g. delete_tasks_predictions.")],
    project: ProjectParam,
    body: Annotated[
        dict[str, Any] | None,
        Body(
            description='{"selectedItems": {"all": false, "included": [ids]}} or {"all": true, '
            '"excluded": [ids]}; no body means all tasks. filters/ordering are accepted.'
        ),
    ] = None,
) -> dict[str, Any]:
    """Run action ``id`` on the selected tasks of ``project``; answers ``{"processed_items": n, …}``."""
    return await service.perform_action(request, session, user, id, project, body)
