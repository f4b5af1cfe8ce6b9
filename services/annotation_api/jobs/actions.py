"""The ``retrieve_tasks_predictions`` data manager action: bulk prediction of the selected tasks.

Unlike Label Studio (one synchronous ``/predict`` for the whole selection, first backend only), this
answers at once with one background job per backend (the named one, or every connected backend of the
project), each predicting with its own model version.
"""

from __future__ import annotations

from typing import Any

from services.annotation_api.data_manager.registry import ActionContext, action
from services.annotation_api.errors import BadRequest
from services.annotation_api.ids import INT_MAX
from services.annotation_api.jobs.schemas import PredictStarted
from services.annotation_api.jobs.service import prediction_backends, start_prediction_jobs


def _backend_ids(ctx: ActionContext) -> list[int] | None:
    """``ml_backend`` from the body (an id or a list of ids) or the query string; None means all."""
    raw: Any = ctx.body.get("ml_backend", ctx.request.query_params.get("ml_backend"))
    if raw is None:
        return None
    values = raw if isinstance(raw, list) else [raw]
    ids: list[int] = []
    for value in values:
        try:
            backend_id = int(value)
        except (TypeError, ValueError):
            backend_id = 0
        if isinstance(value, bool) or not 1 <= backend_id <= INT_MAX:
            raise BadRequest("ml_backend must be an ML backend id or a list of ids.", field="ml_backend")
        ids.append(backend_id)
    return ids or None


@action("retrieve_tasks_predictions", title="Retrieve predictions", order=90)
async def retrieve_tasks_predictions(ctx: ActionContext) -> dict[str, Any]:
    backends = await prediction_backends(ctx.session, ctx.project.id, _backend_ids(ctx))
    jobs = await start_prediction_jobs(
        ctx.session,
        project_id=ctx.project.id,
        selection=ctx.selection,
        estimate=await ctx.selection.size(ctx.project.task_number),
        backends=backends,
        chunk_size=ctx.request.app.state.settings.chunk_size,
        summary=ctx.selection.summary("retrieve_tasks_predictions"),
    )
    return PredictStarted.of(jobs).model_dump()
