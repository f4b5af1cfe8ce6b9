"""The API <-> gateway-worker contract of the learning loop: event delivery and training.

gateway worker → API (service token):
- ``GET  /internal/backends/{id}/events?limit=`` → ``PendingEvents`` (the backend and its next events)
- ``POST /internal/backends/{id}/events/ack``   ``EventsAck`` → ``EventsAck`` (cursor after the call)
- ``POST /internal/backends/{id}/events/{event_id}/failed`` ``EventFailed`` → ``EventFailedOutcome``
  (one more failed attempt; ``parked`` when the API gave up on it and the queue moves on)
- ``POST /internal/train-jobs/{job_id}/start``  → ``TrainStart`` (or ``go=False``: nothing to do)
- ``POST /internal/train-jobs/{job_id}/finish`` ``TrainReport`` → ``TrainOutcome``

Redis keys of the per-backend delivery lock live here too, so every worker agrees on them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from shared.gateway_contract import BackendSpec, CheckBackendRequest, CheckBackendResult, WebhookResult


class PendingEvent(BaseModel):
    id: int
    action: str
    payload: dict[str, Any] = Field(description="The /webhook body, `action` and `project` included.")
    redrive: bool = Field(
        default=False, description="A parked event sent again on request: name it in the ack's `redelivered`."
    )


class PendingEvents(BaseModel):
    backend: BackendSpec
    events: list[PendingEvent] = Field(
        description="Re-driven events, then the events after the backend's cursor, in id order."
    )


class EventsAck(BaseModel):
    last_event_id: int = Field(
        ge=0, le=2**63 - 1, description="Every event up to this id reached the backend."
    )
    redelivered: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, max_length=1000, description="Re-driven events that reached the backend."
    )


class EventFailed(BaseModel):
    error: str = Field(max_length=2000, description="Why the attempt failed (the backend's answer).")
    status_code: int | None = Field(
        default=None, ge=100, le=599, description="The backend's HTTP status; none when it was not reached."
    )
    unsendable: bool = Field(
        default=False, description="The event can never be sent (not encodable): park it at once."
    )


class EventFailedOutcome(BaseModel):
    parked: bool = Field(description="The API gave up on the event: go on with the next ones.")
    attempts: int = Field(description="Failed attempts so far (0: the event was not waiting).")


class TrainStart(BaseModel):
    go: bool = Field(description="False when the job is no longer queued (done, cancelled, taken).")
    job_id: int
    backend: BackendSpec | None = None
    payload: dict[str, Any] = Field(default_factory=dict, description="The START_TRAINING body.")
    check: CheckBackendRequest | None = Field(
        default=None, description="The /health + /setup request to re-check the backend after training."
    )


class TrainReport(BaseModel):
    webhook: WebhookResult
    check: CheckBackendResult | None = Field(
        default=None, description="The re-check after a successful training call (new model version)."
    )


class TrainOutcome(BaseModel):
    job_status: str
    model_version: str = Field(description="The backend's model version after the report.")
    version_changed: bool
    repredict_job_id: int | None = None


def delivery_lock_key(backend_id: int) -> str:
    """Held by the one worker delivering this backend's events; others step aside."""
    return f"labelloop:deliver:lock:{backend_id}"


def delivery_again_key(backend_id: int) -> str:
    """Set by a delivery that found the lock taken: the holder must look for new events once more."""
    return f"labelloop:deliver:again:{backend_id}"


def delivery_job_id(backend_id: int, reason: str) -> str:
    """arq job id of a delivery: one per (backend, reason) waits in the queue at a time."""
    return f"deliver:{backend_id}:{reason}"


def train_job_id(job_id: int) -> str:
    return f"train:{job_id}"
