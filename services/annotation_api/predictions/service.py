"""Prediction rules: results and scores must fit the label config, tasks must belong to the project,
counters follow every write (bulk import: imports.predictions).

Tasks are locked (``FOR UPDATE``, in id order) before their predictions change, so concurrent writers
to the same tasks neither deadlock nor miscount.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.auth.access import hidden, visible_organization
from services.annotation_api.counters import add_to_project_counters
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.models import Prediction, Project, Task
from services.annotation_api.predictions import repository
from services.annotation_api.predictions.repository import NewPredictions
from services.annotation_api.predictions.schemas import (
    UNDEFINED_VERSION,
    PredictionCreate,
    PredictionUpdate,
)
from services.annotation_api.projects.service import parse_config
from services.annotation_api.result_validation import check_result

#: Without ``page``, a list may hold at most this many predictions; more must be fetched in pages.
UNPAGED_LIMIT: Final = 10_000


def version_or_default(model_version: str | None) -> str:
    return model_version or UNDEFINED_VERSION


async def adopt_version_if_unset(session: AsyncSession, project_id: int, model_version: str) -> None:
    """A project without a model version shows the first predictions it gets (Label Studio's rule)."""
    await session.execute(
        update(Project)
        .where(Project.id == project_id, Project.model_version == "")
        .values(model_version=model_version)
    )


async def create_prediction(session: AsyncSession, body: PredictionCreate) -> dict[str, Any]:
    row = (
        await session.execute(
            select(Task.id, Project)
            .join(Project, Project.id == Task.project_id)
            .where(Task.id == body.task)
            .with_for_update(of=Task)
        )
    ).one_or_none()
    if row is None or await hidden(session, "task_id", body.task):
        raise BadRequest(f"Task {body.task} does not exist.", field="task")
    project: Project = row[1]
    if body.project is not None and body.project != project.id:
        raise BadRequest(f"Task {body.task} belongs to project {project.id}.", field="project")
    check_result(await parse_config(project.label_config), body.result, score=body.score)
    version = version_or_default(body.model_version)
    rows = NewPredictions()
    rows.add(body.task, body.result, body.score, version)
    (created,) = await repository.insert_predictions(session, project.id, rows)
    await add_to_project_counters(session, project.id, predictions=1)
    await adopt_version_if_unset(session, project.id, version)
    return created


async def list_predictions(
    session: AsyncSession, task: int | None, project: int | None, page: int | None, page_size: int
) -> list[dict[str, Any]]:
    """Oldest first. Unpaged lists are capped so one request cannot pull a 10-million-row project."""
    org = visible_organization(session)
    if page is not None:
        return await repository.list_predictions(
            session, task, project, org, (page - 1) * page_size, page_size
        )
    if await repository.count_up_to(session, task, project, org, UNPAGED_LIMIT + 1) > UNPAGED_LIMIT:
        raise BadRequest(
            f"More than {UNPAGED_LIMIT} predictions match: filter by task or project, "
            "or fetch them in pages with page=1,2,… and page_size.",
            field="page",
        )
    return await repository.list_predictions(session, task, project, org, 0, UNPAGED_LIMIT)


async def get_prediction(session: AsyncSession, prediction_id: int) -> dict[str, Any]:
    found = await repository.get_prediction(session, prediction_id)
    if found is None:
        raise NotFound(f"Prediction {prediction_id} not found.")
    return found


async def _locked_prediction(session: AsyncSession, prediction_id: int) -> tuple[Prediction, Project]:
    task_id = await session.scalar(select(Prediction.task_id).where(Prediction.id == prediction_id))
    if task_id is None:
        raise NotFound(f"Prediction {prediction_id} not found.")
    project = (
        await session.execute(
            select(Project)
            .join(Task, Task.project_id == Project.id)
            .where(Task.id == task_id)
            .with_for_update(of=Task)
        )
    ).scalar_one()
    prediction = await session.scalar(
        select(Prediction).where(Prediction.id == prediction_id, Prediction.task_id == task_id)
    )
    if prediction is None:  # deleted while we waited for the task lock
        raise NotFound(f"Prediction {prediction_id} not found.")
    return prediction, project


async def update_prediction(
    session: AsyncSession, prediction_id: int, body: PredictionUpdate
) -> dict[str, Any]:
    prediction, project = await _locked_prediction(session, prediction_id)
    if body.task is not None and body.task != prediction.task_id:
        raise BadRequest("A prediction cannot move to another task.", field="task")
    given = body.model_fields_set
    result = body.result if body.result is not None else prediction.result
    score = body.score if "score" in given else prediction.score
    if body.result is not None or "score" in given:
        check_result(await parse_config(project.label_config), result, score=score)
    values: dict[str, Any] = {"result": result, "score": score}
    if body.model_version is not None:
        values["model_version"] = version_or_default(body.model_version)
    await session.execute(update(Prediction).where(Prediction.id == prediction_id).values(**values))
    return await get_prediction(session, prediction_id)


async def delete_prediction(session: AsyncSession, prediction_id: int) -> None:
    _, project = await _locked_prediction(session, prediction_id)
    gone = await session.execute(delete(Prediction).where(Prediction.id == prediction_id))
    # What this statement deleted: a selection's delete job may have taken it meanwhile.
    await add_to_project_counters(session, project.id, predictions=-int(getattr(gone, "rowcount", 0)))
