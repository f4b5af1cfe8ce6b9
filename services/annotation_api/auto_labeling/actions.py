"""``predictions_to_annotations``: turn the selected tasks' predictions of one model version (at or above
a score threshold) into annotations. A job (``AUTO_LABEL_KIND``) does it in batches of the selection,
each a fixed number of statements whatever its size.

Body (besides the selection): ``model_version`` (default: the project's) and ``threshold`` (optional);
both may also come as query parameters. Annotations keep ``parent_prediction`` and are delivered to the
project's backends like any other (ANNOTATION_CREATED events).
"""

from __future__ import annotations

import math
from typing import Any

from services.annotation_api.auto_labeling import repository
from services.annotation_api.counters import refresh_task_counters
from services.annotation_api.data_manager.jobs import job_selection, start_selection_job
from services.annotation_api.data_manager.registry import ActionContext, action
from services.annotation_api.errors import BadRequest
from services.annotation_api.events.service import schedule_delivery
from services.annotation_api.jobs import runner
from services.annotation_api.models import Project
from services.annotation_api.outbox import project_payload

AUTO_LABEL_KIND = "predictions_to_annotations"


def _param(ctx: ActionContext, name: str) -> Any:
    value = ctx.body.get(name)
    return ctx.request.query_params.get(name) if value is None else value


def _model_version(ctx: ActionContext) -> str:
    value = _param(ctx, "model_version")
    if value is None or value == "":
        if not ctx.project.model_version:
            raise BadRequest(
                "model_version is required: the project has no selected model version.", field="model_version"
            )
        return ctx.project.model_version
    if not isinstance(value, str):
        raise BadRequest("model_version must be a string.", field="model_version")
    return value


def _threshold(ctx: ActionContext) -> float | None:
    value = _param(ctx, "threshold")
    if value is None or value == "":
        return None
    try:
        threshold = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        threshold = math.nan
    if not math.isfinite(threshold):
        raise BadRequest(
            "threshold must be a number (predictions scoring at least this are used).", field="threshold"
        )
    return threshold


@action("predictions_to_annotations", title="Create annotations from predictions", order=20)
async def predictions_to_annotations(ctx: ActionContext) -> dict[str, Any]:
    params = {"model_version": _model_version(ctx), "threshold": _threshold(ctx), "user": ctx.user.id}
    return await start_selection_job(ctx, AUTO_LABEL_KIND, "Auto-labeling", params)


async def _step(ctx: runner.StepContext) -> bool:
    selection = job_selection(ctx)
    task_ids = await selection.window(ctx.cursor, ctx.batch_size, lock=True)
    if not task_ids:
        return True
    params = ctx.job.params
    created = await repository.annotations_from_predictions(
        ctx.session,
        project_id=selection.project_id,
        task_ids=task_ids,
        model_version=params["model_version"],
        threshold=params["threshold"],
        user_id=params["user"],
    )
    if created:
        project = await ctx.session.get(Project, selection.project_id)
        assert project is not None  # the job's project outlives it
        await refresh_task_counters(ctx.session, [task_id for _, task_id in created])
        annotation_ids = [annotation_id for annotation_id, _ in created]
        await repository.record_created_events(ctx.session, project_payload(project), annotation_ids)
        await schedule_delivery(ctx.session, project.id)
    ctx.advance(task_ids[-1], len(task_ids), created=len(created), skipped=len(task_ids) - len(created))
    return len(task_ids) < ctx.batch_size


async def _finish(ctx: runner.StepContext) -> None:
    result = ctx.job.result or {}
    created, skipped = int(result.get("created", 0)), int(result.get("skipped", 0))
    ctx.job.result = {
        "processed_items": created,
        "detail": f"Created {created} annotations, skipped {skipped}",
        "created": created,
        "skipped": skipped,
    }


runner.register(AUTO_LABEL_KIND, runner.Runnable(step=_step, finish=_finish))
