"""``/api/predictions`` and ``/api/projects/{id}/import/predictions`` (Label Studio paths)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import BIGINT_MAX, INT_MAX, PredictionId
from services.annotation_api.imports import predictions as prediction_import
from services.annotation_api.predictions import service
from services.annotation_api.predictions.schemas import (
    PredictionCreate,
    PredictionImportItem,
    PredictionOut,
    PredictionsImported,
    PredictionUpdate,
)
from services.annotation_api.projects.schemas import ProjectId
from services.annotation_api.routing import PrefixRouter
from shared.http import JsonResponse

router = PrefixRouter(prefix="/api", tags=["predictions"])


@router.post("/predictions", status_code=201, response_model=PredictionOut)
@router.post("/predictions/", status_code=201, response_model=PredictionOut, include_in_schema=False)
async def create_prediction(body: PredictionCreate, session: SessionDep, _: CurrentUser) -> JsonResponse:
    return JsonResponse(await service.create_prediction(session, body), status_code=201)


@router.get("/predictions", response_model=list[PredictionOut])
@router.get("/predictions/", response_model=list[PredictionOut], include_in_schema=False)
async def list_predictions(
    request: Request,
    session: SessionDep,
    _: CurrentUser,
    task: Annotated[
        int | None, Query(ge=1, le=BIGINT_MAX, description="Only this task's predictions (task id).")
    ] = None,
    project: Annotated[
        int | None, Query(ge=1, le=INT_MAX, description="Only this project's predictions (project id).")
    ] = None,
    task__project: Annotated[
        int | None, Query(ge=1, le=INT_MAX, description="Same as project (Label Studio's name).")
    ] = None,
    page: Annotated[
        int | None,
        Query(
            ge=1,
            le=2**31,
            description=f"1-based page; without it at most {service.UNPAGED_LIMIT} rows are listed.",
        ),
    ] = None,
    page_size: Annotated[
        int, Query(ge=1, description="Predictions per page, capped at the server's max page size.")
    ] = 100,
) -> JsonResponse:
    page_size = min(page_size, request.app.state.settings.max_page_size)
    rows = await service.list_predictions(
        session, task, project if project is not None else task__project, page, page_size
    )
    return JsonResponse(rows)


@router.get("/predictions/{prediction_id}", response_model=PredictionOut)
@router.get("/predictions/{prediction_id}/", response_model=PredictionOut, include_in_schema=False)
async def get_prediction(prediction_id: PredictionId, session: SessionDep, _: CurrentUser) -> JsonResponse:
    return JsonResponse(await service.get_prediction(session, prediction_id))


@router.patch("/predictions/{prediction_id}", response_model=PredictionOut)
@router.patch("/predictions/{prediction_id}/", response_model=PredictionOut, include_in_schema=False)
async def update_prediction(
    prediction_id: PredictionId, body: PredictionUpdate, session: SessionDep, _: CurrentUser
) -> JsonResponse:
    return JsonResponse(await service.update_prediction(session, prediction_id, body))


@router.delete("/predictions/{prediction_id}", status_code=204)
@router.delete("/predictions/{prediction_id}/", status_code=204, include_in_schema=False)
async def delete_prediction(prediction_id: PredictionId, session: SessionDep, _: CurrentUser) -> Response:
    await service.delete_prediction(session, prediction_id)
    return Response(status_code=204)


# The body is streamed and checked item by item (imports.predictions); documented here.
_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": PredictionImportItem.model_json_schema()}
            }
        },
    }
}


@router.post(
    "/projects/{project_id}/import/predictions",
    status_code=201,
    response_model=PredictionsImported,
    openapi_extra=_IMPORT_BODY,
)
@router.post(
    "/projects/{project_id}/import/predictions/",
    status_code=201,
    response_model=PredictionsImported,
    openapi_extra=_IMPORT_BODY,
    include_in_schema=False,
)
async def import_predictions(
    project_id: ProjectId, request: Request, session: SessionDep, _: CurrentUser
) -> PredictionsImported:
    """Streamed in bounded memory; all-or-nothing: one bad item (named by its index) and nothing is
    written."""
    created = await prediction_import.import_predictions(session, project_id, request.stream())
    return PredictionsImported(created=created)
