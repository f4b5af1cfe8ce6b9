"""Stream a project's tasks, with annotations and predictions, as one JSON array in constant memory.

The stream runs after the request's session has closed, on its own pooled connection, inside one
read-only REPEATABLE READ transaction (a consistent snapshot however long the download takes), reading
keyset batches of tasks by (project_id, id) and embedding each batch's annotations and predictions with
one query each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from services.annotation_api.db import raw_connection
from services.annotation_api.errors import BadRequest
from services.annotation_api.tasks.repository import (
    TASK_COLUMNS,
    embed_annotations_and_predictions,
    task_json,
)

EXPORT_TYPES = frozenset({"JSON"})
BATCH_SIZE = 1000

_BATCH = (
    f"SELECT {TASK_COLUMNS} FROM task t WHERE t.project_id = $1 AND t.id > $2 "
    "ORDER BY t.project_id, t.id LIMIT $3"
)


def check_export_type(export_type: str) -> None:
    if export_type.upper() not in EXPORT_TYPES:
        raise BadRequest(
            f"exportType {export_type!r} is not supported; use one of {sorted(EXPORT_TYPES)}.",
            field="exportType",
        )


async def stream_project_json(
    engine: AsyncEngine, project_id: int, batch_size: int = BATCH_SIZE
) -> AsyncIterator[bytes]:
    async with engine.connect() as connection:
        conn = await raw_connection(connection)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield b"["
            after = 0
            separator = b""
            while True:
                rows = await conn.fetch(_BATCH, project_id, after, batch_size)
                if not rows:
                    break
                tasks = [task_json(row) for row in rows]
                await embed_annotations_and_predictions(conn, tasks)
                yield separator + b",".join(orjson.dumps(task) for task in tasks)
                separator = b","
                after = rows[-1][0]
            yield b"]"
