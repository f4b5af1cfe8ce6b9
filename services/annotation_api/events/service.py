"""Event delivery, API side: hand a worker a backend's next events, move its cursor, ring the doorbell.

Postgres is the record (outbox rows plus one cursor per backend); Redis only says "backend N may have
events". Annotation writes ring it after their transaction commits, and the delivery loop rings it for
any backend still behind, so a lost message or a dead backend delays events but never loses them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from arq import ArqRedis
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.db import after_commit
from services.annotation_api.errors import NotFound
from services.annotation_api.events import repository
from services.annotation_api.ml_backends.monitor import Rechecks
from services.annotation_api.ml_backends.service import backend_spec
from services.annotation_api.models import MlBackend
from services.annotation_api.settings import ApiSettings
from shared.jobs import DELIVER_EVENTS
from shared.learning_contract import EventFailed, EventFailedOutcome, EventsAck, delivery_job_id
from shared.logging import carried_context

log = logging.getLogger(__name__)

MAX_EVENTS_PER_CALL = 500
_NOT_COUNTED = frozenset({401, 408, 429})
_SCHEDULED_KEY = "labelloop_events_scheduled"


async def pending_events(session: AsyncSession, backend_id: int, limit: int) -> dict[str, Any]:
    """``PendingEvents`` as JSON, the stored payloads embedded as they are (never parsed here)."""
    backend = await session.get(MlBackend, backend_id)
    if backend is None:
        raise NotFound(f"ML backend {backend_id} not found.")
    rows = await repository.pending(session, backend_id, backend.project_id, backend.last_event_id, limit)
    return {
        "backend": backend_spec(backend).model_dump(mode="json"),
        "events": [
            {"id": event_id, "action": action, "payload": orjson.Fragment(payload), "redrive": redrive}
            for event_id, action, payload, redrive in rows
        ],
    }


async def acknowledge(session: AsyncSession, backend_id: int, ack: EventsAck) -> EventsAck:
    """Move the cursor; once that commits, re-check the backend, since online learning from the events
    it just accepted may have given it a new model version."""
    cursor = await repository.advance_cursor(session, backend_id, ack.last_event_id, ack.redelivered)
    if cursor is None:
        raise NotFound(f"ML backend {backend_id} not found.")
    app = _app(session)
    rechecks = getattr(app.state, "rechecks", None) if app is not None else None
    if isinstance(rechecks, Rechecks):

        async def recheck() -> None:
            rechecks.request(backend_id)

        after_commit(session, recheck)
    return EventsAck(last_event_id=cursor)


async def record_failure(
    session: AsyncSession, settings: ApiSettings, backend_id: int, event_id: int, failure: EventFailed
) -> EventFailedOutcome:
    """Count a failed attempt the event itself may be to blame for; park it once the attempts run out.

    An unreachable backend (no status), bad credentials (401) and "later" answers (408, 429) say
    nothing about the event: they are not counted, and the events wait as they always did.
    """
    if not failure.unsendable and (failure.status_code is None or failure.status_code in _NOT_COUNTED):
        return EventFailedOutcome(parked=False, attempts=0)
    attempts = await repository.record_failure(session, backend_id, event_id, failure.error)
    if attempts is None:
        return EventFailedOutcome(parked=False, attempts=0)
    if failure.unsendable or attempts >= settings.event_max_attempts:
        await repository.park(session, backend_id, event_id)
        log.warning(
            "backend %s: event %s parked after %d attempts: %s", backend_id, event_id, attempts, failure.error
        )
        return EventFailedOutcome(parked=True, attempts=attempts)
    return EventFailedOutcome(parked=False, attempts=attempts)


async def enqueue_deliveries(pool: ArqRedis, backend_ids: Sequence[int], reason: str) -> None:
    """One ``deliver_events`` per backend; a job with the same (backend, reason) already waiting absorbs it."""
    for backend_id in backend_ids:
        await pool.enqueue_job(
            DELIVER_EVENTS, backend_id, carried_context(), _job_id=delivery_job_id(backend_id, reason)
        )


def _app(session: AsyncSession) -> FastAPI | None:
    app = session.info.get("app")
    return app if isinstance(app, FastAPI) else None


async def schedule_delivery(session: AsyncSession, project_id: int) -> None:
    """After this transaction commits, ask workers to deliver the project's new events.

    Called where events are written (``outbox``). Without a request's app (scripts, background
    loops) nothing is enqueued here and the delivery loop picks the events up on its next round.
    """
    app = _app(session)
    scheduled: set[int] = session.info.setdefault(_SCHEDULED_KEY, set())
    if app is None or project_id in scheduled:
        return
    scheduled.add(project_id)
    backend_ids = await repository.project_backends(session, project_id)
    if not backend_ids:
        return
    ring_after_commit(session, backend_ids)


def ring_after_commit(session: AsyncSession, backend_ids: Sequence[int]) -> None:
    """Once the transaction commits, ask workers to deliver these backends' events."""
    app = _app(session)
    if app is None:
        return
    # A unique job per write: a delivery already running must not swallow it (the worker's lock makes
    # the extra job a no-op when the running one will see these events anyway).
    reason = uuid.uuid4().hex

    async def ring() -> None:
        queue = getattr(app.state, "chunk_queue", None)
        if queue is None:
            return
        await enqueue_deliveries(await queue.pool(), backend_ids, reason)

    after_commit(session, ring)
