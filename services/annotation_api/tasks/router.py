"""``/api/tasks``: Label Studio's task list (page or keyset cursor) and single-task CRUD."""

from __future__ import annotations

from fastapi import Query, Request, Response

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import PageNumber
from services.annotation_api.label_stream.service import predict_if_missing
from services.annotation_api.ml_backends.gateway_client import gateway_client
from services.annotation_api.routing import PrefixRouter
from services.annotation_api.tasks import service
from services.annotation_api.tasks.repository import TaskFilter
from services.annotation_api.tasks.schemas import (
    INT_MAX,
    Fields,
    Ordering,
    TaskCreate,
    TaskId,
    TaskOut,
    TaskPage,
    TaskUpdate,
)
from shared.http import JsonResponse

router = PrefixRouter(prefix="/api/tasks", tags=["tasks"])

DEFAULT_PAGE_SIZE = 100


@router.get("", response_model=TaskPage)
@router.get("/", response_model=TaskPage, include_in_schema=False)
async def list_tasks(
    request: Request,
    session: SessionDep,
    _: CurrentUser,
    project: int = Query(ge=1, le=INT_MAX, description="The project whose tasks to list (project id)."),
    page: PageNumber = 1,
    page_size: int = Query(DEFAULT_PAGE_SIZE, ge=1, description="Capped at the server's max page size."),
    after: str | None = Query(
        None,
        max_length=80,
        description="Keyset cursor (the previous page's next_after); `page` is then ignored, and a page costs "
        "the same at any depth. In id order a task id: tasks after it. In score order `SCORE,ID` (SCORE "
        "`null` for the tasks without a score, which come last): tasks after that task.",
    ),
    fields: Fields = Query("task_only", description="`all` embeds annotations and predictions."),
    ordering: Ordering = Query(
        "id",
        description="id or -id (task id, ascending or descending), prediction_score or -prediction_score "
        "(see predictions_score).",
    ),
    is_labeled: bool | None = Query(
        None, description="Only labeled tasks (true) or only unlabeled ones (false); omitted: both."
    ),
    has_predictions_of: str | None = Query(
        None, description="Only tasks with a prediction of this model version."
    ),
    only_selected_version: bool = Query(
        False, description="Embed only predictions of the project's model_version (what annotators see)."
    ),
) -> JsonResponse:
    page_request = service.PageRequest(
        page=page,
        page_size=min(page_size, request.app.state.settings.max_page_size),
        after=after,
        ordering=ordering,
        fields=fields,
        only_selected_version=only_selected_version,
    )
    task_filter = TaskFilter(project_id=project, is_labeled=is_labeled, has_predictions_of=has_predictions_of)
    return JsonResponse(await service.list_tasks(session, task_filter, page_request))


@router.post("", response_model=TaskOut, status_code=201)
@router.post("/", response_model=TaskOut, status_code=201, include_in_schema=False)
async def create_task(body: TaskCreate, session: SessionDep, _: CurrentUser) -> JsonResponse:
    return JsonResponse(await service.create_task(session, body), status_code=201)


@router.get("/{task_id}", response_model=TaskOut)
@router.get("/{task_id}/", response_model=TaskOut, include_in_schema=False)
async def get_task(task_id: TaskId, request: Request, session: SessionDep, _: CurrentUser) -> JsonResponse:
    await predict_if_missing(session, gateway_client(request.app), task_id)
    return JsonResponse(await service.get_task(session, task_id))


@router.patch("/{task_id}", response_model=TaskOut)
@router.patch("/{task_id}/", response_model=TaskOut, include_in_schema=False)
async def update_task(task_id: TaskId, body: TaskUpdate, session: SessionDep, _: CurrentUser) -> JsonResponse:
    return JsonResponse(await service.update_task(session, task_id, body))


@router.delete("/{task_id}", status_code=204)
@router.delete("/{task_id}/", status_code=204, include_in_schema=False)
async def delete_task(task_id: TaskId, session: SessionDep, _: CurrentUser) -> Response:
    await service.delete_task(session, task_id)
    return Response(status_code=204)
