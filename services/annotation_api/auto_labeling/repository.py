"""Set-based SQL of auto-labeling: one INSERT … SELECT for the annotations, one for their events."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.outbox import ANNOTATION_CREATED
from services.annotation_api.tasks.repository import PARENT_PREDICTION

# Per selected task the newest prediction of the version (at or above the threshold), unless the task
# already has an annotation made from a prediction of that version: running the action twice, or on an
# overlapping selection, never labels a task twice.
_CREATE = text(
    """
    WITH chosen AS (
        SELECT DISTINCT ON (p.task_id) p.id, p.task_id, p.result
        FROM prediction p
        WHERE p.task_id = ANY(CAST(:tasks AS bigint[]))
          AND p.project_id = :project
          AND p.model_version = :version
          AND (CAST(:threshold AS double precision) IS NULL
               OR p.score >= CAST(:threshold AS double precision))
          AND NOT EXISTS (
              SELECT 1 FROM annotation a JOIN prediction pp ON pp.id = a.parent_prediction_id
              WHERE a.task_id = p.task_id AND pp.model_version = :version)
        ORDER BY p.task_id, p.id DESC
    )
    INSERT INTO annotation (task_id, project_id, result, completed_by_id, parent_prediction_id)
    SELECT task_id, :project, result, :user, id FROM chosen ORDER BY task_id
    RETURNING id, task_id
    """
)

# The same ANNOTATION_CREATED body the annotation endpoints write (see outbox.py), built in SQL.
_EVENTS = text(
    f"""
    INSERT INTO outbox_event (project_id, action, payload)
    SELECT a.project_id, CAST(:action AS text), jsonb_build_object(
        'action', CAST(:action AS text),
        'annotation', jsonb_build_object(
            'id', a.id, 'task', a.task_id, 'project', a.project_id, 'result', a.result,
            'was_cancelled', a.was_cancelled, 'ground_truth', a.ground_truth,
            'lead_time', a.lead_time, 'completed_by', a.completed_by_id,
            'parent_prediction', {PARENT_PREDICTION},
            'created_at', a.created_at, 'updated_at', a.updated_at),
        'task', jsonb_build_object(
            'id', t.id, 'project', t.project_id, 'data', t.data, 'meta', t.meta,
            'is_labeled', t.is_labeled, 'total_annotations', t.total_annotations,
            'cancelled_annotations', t.cancelled_annotations,
            'total_predictions', (SELECT count(*) FROM prediction tp WHERE tp.task_id = t.id),
            'created_at', t.created_at, 'updated_at', t.updated_at),
        'project', CAST(:project_json AS jsonb))
    FROM annotation a JOIN task t ON t.id = a.task_id
    WHERE a.id = ANY(CAST(:annotations AS bigint[]))
    ORDER BY a.id
    """
)


async def annotations_from_predictions(
    session: AsyncSession,
    *,
    project_id: int,
    task_ids: Sequence[int],
    model_version: str,
    threshold: float | None,
    user_id: int,
) -> list[tuple[int, int]]:
    """Insert the annotations (at most one per task); their (id, task id) in task order."""
    params = {
        "tasks": list(task_ids),
        "project": project_id,
        "version": model_version,
        "threshold": threshold,
        "user": user_id,
    }
    return [(row[0], row[1]) for row in await session.execute(_CREATE, params)]


async def record_created_events(
    session: AsyncSession, project_json: dict[str, object], annotation_ids: Sequence[int]
) -> None:
    params = {
        "action": ANNOTATION_CREATED,
        "project_json": orjson.dumps(project_json).decode(),
        "annotations": list(annotation_ids),
    }
    await session.execute(_EVENTS, params)
