"""Counting and deleting a project's predictions by model version, set-based."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.data_manager.jobs import DELETE_PREDICTIONS_KIND, started_answer
from services.annotation_api.data_manager.selection import TaskSelection
from services.annotation_api.jobs import runner
from services.annotation_api.model_versions.schemas import (
    DeletedPredictions,
    ExtendedVersions,
    LiveBackend,
    StaticVersion,
)
from services.annotation_api.models import JobStatus
from services.annotation_api.projects.service import get_project

_STATIC = text(
    """
    SELECT model_version, count(*) AS count, max(created_at) AS latest
    FROM prediction WHERE project_id = :project
    GROUP BY model_version ORDER BY latest DESC, model_version
    """
)
_LIVE = text(
    "SELECT id, title, url, model_version, state FROM ml_backend WHERE project_id = :project ORDER BY id"
)


async def version_counts(session: AsyncSession, project_id: int) -> dict[str, int]:
    await get_project(session, project_id)
    rows = await session.execute(_STATIC, {"project": project_id})
    return {row.model_version: row[1] for row in rows}


async def extended_versions(session: AsyncSession, project_id: int) -> ExtendedVersions:
    await get_project(session, project_id)
    static = [
        StaticVersion(model_version=row.model_version, count=row[1], latest=row.latest)
        for row in await session.execute(_STATIC, {"project": project_id})
    ]
    live = [
        LiveBackend(id=row.id, title=row.title, url=row.url, model_version=row.model_version, state=row.state)
        for row in await session.execute(_LIVE, {"project": project_id})
    ]
    return ExtendedVersions(static=static, live=live)


async def delete_version(session: AsyncSession, project_id: int, model_version: str) -> DeletedPredictions:
    """Delete every prediction of ``model_version`` in the project, as a job over all its tasks."""
    project = await get_project(session, project_id)
    every_task = TaskSelection(session, project_id, all=True)
    job = await runner.start_job(
        session,
        kind=DELETE_PREDICTIONS_KIND,
        project_id=project_id,
        params={"selection": every_task.to_params(), "model_version": model_version},
        total=project.task_number,
        selection=every_task.summary("delete_model_version"),
        model_version=model_version,
    )
    answer = started_answer(job, f"Deleting the {model_version!r} predictions of {job.total} tasks")
    return DeletedPredictions(
        deleted_predictions=answer["processed_items"] if job.status == JobStatus.COMPLETED else 0,
        detail=answer["detail"],
        job_id=job.id,
    )
