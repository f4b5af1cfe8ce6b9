"""The annotation event outbox: events are rows written in the same transaction as the change.

An annotation saved and its event can never disagree: both commit or neither does. Delivery to ML
backends (``/webhook``) happens later from these rows, each backend keeping its own cursor
(``ml_backend.last_event_id``), so a slow or failing backend never blocks or loses annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import orjson
from sqlalchemy import bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import BigInteger

from services.annotation_api.events.service import schedule_delivery
from services.annotation_api.models import OutboxEvent, Project, Task

ANNOTATION_CREATED: Final = "ANNOTATION_CREATED"
ANNOTATION_UPDATED: Final = "ANNOTATION_UPDATED"
ANNOTATIONS_DELETED: Final = "ANNOTATIONS_DELETED"

#: A bulk delete becomes events of at most this many ids, so one event stays a small webhook body.
DELETED_IDS_PER_EVENT: Final = 1000


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def project_payload(project: Project) -> dict[str, Any]:
    """The project as backends read it in events: the id and label config are what they use."""
    return {
        "id": project.id,
        "title": project.title,
        "label_config": project.label_config,
        "model_version": project.model_version,
        "created_at": _iso(project.created_at),
    }


def task_payload(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "project": task.project_id,
        "data": task.data,
        "meta": task.meta,
        "is_labeled": task.is_labeled,
        "total_annotations": task.total_annotations,
        "cancelled_annotations": task.cancelled_annotations,
        "total_predictions": task.total_predictions,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
    }


async def record_event(session: AsyncSession, project: Project, action: str, payload: dict[str, Any]) -> None:
    """Add one event for ``project``; ``action`` and ``project`` are filled into the payload here."""
    body = {"action": action, **payload, "project": project_payload(project)}
    await session.execute(insert(OutboxEvent).values(project_id=project.id, action=action, payload=body))
    await schedule_delivery(session, project.id)


async def record_annotation_event(
    session: AsyncSession,
    project: Project,
    action: str,
    annotation: dict[str, Any],
    task: Task,
) -> None:
    """ANNOTATION_CREATED / ANNOTATION_UPDATED: the annotation with its task and project."""
    await record_event(session, project, action, {"annotation": annotation, "task": task_payload(task)})


async def record_annotations_deleted(
    session: AsyncSession, project: Project, annotation_ids: Sequence[int]
) -> None:
    """ANNOTATIONS_DELETED for any number of ids, in one statement, split into bounded events."""
    if not annotation_ids:
        return
    statement = text(
        """
        INSERT INTO outbox_event (project_id, action, payload)
        SELECT :project_id, CAST(:action AS text),
               jsonb_build_object(
                   'action', CAST(:action AS text),
                   'annotations', jsonb_agg(jsonb_build_object('id', ids.id) ORDER BY ids.id),
                   'project', CAST(:project AS jsonb))
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / CAST(:per_event AS bigint) AS batch
              FROM unnest(:ids) AS id) AS ids
        GROUP BY ids.batch
        ORDER BY ids.batch
        """
    ).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))
    await session.execute(
        statement,
        {
            "project_id": project.id,
            "action": ANNOTATIONS_DELETED,
            "project": orjson.dumps(project_payload(project)).decode(),
            "per_event": DELETED_IDS_PER_EVENT,
            "ids": list(annotation_ids),
        },
    )
    await schedule_delivery(session, project.id)
