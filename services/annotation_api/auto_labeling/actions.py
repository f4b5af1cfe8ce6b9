"""``predictions_to_annotations``: turn the selected tasks' predictions of one model version (at or above
a score threshold) into annotations, in a fixed number of statements whatever the selection size.

Body (besides the selection): ``model_version`` (default: the project's) and ``threshold`` (optional);
both may also come as query parameters. Annotations keep ``parent_prediction`` and are delivered to the
project's backends like any other (ANNOTATION_CREATED events).
"""

from __future__ import annotations

import math
from typing import Any

from services.annotation_api.auto_labeling import repository
from services.annotation_api.counters import refresh_task_counters
from services.annotation_api.data_manager.registry import ActionContext, action
from services.annotation_api.errors import BadRequest
from services.annotation_api.events.service import schedule_delivery
from services.annotation_api.outbox import project_payload


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
    version = _model_version(ctx)
    threshold = _threshold(ctx)
    task_ids = await ctx.selection.lock_ids()
    created = await repository.annotations_from_predictions(
        ctx.session,
        project_id=ctx.project.id,
        task_ids=task_ids,
        model_version=version,
        threshold=threshold,
        user_id=ctx.user.id,
    )
    if created:
        await refresh_task_counters(ctx.session, [task_id for _, task_id in created])
        annotation_ids = [annotation_id for annotation_id, _ in created]
        await repository.record_created_events(ctx.session, project_payload(ctx.project), annotation_ids)
        await schedule_delivery(ctx.session, ctx.project.id)
    skipped = len(task_ids) - len(created)
    return {
        "processed_items": len(created),
        "detail": f"Created {len(created)} annotations, skipped {skipped}",
        "created": len(created),
        "skipped": skipped,
    }
