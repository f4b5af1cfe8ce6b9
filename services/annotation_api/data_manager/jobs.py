"""Selection jobs: data manager work that grows with the selection runs in the API's job runner.

A small selection (``job_inline_tasks``) is done within the request, which answers what Label Studio
answers plus ``job_id``. A larger one answers at once with Label Studio's ``{"processed_items",
"detail"}`` (the number of selected tasks, and where to follow the job) plus ``job_id``; the job walks
the selection in id order, ``job_batch_size`` tasks per transaction, and ends with the summary Label
Studio would have answered (``result.processed_items`` / ``result.detail``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import any_, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api import outbox
from services.annotation_api.counters import add_to_project_counters, refresh_task_counters
from services.annotation_api.data_manager.registry import ActionContext
from services.annotation_api.data_manager.selection import TaskSelection
from services.annotation_api.db import keep_index_plans, scanning_in_index_order
from services.annotation_api.ids import id_array
from services.annotation_api.jobs import runner
from services.annotation_api.models import Annotation, Job, JobStatus, Prediction, Project

DELETE_TASKS_KIND = "delete_tasks"
DELETE_PREDICTIONS_KIND = "delete_predictions"
DELETE_ANNOTATIONS_KIND = "delete_annotations"


def job_selection(ctx: runner.StepContext) -> TaskSelection:
    job = ctx.job
    assert job.project_id is not None  # a job's project outlives it unless the job deletes it
    return TaskSelection.from_params(ctx.session, job.project_id, job.params["selection"])


async def start_selection_job(
    ctx: ActionContext, kind: str, doing: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Record the job over the action's selection; the Label Studio-shaped answer with its id."""
    selected = await ctx.selection.size(ctx.project.task_number)
    job = await runner.start_job(
        ctx.session,
        kind=kind,
        project_id=ctx.project.id,
        params={"selection": ctx.selection.to_params(), **(params or {})},
        total=selected,
        selection=ctx.selection.summary(kind),
        model_version=(params or {}).get("model_version"),
    )
    return started_answer(job, f"{doing} {selected} tasks")


def started_answer(job: Job, doing: str) -> dict[str, Any]:
    """The job's summary when it was done in the request, else where to follow it."""
    if job.status == JobStatus.COMPLETED:
        return {**(job.result or {}), "job_id": job.id}
    return {
        "processed_items": job.total,
        "detail": f"{doing} in the background: follow GET /api/jobs/{job.id}",
        "job_id": job.id,
    }


# Deletes the batch's tasks (their annotations, predictions and locks go with them by cascade) and
# returns what they counted, so the project's counters move by exact deltas: the tasks are locked. The
# statement's snapshot still shows the predictions the cascade removes once it ends. They are counted by
# one index probe per task (``= ANY(ARRAY(…))``): ``IN (SELECT …)`` was planned as a hash join over the
# whole prediction index, every project's, once per batch.
_DELETE_TASKS = text(
    """
    WITH gone AS (
        DELETE FROM task WHERE id = ANY(CAST(:ids AS bigint[]))
        RETURNING id, total_annotations, is_labeled
    )
    SELECT count(*), COALESCE(sum(total_annotations), 0),
           (SELECT count(*) FROM prediction p WHERE p.task_id = ANY(ARRAY(SELECT id FROM gone))),
           count(*) FILTER (WHERE is_labeled)
    FROM gone
    """
)


async def delete_task_batch(session: AsyncSession, project_id: int, locked_ids: Sequence[int]) -> int:
    """Delete these (locked) tasks and take them off the project's counters; how many were deleted."""
    if not locked_ids:
        return 0
    await runner.flush_stats_at_commit(session)
    await keep_index_plans(session)
    row = (await session.execute(_DELETE_TASKS, {"ids": list(locked_ids)})).one()
    tasks, annotations, predictions, labeled = (int(value) for value in row)
    await add_to_project_counters(
        session,
        project_id,
        tasks=-tasks,
        annotations=-annotations,
        predictions=-predictions,
        labeled=-labeled,
    )
    return tasks


async def _delete_tasks_step(ctx: runner.StepContext) -> bool:
    selection = job_selection(ctx)
    ids = await selection.window(ctx.cursor, ctx.batch_size, lock=True)
    if not ids:
        return True
    deleted = await delete_task_batch(ctx.session, selection.project_id, ids)
    ctx.advance(ids[-1], len(ids), deleted=deleted)
    return len(ids) < ctx.batch_size


async def _delete_tasks_finish(ctx: runner.StepContext) -> None:
    deleted = int((ctx.job.result or {}).get("deleted", 0))
    ctx.job.result = {"processed_items": deleted, "detail": f"Deleted {deleted} tasks", "deleted": deleted}


async def delete_prediction_batch(
    session: AsyncSession, selection: TaskSelection, after: int, limit: int, model_version: str | None
) -> tuple[int, int, int]:
    """Delete the predictions (of one model version, or all) of the next ``limit`` selected tasks above
    ``after``, in one statement: the batch's task ids stay in Postgres. (tasks in the batch, the last
    one's id, predictions deleted); the project's count moves by what was deleted (tasks count theirs
    when read)."""
    batch = selection.window_ids(after, limit).cte("batch")
    # Only the task index may serve this, one probe per task of the batch, whatever the statistics say:
    # ``= ANY(array(…))``, not ``IN (…)``, which the planner hash-joined to a scan of all the project's
    # predictions once per batch; and no ``project_id`` condition (a prediction's project is its task's),
    # which let it read all the project's predictions of the version by the (project_id, model_version)
    # index instead and compare each with the 5,000 ids.
    batch_ids = func.array(select(batch.c.id).scalar_subquery())
    condition = Prediction.task_id == any_(batch_ids)
    if model_version is not None:
        condition &= Prediction.model_version == model_version
    gone = delete(Prediction).where(condition).returning(Prediction.id).cte("gone")
    stmt = select(
        select(func.count()).select_from(batch).scalar_subquery(),
        select(func.max(batch.c.id)).scalar_subquery(),
        select(func.count()).select_from(gone).scalar_subquery(),
    )
    async with scanning_in_index_order(session):
        tasks, last, deleted = (await session.execute(stmt)).one()
    if deleted:
        await add_to_project_counters(session, selection.project_id, predictions=-deleted)
    return int(tasks), int(last or after), int(deleted)


async def _delete_predictions_step(ctx: runner.StepContext) -> bool:
    await runner.flush_stats_at_commit(ctx.session)
    version = ctx.job.params.get("model_version")
    tasks, last, deleted = await delete_prediction_batch(
        ctx.session, job_selection(ctx), ctx.cursor, ctx.batch_size, version
    )
    if not tasks:
        return True
    ctx.advance(last, tasks, deleted=deleted)
    return tasks < ctx.batch_size


async def _delete_predictions_finish(ctx: runner.StepContext) -> None:
    deleted = int((ctx.job.result or {}).get("deleted", 0))
    ctx.job.result = {"processed_items": deleted, "detail": f"Deleted {deleted} predictions"}


async def delete_annotation_batch(session: AsyncSession, project: Project, locked_ids: Sequence[int]) -> int:
    """Delete the annotations of these (locked) tasks, recount them and record the webhook events."""
    if not locked_ids:
        return 0
    await runner.flush_stats_at_commit(session)
    gone = (
        delete(Annotation)
        .where(Annotation.project_id == project.id, Annotation.task_id == any_(id_array(locked_ids)))
        .returning(Annotation.id, Annotation.task_id)
        .cte("gone")
    )
    stmt = select(func.array_agg(gone.c.id), func.array_agg(gone.c.task_id.distinct()))
    row_ids, touched = (await session.execute(stmt)).one()
    deleted = sorted(row_ids or ())
    await refresh_task_counters(session, sorted(touched or ()))
    await outbox.record_annotations_deleted(session, project, deleted)
    return len(deleted)


async def _delete_annotations_step(ctx: runner.StepContext) -> bool:
    selection = job_selection(ctx)
    project = await ctx.session.get(Project, selection.project_id)
    ids = await selection.window(ctx.cursor, ctx.batch_size, lock=True)
    if not ids or project is None:
        return True
    deleted = await delete_annotation_batch(ctx.session, project, ids)
    ctx.advance(ids[-1], len(ids), deleted=deleted)
    return len(ids) < ctx.batch_size


async def _delete_annotations_finish(ctx: runner.StepContext) -> None:
    deleted = int((ctx.job.result or {}).get("deleted", 0))
    ctx.job.result = {"processed_items": deleted, "detail": f"Deleted {deleted} annotations"}


runner.register(
    DELETE_TASKS_KIND,
    runner.Runnable(
        step=_delete_tasks_step,
        finish=_delete_tasks_finish,
        vacuum=("task", "prediction", "annotation"),
    ),
)
runner.register(
    DELETE_PREDICTIONS_KIND,
    runner.Runnable(step=_delete_predictions_step, finish=_delete_predictions_finish, vacuum=("prediction",)),
)
runner.register(
    DELETE_ANNOTATIONS_KIND,
    runner.Runnable(step=_delete_annotations_step, finish=_delete_annotations_finish, vacuum=("annotation",)),
)
