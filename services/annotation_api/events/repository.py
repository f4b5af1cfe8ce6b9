"""SQL of event delivery: a backend's pending events are the project's outbox rows after its cursor.

Every query walks ``ix_outbox_event_project_id_id`` from the cursor, so the cost is the events returned,
never the size of the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_PENDING = text(
    """
    SELECT e.id, e.action, e.payload::text FROM outbox_event e
    WHERE e.project_id = :project AND e.id > :cursor
    ORDER BY e.id LIMIT :limit
    """
)

# The cursor only moves forward and never past an event of the project, so a stale or bogus ack
# can neither replay nor skip anything.
_ACK = text(
    """
    UPDATE ml_backend b SET last_event_id = :event
    WHERE b.id = :backend AND b.last_event_id < :event
      AND EXISTS (SELECT 1 FROM outbox_event e WHERE e.project_id = b.project_id AND e.id = :event)
    """
)

_CURSOR = text("SELECT last_event_id FROM ml_backend WHERE id = :backend")

_BACKLOG = text(
    """
    SELECT b.id FROM ml_backend b
    WHERE EXISTS (
        SELECT 1 FROM outbox_event e WHERE e.project_id = b.project_id AND e.id > b.last_event_id)
    ORDER BY b.id LIMIT :limit
    """
)

_PROJECT_BACKENDS = text("SELECT id FROM ml_backend WHERE project_id = :project ORDER BY id")

_LATEST = text("SELECT COALESCE(max(id), 0) FROM outbox_event WHERE project_id = :project")

# Rows every backend of their project has received, and rows of projects without backends (a backend
# connected later starts after them), older than the retention so a lagging replica of the view is safe.
_PRUNE = text(
    """
    DELETE FROM outbox_event e
    WHERE e.created_at < now() - make_interval(secs => :retention)
      AND e.id <= COALESCE(
          (SELECT min(b.last_event_id) FROM ml_backend b WHERE b.project_id = e.project_id),
          e.id)
    """
)


async def pending(
    session: AsyncSession, project_id: int, cursor: int, limit: int
) -> Sequence[tuple[int, str, str]]:
    params = {"project": project_id, "cursor": cursor, "limit": limit}
    return [(row[0], row[1], row[2]) for row in await session.execute(_PENDING, params)]


async def advance_cursor(session: AsyncSession, backend_id: int, event_id: int) -> int | None:
    """Move the cursor to ``event_id`` (if forward); the cursor after, None if the backend is gone."""
    await session.execute(_ACK, {"backend": backend_id, "event": event_id})
    cursor: int | None = (await session.execute(_CURSOR, {"backend": backend_id})).scalar_one_or_none()
    return cursor


async def backlog(session: AsyncSession, limit: int) -> list[int]:
    return list((await session.execute(_BACKLOG, {"limit": limit})).scalars())


async def project_backends(session: AsyncSession, project_id: int) -> list[int]:
    return list((await session.execute(_PROJECT_BACKENDS, {"project": project_id})).scalars())


async def latest_event_id(session: AsyncSession, project_id: int) -> int:
    """Where a newly connected backend's cursor starts: after every event already written (as in Label
    Studio, a backend learns from annotations made while it is connected, not the whole history)."""
    latest: int = (await session.execute(_LATEST, {"project": project_id})).scalar_one()
    return latest


async def prune(session: AsyncSession, retention_s: float) -> int:
    result = await session.execute(_PRUNE, {"retention": retention_s})
    return int(getattr(result, "rowcount", 0) or 0)
