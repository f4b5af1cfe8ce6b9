"""Model-version bodies (Label Studio's shapes)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from services.annotation_api.predictions.schemas import MAX_VERSION_LENGTH


class StaticVersion(BaseModel):
    model_version: str
    count: int
    latest: datetime = Field(description="When the newest prediction of this version was made.")


class LiveBackend(BaseModel):
    id: int
    title: str
    url: str
    model_version: str
    state: str


class ExtendedVersions(BaseModel):
    static: list[StaticVersion]
    live: list[LiveBackend]


class VersionToDelete(BaseModel):
    model_version: str = Field(max_length=MAX_VERSION_LENGTH)


class DeletedPredictions(BaseModel):
    """Label Studio's answer. A large project's deleting runs as a job: then ``deleted_predictions`` is 0
    and the job's ``result.processed_items`` is the count once it is done."""

    deleted_predictions: int
    """Deleted before answering."""
    detail: str
    job_id: int
