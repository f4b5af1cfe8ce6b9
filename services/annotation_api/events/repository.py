"""SQL of event delivery: a backend's pending events are the project's outbox rows after its cursor.

Every query walks ``ix_outbox_event_project_id_id`` from the cursor, so the cost is the events returned,
never the size of the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

# Re-driven events (behind the cursor) first, then the events after the cursor but parked ones (the
# cursor moved past them when they were parked; the check only guards that). Each part walks an index;
# ``redrive`` tells the worker to name the event in its ack.
_PENDING = text(
    """
    (SELECT e.id, e.action, e.payload::text, true AS redrive
     FROM event_failure f JOIN outbox_event e ON e.id = f.event_id
     WHERE f.ml_backend_id = :backend AND f.state = 'redrive'
     ORDER BY e.id LIMIT :limit)
    UNION ALL
    (SELECT e.id, e.action, e.payload::text, false FROM outbox_event e
     WHERE e.project_id = :project AND e.id > :cursor
       AND NOT EXISTS (SELECT 1 FROM event_failure p
                       WHERE p.ml_backend_id = :backend AND p.event_id = e.id AND p.state = 'parked')
     ORDER BY e.id LIMIT :limit)
    ORDER BY 1 LIMIT :limit
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

# Delivered at last: head events the cursor passed and the re-driven events the worker names.
_CLEARED = text(
    """
    DELETE FROM event_failure
    WHERE ml_backend_id = :backend
      AND ((state = 'failing' AND event_id <= :cursor) OR (state = 'redrive' AND event_id = ANY(:redelivered)))
    """
).bindparams(bindparam("redelivered", type_=ARRAY(BigInteger)))

# One more failed attempt at an event the backend is waiting for: its queue's head (after the cursor)
# or a re-driven one. Anything else (already delivered, parked, another project's) changes nothing.
_FAILED = text(
    """
    INSERT INTO event_failure AS f (ml_backend_id, event_id, state, attempts, last_error)
    SELECT b.id, e.id, 'failing', 1, :error
    FROM ml_backend b JOIN outbox_event e ON e.project_id = b.project_id AND e.id = :event
    WHERE b.id = :backend
      AND (e.id > b.last_event_id OR EXISTS (
          SELECT 1 FROM event_failure r
          WHERE r.ml_backend_id = b.id AND r.event_id = e.id AND r.state = 'redrive'))
    ON CONFLICT (ml_backend_id, event_id) DO UPDATE
    SET attempts = f.attempts + 1, last_error = excluded.last_error, last_failed_at = now()
    WHERE f.state <> 'parked'
    RETURNING f.attempts
    """
)

_PARK = text(
    """
    UPDATE event_failure SET state = 'parked', parked_at = now()
    WHERE ml_backend_id = :backend AND event_id = :event
    """
)

# A parked head moves the cursor past it, but only over events already delivered or parked.
_SKIP_PARKED = text(
    """
    UPDATE ml_backend b SET last_event_id = :event
    WHERE b.id = :backend AND b.last_event_id < :event
      AND NOT EXISTS (
          SELECT 1 FROM outbox_event e
          WHERE e.project_id = b.project_id AND e.id > b.last_event_id AND e.id < :event
            AND NOT EXISTS (SELECT 1 FROM event_failure p
                            WHERE p.ml_backend_id = b.id AND p.event_id = e.id AND p.state = 'parked'))
    """
)

_TROUBLE = text(
    """
    SELECT f.event_id, e.action, f.state, f.attempts, f.last_error, f.first_failed_at, f.last_failed_at,
           f.parked_at, e.payload::text
    FROM event_failure f JOIN outbox_event e ON e.id = f.event_id
    WHERE f.ml_backend_id = :backend AND (CAST(:state AS text) IS NULL OR f.state = :state)
    ORDER BY f.event_id LIMIT :limit
    """
)

_REDRIVE = text(
    """
    UPDATE event_failure SET state = 'redrive', attempts = 0, parked_at = NULL
    WHERE ml_backend_id = :backend AND state = 'parked'
      AND (CAST(:event AS bigint) IS NULL OR event_id = :event)
    """
)

_DROP_PARKED = text(
    "DELETE FROM event_failure WHERE ml_backend_id = :backend AND event_id = :event AND state = 'parked'"
)

_BACKLOG = text(
    """
    SELECT b.id FROM ml_backend b
    WHERE EXISTS (
        SELECT 1 FROM outbox_event e WHERE e.project_id = b.project_id AND e.id > b.last_event_id)
       OR EXISTS (SELECT 1 FROM event_failure f WHERE f.ml_backend_id = b.id AND f.state = 'redrive')
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
      AND NOT EXISTS (SELECT 1 FROM event_failure f WHERE f.event_id = e.id)
    """
)


async def pending(
    session: AsyncSession, backend_id: int, project_id: int, cursor: int, limit: int
) -> Sequence[tuple[int, str, str, bool]]:
    """(id, action, payload JSON, re-driven) of the backend's next events, oldest first."""
    params = {"backend": backend_id, "project": project_id, "cursor": cursor, "limit": limit}
    return [(row[0], row[1], row[2], row[3]) for row in await session.execute(_PENDING, params)]


async def advance_cursor(
    session: AsyncSession, backend_id: int, event_id: int, redelivered: Sequence[int] = ()
) -> int | None:
    """Move the cursor to ``event_id`` (if forward) and forget the failures of what was delivered; the
    cursor after, None if the backend is gone."""
    await session.execute(_ACK, {"backend": backend_id, "event": event_id})
    cursor: int | None = (await session.execute(_CURSOR, {"backend": backend_id})).scalar_one_or_none()
    if cursor is not None:
        params = {"backend": backend_id, "cursor": cursor, "redelivered": list(redelivered)}
        await session.execute(_CLEARED, params)
    return cursor


async def record_failure(session: AsyncSession, backend_id: int, event_id: int, error: str) -> int | None:
    """Count one failed attempt; the attempts so far, None if the event is not waiting for the backend."""
    params = {"backend": backend_id, "event": event_id, "error": error}
    attempts: int | None = (await session.execute(_FAILED, params)).scalar_one_or_none()
    return attempts


async def park(session: AsyncSession, backend_id: int, event_id: int) -> None:
    """Give up on the event for now: parked, and the backend's queue moves past it."""
    params = {"backend": backend_id, "event": event_id}
    await session.execute(_PARK, params)
    await session.execute(_SKIP_PARKED, params)


async def troubled(
    session: AsyncSession, backend_id: int, state: str | None, limit: int
) -> Sequence[tuple[Any, ...]]:
    params = {"backend": backend_id, "state": state, "limit": limit}
    return [tuple(row) for row in await session.execute(_TROUBLE, params)]


async def redrive(session: AsyncSession, backend_id: int, event_id: int | None) -> int:
    """Parked → re-driven (sent again before the backend's newer events); how many."""
    result = await session.execute(_REDRIVE, {"backend": backend_id, "event": event_id})
    return int(getattr(result, "rowcount", 0) or 0)


async def drop_parked(session: AsyncSession, backend_id: int, event_id: int) -> bool:
    result = await session.execute(_DROP_PARKED, {"backend": backend_id, "event": event_id})
    return bool(getattr(result, "rowcount", 0))


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
