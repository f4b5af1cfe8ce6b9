"""Counting and deleting a project's predictions by model version, set-based."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.counters import refresh_task_counters
from services.annotation_api.model_versions.schemas import (
    ExtendedVersions,
    LiveBackend,
    StaticVersion,
)
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
# Delete and collect the touched tasks in one round trip (one row back, however many predictions).
_DELETE_VERSION = text(
    """
    WITH gone AS (
        DELETE FROM prediction WHERE project_id = :project AND model_version = :version
        RETURNING task_id
    )
    SELECT count(*), COALESCE(array_agg(DISTINCT task_id), '{}') FROM gone
    """
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


async def delete_version(session: AsyncSession, project_id: int, model_version: str) -> int:
    """Delete every prediction of ``model_version`` in the project; returns how many."""
    await get_project(session, project_id)
    deleted, task_ids = (
        await session.execute(_DELETE_VERSION, {"project": project_id, "version": model_version})
    ).one()
    await refresh_task_counters(session, sorted(task_ids))
    return int(deleted)
