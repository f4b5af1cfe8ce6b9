"""SQL for task pages and bulk writes, run on the session's asyncpg connection.

Hot paths (import, task pages, export) skip the ORM: rows come back as tuples, JSONB columns are read as
text and embedded into the response unparsed (``orjson.Fragment``), and bulk writes use COPY.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session, inside the session's transaction.

    SQLAlchemy's asyncpg adapter opens the database transaction lazily on its first statement, so one
    trivial statement runs first: raw writes must never land outside the request's transaction.
    """
    await session.execute(text("SELECT 1"))
    return await raw_connection(await session.connection())


async def raw_connection(connection: AsyncConnection) -> asyncpg.Connection:
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, asyncpg.Connection)
    return driver


TASK_COLUMNS = (
    "t.id, t.project_id, t.data::text, t.meta::text, t.is_labeled, t.total_annotations, "
    "t.cancelled_annotations, t.total_predictions, t.created_at, t.updated_at"
)

_ANNOTATIONS = """
    SELECT id, task_id, project_id, result::text, was_cancelled, ground_truth, lead_time,
           completed_by_id, parent_prediction_id, created_at, updated_at
    FROM annotation WHERE task_id = ANY($1::bigint[]) ORDER BY task_id, id
"""

_PREDICTIONS = """
    SELECT id, task_id, project_id, result::text, score, model_version, ml_backend_id, created_at, updated_at
    FROM prediction WHERE task_id = ANY($1::bigint[]) {version_filter} ORDER BY task_id, id
"""


def task_json(row: Sequence[Any]) -> dict[str, Any]:
    """Label Studio's task fields from a TASK_COLUMNS row; JSON columns stay pre-serialised."""
    return {
        "id": row[0],
        "project": row[1],
        "data": orjson.Fragment(row[2]),
        "meta": orjson.Fragment(row[3]),
        "is_labeled": row[4],
        "total_annotations": row[5],
        "cancelled_annotations": row[6],
        "total_predictions": row[7],
        "created_at": row[8],
        "updated_at": row[9],
    }


def annotation_json(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "task": row[1],
        "project": row[2],
        "result": orjson.Fragment(row[3]),
        "was_cancelled": row[4],
        "ground_truth": row[5],
        "lead_time": row[6],
        "completed_by": row[7],
        "parent_prediction": row[8],
        "created_at": row[9],
        "updated_at": row[10],
    }


def prediction_json(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "task": row[1],
        "project": row[2],
        "result": orjson.Fragment(row[3]),
        "score": row[4],
        "model_version": row[5],
        "ml_backend": row[6],
        "created_at": row[7],
        "updated_at": row[8],
    }


async def embed_annotations_and_predictions(
    conn: asyncpg.Connection, tasks: list[dict[str, Any]], *, model_version: str | None = None
) -> None:
    """Attach ``annotations`` and ``predictions`` to a page of tasks: one query each, never per task.

    ``model_version`` (when given) keeps only that version's predictions: what annotators see.
    """
    by_id: dict[int, dict[str, Any]] = {}
    for task in tasks:
        task["annotations"] = []
        task["predictions"] = []
        by_id[task["id"]] = task
    if not by_id:
        return
    ids = list(by_id)
    for row in await conn.fetch(_ANNOTATIONS, ids):
        by_id[row[1]]["annotations"].append(annotation_json(row))
    if model_version is None:
        rows = await conn.fetch(_PREDICTIONS.format(version_filter=""), ids)
    else:
        rows = await conn.fetch(
            _PREDICTIONS.format(version_filter="AND model_version = $2"), ids, model_version
        )
    for row in rows:
        by_id[row[1]]["predictions"].append(prediction_json(row))
