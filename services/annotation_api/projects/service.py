"""Project rules: a label config must parse, and changing it must not orphan existing task data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from services.annotation_api.auth.access import only_visible
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.models import Project, User
from services.annotation_api.projects.schemas import ProjectCreate, ProjectUpdate
from shared.label_config import LabelConfig, LabelConfigError, parse_label_config_cached


async def parse_config(xml: str, field: str = "label_config") -> LabelConfig:
    """Parse a config off the event loop (large configs take a while); 400 naming tag and attribute."""
    try:
        return await run_in_threadpool(parse_label_config_cached, xml)
    except LabelConfigError as exc:
        raise BadRequest(
            f"Invalid label config: {exc.message}",
            field=field,
            extra={"tag": exc.tag, "attribute": exc.attribute},
        ) from exc


def missing_key_message(config: LabelConfig, key: str) -> str:
    """`missing key "text" required by <Text name="text" value="$text">`: names the tag to fix."""
    users = [
        f'<{obj.type} name="{obj.name}" value="{obj.value}">' for obj in config.objects if obj.data_key == key
    ]
    return f'missing key "{key}" required by {", ".join(users)}'


def first_missing_key(config: LabelConfig, data: Mapping[str, Any]) -> str | None:
    missing = config.missing_data_keys(data)
    return missing[0] if missing else None


async def get_project(
    session: AsyncSession, project_id: int, *, for_update: bool = False, key_share: bool = False
) -> Project:
    """The project or 404. ``for_update`` serialises config changes; ``key_share`` is for writers whose
    checks depend on the current label config (import, task writes): it makes a concurrent config change
    wait for them, yet does not block other such writers or their counter updates."""
    stmt = select(Project).where(Project.id == project_id)
    if for_update:
        stmt = stmt.with_for_update()
    elif key_share:
        stmt = stmt.with_for_update(read=True, key_share=True)
    project = (await session.execute(stmt)).scalar_one_or_none()
    if project is None:
        raise NotFound(f"Project {project_id} not found.")
    return project


async def creator_emails(session: AsyncSession, projects: Sequence[Project]) -> dict[int, str]:
    """Emails of the projects' creators, in one query for a whole page."""
    ids = {project.created_by_id for project in projects if project.created_by_id is not None}
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.email).where(User.id.in_(ids)))
    return {user_id: email for user_id, email in rows}


async def list_projects(session: AsyncSession, page: int, page_size: int) -> tuple[int, list[Project]]:
    visible = only_visible(session, Project.id)
    where = [] if visible is None else [visible]
    count = (await session.execute(select(func.count()).select_from(Project).where(*where))).scalar_one()
    stmt = (
        select(Project)
        .where(*where)
        .order_by(Project.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return count, list((await session.execute(stmt)).scalars())


async def create_project(session: AsyncSession, body: ProjectCreate, user: User) -> Project:
    await parse_config(body.label_config)
    project = Project(**body.model_dump(), created_by_id=user.id, organization_id=user.organization_id)
    session.add(project)
    await session.flush()
    await session.refresh(project)
    return project


async def check_tasks_fit(session: AsyncSession, project_id: int, config: LabelConfig) -> None:
    """400 when some existing task lacks a data key the new config reads (one indexed scan, LIMIT 1)."""
    keys = sorted(config.required_data_keys())
    if not keys:
        return
    row = (
        await session.execute(
            text(
                "SELECT id, data FROM task WHERE project_id = :project AND NOT (data ?& CAST(:keys AS text[])) "
                "ORDER BY id LIMIT 1"
            ),
            {"project": project_id, "keys": keys},
        )
    ).first()
    if row is not None:
        key = first_missing_key(config, row.data) or keys[0]
        raise BadRequest(
            f"Label config does not fit existing tasks: task {row.id}: {missing_key_message(config, key)}",
            field="label_config",
        )


async def validate_config_for_project(session: AsyncSession, project_id: int, xml: str) -> None:
    await get_project(session, project_id)
    config = await parse_config(xml)
    await check_tasks_fit(session, project_id, config)


async def update_project(session: AsyncSession, project_id: int, body: ProjectUpdate) -> Project:
    project = await get_project(session, project_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    if "label_config" in changes and changes["label_config"] != project.label_config:
        config = await parse_config(changes["label_config"])
        await check_tasks_fit(session, project_id, config)
    for name, value in changes.items():
        setattr(project, name, value)
    await session.flush()
    await session.refresh(project)
    return project


# Writers lock a project's rows in this order: bulk-job chunks, then tasks (in id order), then the project
# row (counters). Deleting the project row first and letting the cascade reach the tasks took them the
# other way round, a deadlock with a chunk report or an annotation in flight (a 500 for one of them).
_LOCK_PROJECT_CHUNKS = text(
    """
    SELECT c.id FROM job_chunk AS c JOIN job AS j ON j.id = c.job_id
    WHERE j.project_id = :project ORDER BY c.id FOR UPDATE OF c
    """
)
_LOCK_PROJECT_TASKS = text("SELECT id FROM task WHERE project_id = :project ORDER BY id FOR UPDATE")


async def delete_project(session: AsyncSession, project_id: int) -> None:
    """Delete the project and everything in it, taking row locks in the order every writer uses."""
    await session.execute(_LOCK_PROJECT_CHUNKS, {"project": project_id})
    await session.execute(_LOCK_PROJECT_TASKS, {"project": project_id})
    result = await session.execute(delete(Project).where(Project.id == project_id).returning(Project.id))
    if result.scalar_one_or_none() is None:
        raise NotFound(f"Project {project_id} not found.")
