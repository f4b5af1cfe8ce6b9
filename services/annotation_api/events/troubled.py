"""A backend's events in trouble, as users see them: list the parked ones, re-drive or drop them.

A parked event stays in the outbox (trimming skips it) until it is re-driven and delivered, or dropped.
Re-driven events are sent before the backend's newer events, in id order; the rest of the queue kept
its order meanwhile.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.errors import NotFound
from services.annotation_api.events import repository
from services.annotation_api.events.schemas import EventState, RedriveOut, TroubledEventOut
from services.annotation_api.events.service import ring_after_commit
from services.annotation_api.ml_backends.service import get_backend


def _payload(raw: str) -> dict[str, Any] | None:
    """The stored body, or None when it cannot be shown as JSON (why it could not be sent either)."""
    try:
        value = orjson.loads(raw)
        orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return value if isinstance(value, dict) else None


async def list_events(
    session: AsyncSession, backend_id: int, state: EventState | None, limit: int
) -> list[TroubledEventOut]:
    await get_backend(session, backend_id)
    rows = await repository.troubled(session, backend_id, None if state is None else state.value, limit)
    return [
        TroubledEventOut(
            id=event_id,
            action=action,
            state=EventState(row_state),
            attempts=attempts,
            last_error=last_error,
            first_failed_at=first_failed_at,
            last_failed_at=last_failed_at,
            parked_at=parked_at,
            payload=_payload(payload),
        )
        for event_id, action, row_state, attempts, last_error, first_failed_at, last_failed_at, parked_at, payload in rows
    ]


async def redrive(session: AsyncSession, backend_id: int, event_id: int | None) -> RedriveOut:
    """Parked → sent again (one event, or all when ``event_id`` is None); the worker is rung on commit."""
    await get_backend(session, backend_id)
    count = await repository.redrive(session, backend_id, event_id)
    if event_id is not None and count == 0:
        raise NotFound(f"Event {event_id} is not parked for ML backend {backend_id}.")
    if count:
        ring_after_commit(session, [backend_id])
    return RedriveOut(redriven=count)


async def drop(session: AsyncSession, backend_id: int, event_id: int) -> None:
    """Give up on a parked event for good (for this backend; others keep their own view of it)."""
    await get_backend(session, backend_id)
    if not await repository.drop_parked(session, backend_id, event_id):
        raise NotFound(f"Event {event_id} is not parked for ML backend {backend_id}.")
