"""Event delivery routes.

``/internal/backends/{id}/events``: gateway workers take a backend's pending events, acknowledge what
the backend accepted and report what it refused (service token only).

``/api/ml/{id}/events``: users see the events a backend refused or that cannot be sent (parked after
bounded attempts, while the rest of the queue moves on), and re-drive or drop them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.annotation_api.auth.dependencies import CurrentUser, service_caller
from services.annotation_api.db import SessionDep
from services.annotation_api.events import service, troubled
from services.annotation_api.events.schemas import EventState, RedriveOut, TroubledEventOut
from services.annotation_api.ids import BIGINT_MAX, MlBackendId
from services.annotation_api.routing import PrefixRouter
from shared.http import JsonResponse
from shared.learning_contract import EventFailed, EventFailedOutcome, EventsAck, PendingEvents

BackendId = Annotated[int, Path(ge=1, le=2**31 - 1)]
EventId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="Outbox event id.")]

internal = PrefixRouter(
    prefix="/internal/backends", tags=["internal"], dependencies=[Depends(service_caller)]
)


@internal.get("/{backend_id}/events", response_model=PendingEvents)
async def pending_events(
    backend_id: BackendId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_EVENTS_PER_CALL)] = 100,
) -> JsonResponse:
    """The backend (how to call it) and its next events: re-driven ones, then those after its cursor."""
    return JsonResponse(await service.pending_events(session, backend_id, limit))


@internal.post("/{backend_id}/events/ack", response_model=EventsAck)
async def acknowledge(backend_id: BackendId, body: EventsAck, session: SessionDep) -> EventsAck:
    """Every event up to ``last_event_id`` (and the re-driven ones named) reached the backend."""
    return await service.acknowledge(session, backend_id, body)


@internal.post("/{backend_id}/events/{event_id}/failed", response_model=EventFailedOutcome)
async def failed(
    backend_id: BackendId, event_id: EventId, body: EventFailed, request: Request, session: SessionDep
) -> EventFailedOutcome:
    """One more failed attempt at the event; ``parked``: the API gave up on it, go on with the next."""
    return await service.record_failure(session, request.app.state.settings, backend_id, event_id, body)


public = PrefixRouter(prefix="/api/ml", tags=["ml backends"])


@public.get("/{backend_id}/events", response_model=list[TroubledEventOut])
async def troubled_events(
    backend_id: MlBackendId,
    session: SessionDep,
    _: CurrentUser,
    state: Annotated[
        EventState | None, Query(description="Only events in this state (default: every state).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, oldest first.")] = 100,
) -> list[TroubledEventOut]:
    """Annotation events this backend refused or that cannot be sent: the one being retried
    (``failing``), those given up on (``parked``, the queue went on without them) and those re-driven."""
    return await troubled.list_events(session, backend_id, state, limit)


@public.post("/{backend_id}/events/redrive", response_model=RedriveOut)
async def redrive_all(backend_id: MlBackendId, session: SessionDep, _: CurrentUser) -> RedriveOut:
    """Send every parked event again (before the backend's newer events), e.g. after fixing the backend."""
    return await troubled.redrive(session, backend_id, None)


@public.post("/{backend_id}/events/{event_id:int}/redrive", response_model=RedriveOut)
async def redrive_one(
    backend_id: MlBackendId, event_id: EventId, session: SessionDep, _: CurrentUser
) -> RedriveOut:
    """Send one parked event again; 404 when it is not parked for this backend."""
    return await troubled.redrive(session, backend_id, event_id)


@public.delete("/{backend_id}/events/{event_id:int}", status_code=204)
async def drop_parked(
    backend_id: MlBackendId, event_id: EventId, session: SessionDep, _: CurrentUser
) -> Response:
    """Give up on a parked event for good; 404 when it is not parked for this backend."""
    await troubled.drop(session, backend_id, event_id)
    return Response(status_code=204)


router = APIRouter()
router.include_router(internal)
router.include_router(public)
