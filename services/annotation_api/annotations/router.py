"""``/api/tasks/{id}/annotations`` and ``/api/annotations/{id}`` (Label Studio paths)."""

from __future__ import annotations

from fastapi import Response

from services.annotation_api.annotations import service
from services.annotation_api.annotations.schemas import AnnotationIn, AnnotationOut
from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import AnnotationId
from services.annotation_api.routing import PrefixRouter
from services.annotation_api.tasks.schemas import TaskId

router = PrefixRouter(prefix="/api", tags=["annotations"])


@router.post("/tasks/{task_id}/annotations", status_code=201, response_model=AnnotationOut)
@router.post(
    "/tasks/{task_id}/annotations/",
    status_code=201,
    response_model=AnnotationOut,
    include_in_schema=False,
)
async def create_annotation(
    task_id: TaskId, body: AnnotationIn, session: SessionDep, user: CurrentUser
) -> AnnotationOut:
    return await service.create_annotation(session, task_id, body, user)


@router.get("/tasks/{task_id}/annotations", response_model=list[AnnotationOut])
@router.get("/tasks/{task_id}/annotations/", response_model=list[AnnotationOut], include_in_schema=False)
async def list_annotations(task_id: TaskId, session: SessionDep, _: CurrentUser) -> list[AnnotationOut]:
    return await service.list_annotations(session, task_id)


@router.get("/annotations/{annotation_id}", response_model=AnnotationOut)
@router.get("/annotations/{annotation_id}/", response_model=AnnotationOut, include_in_schema=False)
async def get_annotation(annotation_id: AnnotationId, session: SessionDep, _: CurrentUser) -> AnnotationOut:
    return await service.get_annotation(session, annotation_id)


@router.patch("/annotations/{annotation_id}", response_model=AnnotationOut)
@router.patch("/annotations/{annotation_id}/", response_model=AnnotationOut, include_in_schema=False)
async def update_annotation(
    annotation_id: AnnotationId, body: AnnotationIn, session: SessionDep, _: CurrentUser
) -> AnnotationOut:
    return await service.update_annotation(session, annotation_id, body)


@router.delete("/annotations/{annotation_id}", status_code=204)
@router.delete("/annotations/{annotation_id}/", status_code=204, include_in_schema=False)
async def delete_annotation(annotation_id: AnnotationId, session: SessionDep, _: CurrentUser) -> Response:
    await service.delete_annotation(session, annotation_id)
    return Response(status_code=204)
