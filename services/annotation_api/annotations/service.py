"""Annotation rules: results must fit the label config; every change updates the task's counters and
writes its outbox event in the same transaction.

The task row is locked first (``FOR UPDATE``) so concurrent annotations of one task are counted
correctly: the counter refresh of the second writer sees the first writer's committed row.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api import outbox
from services.annotation_api.annotations.schemas import AnnotationIn, AnnotationOut
from services.annotation_api.counters import refresh_task_counters
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.label_stream.service import release_task_lock
from services.annotation_api.models import Annotation, Prediction, Project, Task, User
from services.annotation_api.projects.service import parse_config
from services.annotation_api.result_validation import check_result


async def locked_task(session: AsyncSession, task_id: int) -> tuple[Task, Project]:
    """The task (locked against concurrent annotation writes) and its project, or 404."""
    stmt = (
        select(Task, Project)
        .join(Project, Project.id == Task.project_id)
        .where(Task.id == task_id)
        .with_for_update(of=Task)
    )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise NotFound(f"Task {task_id} not found.")
    return row[0], row[1]


async def _check_body(session: AsyncSession, project: Project, task: Task, body: AnnotationIn) -> None:
    if body.result:
        check_result(await parse_config(project.label_config), body.result)
    if body.parent_prediction is not None:
        found = await session.scalar(
            select(Prediction.id).where(
                Prediction.id == body.parent_prediction, Prediction.task_id == task.id
            )
        )
        if found is None:
            raise BadRequest(
                f"Prediction {body.parent_prediction} is not a prediction of task {task.id}.",
                field="parent_prediction",
            )


async def _after_change(
    session: AsyncSession, project: Project, task: Task, annotation: Annotation, action: str
) -> AnnotationOut:
    await session.flush()
    await session.refresh(annotation)
    await refresh_task_counters(session, [task.id])
    await session.refresh(task)
    out = AnnotationOut.of(annotation)
    await outbox.record_annotation_event(session, project, action, out.model_dump(mode="json"), task)
    return out


async def create_annotation(
    session: AsyncSession, task_id: int, body: AnnotationIn, user: User
) -> AnnotationOut:
    task, project = await locked_task(session, task_id)
    await _check_body(session, project, task, body)
    annotation = Annotation(
        task_id=task.id,
        project_id=project.id,
        result=body.result or [],
        was_cancelled=bool(body.was_cancelled),
        ground_truth=bool(body.ground_truth),
        lead_time=body.lead_time,
        completed_by_id=user.id,
        parent_prediction_id=body.parent_prediction,
    )
    session.add(annotation)
    # The annotator is done with the task /next reserved for them: others may be served it now.
    await release_task_lock(session, task.id, user.id)
    return await _after_change(session, project, task, annotation, outbox.ANNOTATION_CREATED)


async def list_annotations(session: AsyncSession, task_id: int) -> list[AnnotationOut]:
    if await session.scalar(select(Task.id).where(Task.id == task_id)) is None:
        raise NotFound(f"Task {task_id} not found.")
    rows = await session.scalars(
        select(Annotation).where(Annotation.task_id == task_id).order_by(Annotation.id)
    )
    return [AnnotationOut.of(row) for row in rows]


async def _locked_annotation(session: AsyncSession, annotation_id: int) -> tuple[Annotation, Task, Project]:
    task_id = await session.scalar(select(Annotation.task_id).where(Annotation.id == annotation_id))
    if task_id is None:
        raise NotFound(f"Annotation {annotation_id} not found.")
    task, project = await locked_task(session, task_id)
    # Read it under the task lock: a concurrent delete may have removed it meanwhile.
    annotation = await session.scalar(
        select(Annotation).where(Annotation.id == annotation_id, Annotation.task_id == task_id)
    )
    if annotation is None:
        raise NotFound(f"Annotation {annotation_id} not found.")
    return annotation, task, project


async def get_annotation(session: AsyncSession, annotation_id: int) -> AnnotationOut:
    annotation = await session.get(Annotation, annotation_id)
    if annotation is None:
        raise NotFound(f"Annotation {annotation_id} not found.")
    return AnnotationOut.of(annotation)


async def update_annotation(session: AsyncSession, annotation_id: int, body: AnnotationIn) -> AnnotationOut:
    annotation, task, project = await _locked_annotation(session, annotation_id)
    await _check_body(session, project, task, body)
    if body.result is not None:
        annotation.result = body.result
    if body.was_cancelled is not None:
        annotation.was_cancelled = body.was_cancelled
    if body.ground_truth is not None:
        annotation.ground_truth = body.ground_truth
    if "lead_time" in body.model_fields_set:
        annotation.lead_time = body.lead_time
    if body.parent_prediction is not None:
        annotation.parent_prediction_id = body.parent_prediction
    return await _after_change(session, project, task, annotation, outbox.ANNOTATION_UPDATED)


async def delete_annotation(session: AsyncSession, annotation_id: int) -> None:
    annotation, task, project = await _locked_annotation(session, annotation_id)
    await session.delete(annotation)
    await session.flush()
    await refresh_task_counters(session, [task.id])
    await outbox.record_annotations_deleted(session, project, [annotation_id])
