"""Built-in data manager actions: deleting tasks, their predictions or their annotations.

Deleting tasks or predictions grows with the selection, so those record a job (``jobs.py``) and answer
at once. Deleting annotations is a fixed number of set-based statements whatever the selection size;
the selected tasks are locked first (in id order) so the counters recomputed afterwards are exact
under concurrent writes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import any_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api import outbox
from services.annotation_api.counters import refresh_task_counters
from services.annotation_api.data_manager.jobs import (
    DELETE_PREDICTIONS_KIND,
    DELETE_TASKS_KIND,
    start_selection_job,
)
from services.annotation_api.data_manager.registry import ActionContext, action, confirm
from services.annotation_api.ids import id_array
from services.annotation_api.models import Annotation


async def _delete_returning(
    session: AsyncSession, model: type[Annotation], project_id: int, task_ids: list[int]
) -> tuple[list[int], list[int]]:
    """Delete the rows of ``model`` on these tasks; (deleted row ids, tasks that lost rows), one round trip."""
    gone = (
        delete(model)
        .where(model.project_id == project_id, model.task_id == any_(id_array(task_ids)))
        .returning(model.id, model.task_id)
        .cte("gone")
    )
    stmt = select(func.array_agg(gone.c.id), func.array_agg(gone.c.task_id.distinct()))
    row_ids, touched = (await session.execute(stmt)).one()
    return sorted(row_ids or ()), sorted(touched or ())


@action(
    "delete_tasks_predictions",
    title="Delete predictions",
    order=100,
    dialog=confirm("You are going to delete all predictions from the selected tasks. Please confirm."),
)
async def delete_tasks_predictions(ctx: ActionContext) -> dict[str, Any]:
    return await start_selection_job(ctx, DELETE_PREDICTIONS_KIND, "Deleting the predictions of")


@action(
    "delete_tasks_annotations",
    title="Delete annotations",
    order=101,
    dialog=confirm("You are going to delete all annotations from the selected tasks. Please confirm."),
)
async def delete_tasks_annotations(ctx: ActionContext) -> dict[str, Any]:
    task_ids = await ctx.selection.lock_ids()
    deleted, touched = await _delete_returning(ctx.session, Annotation, ctx.project.id, task_ids)
    await refresh_task_counters(ctx.session, touched)
    await outbox.record_annotations_deleted(ctx.session, ctx.project, deleted)
    return {"processed_items": len(deleted), "detail": f"Deleted {len(deleted)} annotations"}


@action(
    "delete_tasks",
    title="Delete tasks",
    order=102,
    permission="tasks.delete",
    dialog=confirm(
        "You are going to delete the selected tasks with their annotations and predictions. Please confirm."
    ),
)
async def delete_tasks(ctx: ActionContext) -> dict[str, Any]:
    return {**await start_selection_job(ctx, DELETE_TASKS_KIND, "Deleting"), "reload": True}
