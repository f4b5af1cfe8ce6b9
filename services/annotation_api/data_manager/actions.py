"""Built-in data manager actions: deleting tasks, their predictions or their annotations.

Each grows with the selection, so each records a job (``jobs.py``): done in the request for a small
selection, else answered at once and run by the API's job runner in bounded batches.
"""

from __future__ import annotations

from typing import Any

from services.annotation_api.data_manager.jobs import (
    DELETE_ANNOTATIONS_KIND,
    DELETE_PREDICTIONS_KIND,
    DELETE_TASKS_KIND,
    start_selection_job,
)
from services.annotation_api.data_manager.registry import ActionContext, action, confirm


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
    return await start_selection_job(ctx, DELETE_ANNOTATIONS_KIND, "Deleting the annotations of")


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
