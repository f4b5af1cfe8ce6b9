"""``/internal/backends/{id}/events``: gateway workers take a backend's pending events and acknowledge
what the backend accepted (service token only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from services.annotation_api.auth.dependencies import service_caller
from services.annotation_api.db import SessionDep
from services.annotation_api.events import service
from shared.http import JsonResponse
from shared.learning_contract import EventsAck, PendingEvents

BackendId = Annotated[int, Path(ge=1, le=2**31 - 1)]

router = APIRouter(prefix="/internal/backends", tags=["internal"], dependencies=[Depends(service_caller)])


@router.get("/{backend_id}/events", response_model=PendingEvents)
async def pending_events(
    backend_id: BackendId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_EVENTS_PER_CALL)] = 100,
) -> JsonResponse:
    """The backend (how to call it) and its next events after its cursor, oldest first."""
    return JsonResponse(await service.pending_events(session, backend_id, limit))


@router.post("/{backend_id}/events/ack", response_model=EventsAck)
async def acknowledge(backend_id: BackendId, body: EventsAck, session: SessionDep) -> EventsAck:
    """Every event up to ``last_event_id`` reached the backend: move its cursor there."""
    return await service.acknowledge(session, backend_id, body)
