"""Project rules: a label config must parse, and changing it must not orphan existing task data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from services.annotation_api.auth.access import only_visible
from services.annotation_api.data_manager.jobs import delete_task_batch
from services.annotation_api.data_manager.selection import TaskSelection
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.jobs import runner
from services.annotation_api.jobs.repository import cancel_chunks
from services.annotation_api.models import Job, JobChunk, MlBackend, Prediction, Project, User
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
    """The project or 404 (also while it is being deleted). ``for_update`` serialises config changes;
    ``key_share`` is for writers whose checks depend on the current label config (import, task writes):
    it makes a concurrent config change wait for them, yet does not block other such writers or their
    counter updates."""
    stmt = select(Project).where(Project.id == project_id, Project.deleting.is_(False))
    if for_update:
        stmt = stmt.with_for_update()
    elif key_share:
        stmt = stmt.with_for_update(read=True, key_share=True)
    project = (await session.execute(stmt)).scalar_one_or_none()
    if project is None:
        raise NotFound(f"Project {project_id} not found.")
    return project


def unfolded_predictions() -> ScalarSelect[int]:
    """Predictions bulk jobs stored that ``total_predictions_number`` does not count yet (chunk reports
    not folded in): select it next to the project, in the same statement, for an exact counter."""
    return (
        select(func.coalesce(func.sum(JobChunk.predictions), 0))
        .join(Job, Job.id == JobChunk.job_id)
        .where(Job.project_id == Project.id, JobChunk.folded.is_(False))
        .scalar_subquery()
    )


async def get_project_counted(session: AsyncSession, project_id: int) -> tuple[Project, int]:
    """The project (or 404) and its ``unfolded_predictions``."""
    stmt = select(Project, unfolded_predictions()).where(
        Project.id == project_id, Project.deleting.is_(False)
    )
    row = (await session.execute(stmt.execution_options(populate_existing=True))).first()
    if row is None:
        raise NotFound(f"Project {project_id} not found.")
    return row[0], int(row[1])


async def creator_emails(session: AsyncSession, projects: Sequence[Project]) -> dict[int, str]:
    """Emails of the projects' creators, in one query for a whole page."""
    ids = {project.created_by_id for project in projects if project.created_by_id is not None}
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.email).where(User.id.in_(ids)))
    return {user_id: email for user_id, email in rows}


async def list_projects(
    session: AsyncSession, page: int, page_size: int
) -> tuple[int, list[tuple[Project, int]]]:
    """The page, each project with its ``unfolded_predictions``."""
    where: list[ColumnElement[bool]] = [Project.deleting.is_(False)]
    if (visible := only_visible(session, Project.id)) is not None:
        where.append(visible)
    count = (await session.execute(select(func.count()).select_from(Project).where(*where))).scalar_one()
    stmt = (
        select(Project, unfolded_predictions())
        .where(*where)
        .order_by(Project.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return count, [(project, int(unfolded)) for project, unfolded in (await session.execute(stmt)).all()]


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
    version = changes.get("model_version")
    if version and version != project.model_version:
        await check_version_exists(session, project_id, version)
    for name, value in changes.items():
        setattr(project, name, value)
    await session.flush()
    await session.refresh(project)
    return project


async def check_version_exists(session: AsyncSession, project_id: int, version: str) -> None:
    """400 on ``model_version`` unless a backend of the project has that version or predictions carry it.

    Label Studio's rule: showing a version nothing predicted would silently hide every prediction.
    """
    live = select(MlBackend.id).where(
        MlBackend.project_id == project_id,
        (MlBackend.model_version == version) | (MlBackend.title == version),
    )
    static = select(Prediction.id).where(
        Prediction.project_id == project_id, Prediction.model_version == version
    )
    if not await session.scalar(select(live.exists() | static.exists())):
        raise BadRequest(
            f"Model version {version!r} doesn't exist either as live model or as static predictions.",
            field="model_version",
        )


DELETE_PROJECT_KIND = "delete_project"


async def delete_project(session: AsyncSession, project_id: int) -> Job:
    """Hide the project at once (``deleting``) and record the job that deletes it in batches.

    The row lock waits for writers that checked the project before (an import in flight): their rows
    are then deleted by the job, and every writer after sees a 404. Never done in the request, however
    small: this request holds the project row, and deleting tasks after it would take locks in the
    opposite order to writers (tasks, then the project's counters), a deadlock.
    """
    project = await get_project(session, project_id, for_update=True)
    project.deleting = True
    return await runner.start_job(
        session,
        kind=DELETE_PROJECT_KIND,
        project_id=project_id,
        params={},
        total=project.task_number,
        selection={"source": DELETE_PROJECT_KIND, "title": project.title},
        inline=False,
    )


_CANCEL_OTHER_JOBS = text(
    """
    UPDATE job SET status = 'cancelled', step = NULL, finished_at = now(), updated_at = now()
    WHERE project_id = :project AND id <> :job AND status IN ('queued', 'running')
    RETURNING id
    """
)
# What is left once the tasks are gone (their predictions, annotations and locks went with them), one
# bounded batch per statement, in the order that leaves no row pointing at a deleted one.
_DELETE_REST = (
    text(
        "DELETE FROM outbox_event WHERE id IN "
        "(SELECT id FROM outbox_event WHERE project_id = :project ORDER BY id LIMIT :n)"
    ),
    text(
        "DELETE FROM job_chunk WHERE id IN (SELECT c.id FROM job_chunk c JOIN job j ON j.id = c.job_id "
        "WHERE j.project_id = :project AND j.id <> :job ORDER BY c.id LIMIT :n)"
    ),
    text(
        "DELETE FROM job WHERE id IN "
        "(SELECT id FROM job WHERE project_id = :project AND id <> :job ORDER BY id LIMIT :n)"
    ),
)


async def _delete_project_step(ctx: runner.StepContext) -> bool:
    job, session = ctx.job, ctx.session
    project_id = job.project_id
    if project_id is None:
        return True
    if not job.params.get("jobs_cancelled"):
        # First the project's bulk jobs: a chunk report arriving later is dropped, not half-stored.
        for (other_id,) in (
            await session.execute(_CANCEL_OTHER_JOBS, {"project": project_id, "job": job.id})
        ).all():
            await cancel_chunks(session, other_id)
        job.params = {**job.params, "jobs_cancelled": True}
        return False
    every_task = TaskSelection(session, project_id, all=True)
    ids = await every_task.window(ctx.cursor, ctx.batch_size, lock=True)
    if ids:
        ctx.advance(ids[-1], len(ids), deleted=await delete_task_batch(session, project_id, ids))
        return False
    await runner.flush_stats_at_commit(session)
    bind = {"project": project_id, "job": job.id, "n": ctx.batch_size}
    for statement in _DELETE_REST:
        if (await session.execute(statement, bind)).rowcount:  # type: ignore[attr-defined]
            return False
    await session.execute(delete(MlBackend).where(MlBackend.project_id == project_id))
    await session.execute(delete(Project).where(Project.id == project_id))
    return True


async def _delete_project_finish(ctx: runner.StepContext) -> None:
    deleted = int((ctx.job.result or {}).get("deleted", 0))
    ctx.job.result = {"processed_items": deleted, "detail": f"Deleted the project and its {deleted} tasks"}


async def _undelete(session: AsyncSession, job: Job) -> None:
    """A cancelled project delete shows the project again, with what is left of it."""
    if job.project_id is not None:
        await session.execute(update(Project).where(Project.id == job.project_id).values(deleting=False))


runner.register(
    DELETE_PROJECT_KIND,
    runner.Runnable(
        step=_delete_project_step,
        finish=_delete_project_finish,
        vacuum=("task", "prediction", "annotation", "outbox_event", "job_chunk", "job"),
        on_cancel=_undelete,
    ),
)
