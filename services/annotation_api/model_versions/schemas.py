"""Model-version bodies (Label Studio's shapes)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.annotation_api.predictions.schemas import MAX_VERSION_LENGTH


class StaticVersion(BaseModel):
    model_version: str = Field(description="A version some predictions carry.")
    count: int = Field(description="How many predictions carry it.")
    latest: datetime = Field(description="When the newest prediction of this version was made.")


class LiveBackend(BaseModel):
    id: int = Field(description="ML backend id.")
    title: str = Field(description="Its name.")
    url: str = Field(description="Its address.")
    model_version: str = Field(description="Its current version.")
    state: str = Field(description="CO (connected), DI (disconnected), ER (error), TR (training).")


class ExtendedVersions(BaseModel):
    static: list[StaticVersion] = Field(description="Versions with stored predictions.")
    live: list[LiveBackend] = Field(description="The project's ML backends and their versions.")


class VersionToDelete(BaseModel):
    model_config = ConfigDict(strict=True)

    model_version: str = Field(
        max_length=MAX_VERSION_LENGTH, description="The model version whose predictions are deleted."
    )


class DeletedPredictions(BaseModel):
    """Label Studio's answer. A large project's deleting runs as a job: then ``deleted_predictions`` is 0
    and the job's ``result.processed_items`` is the count once it is done."""

    deleted_predictions: int = Field(description="How many predictions were deleted before answering.")
    detail: str = Field(description="What happened, and the job that deletes the rest.")
    job_id: int = Field(description="The job deleting the predictions (``GET /api/jobs/{id}``).")
