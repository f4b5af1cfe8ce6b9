"""Public view of a backend's events in trouble (failing, parked, re-driven)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class EventState(StrEnum):
    FAILING = "failing"
    PARKED = "parked"
    REDRIVE = "redrive"


class TroubledEventOut(BaseModel):
    id: int = Field(description="Outbox event id (events of a project are numbered in order).")
    action: str = Field(description="ANNOTATION_CREATED, ANNOTATION_UPDATED or ANNOTATIONS_DELETED.")
    state: EventState = Field(
        description="`failing`: the head of the backend's queue, retried; `parked`: given up on after "
        "`LABELLOOP_EVENT_MAX_ATTEMPTS` (or at once when it cannot be encoded), later events go on; "
        "`redrive`: parked, to be sent again before the backend's newer events."
    )
    attempts: int = Field(description="Failed attempts counted (since the last re-drive).")
    last_error: str = Field(description="Why the last attempt failed.")
    first_failed_at: datetime = Field(description="When the first counted attempt failed.")
    last_failed_at: datetime = Field(description="When the last counted attempt failed.")
    parked_at: datetime | None = Field(description="When it was parked; null unless parked.")
    payload: dict[str, Any] | None = Field(
        description="The /webhook body as stored; null when it cannot be written as JSON (e.g. too deep)."
    )


class RedriveOut(BaseModel):
    redriven: int = Field(description="Parked events now queued to be sent again.")
