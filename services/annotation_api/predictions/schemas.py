"""Prediction bodies with Label Studio's field names."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from services.annotation_api.ids import RowId, SerialId

#: What a prediction without a model version is filed under (Label Studio's convention).
UNDEFINED_VERSION: Final = "undefined"
MAX_VERSION_LENGTH: Final = 255

ModelVersion = Field(
    default=None,
    max_length=MAX_VERSION_LENGTH,
    description=f"The model version that made it, up to {MAX_VERSION_LENGTH} characters; "
    f"empty, or missing on create and import: {UNDEFINED_VERSION!r}.",
)
Score = Field(default=None, allow_inf_nan=False, description="Finite number or null.")


class _Input(BaseModel):
    # The SDK sends fields we do not model (cluster, mislabeling, neighbors, model_run, …).
    model_config = ConfigDict(extra="ignore", strict=True)


class PredictionCreate(_Input):
    task: RowId = Field(description="The task it predicts (task id).")
    result: list[dict[str, Any]] = Field(description="Regions; checked against the label config.")
    score: float | None = Score
    model_version: str | None = ModelVersion
    project: SerialId | None = Field(default=None, description="If given, must be the task's project.")


class PredictionUpdate(_Input):
    """Partial update; a prediction stays on its task."""

    result: list[dict[str, Any]] | None = Field(
        default=None, description="Regions; checked against the label config."
    )
    score: float | None = Score
    model_version: str | None = ModelVersion
    task: RowId | None = Field(default=None, description="If given, must be the prediction's own task.")


class PredictionImportItem(_Input):
    task: RowId = Field(description="The task it predicts (task id, in this project).")
    result: list[dict[str, Any]] = Field(description="Regions; checked against the label config.")
    score: float | None = Score
    model_version: str | None = ModelVersion


class PredictionsImported(BaseModel):
    created: int = Field(description="Predictions created.")


class PredictionOut(BaseModel):
    id: int = Field(description="Prediction id.")
    task: int = Field(description="Its task.")
    project: int = Field(description="Its project.")
    result: list[Any] = Field(description="Regions, in Label Studio's result format.")
    score: float | None = Field(description="The model's confidence, 0 to 1, if given.")
    model_version: str = Field(description="The model version that made it.")
    ml_backend: int | None = Field(
        description="The backend that made it (null if imported or the backend was deleted)."
    )
    job: int | None = Field(description="The bulk job that stored it, if any.")
    created_at: datetime = Field(description="Creation time.")
    updated_at: datetime = Field(description="Last change.")
