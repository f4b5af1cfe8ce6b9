"""Annotation bodies with Label Studio's field names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.annotation_api.ids import RowId
from services.annotation_api.models import Annotation


class AnnotationIn(BaseModel):
    """Create or partial update. The SDK sends many fields we do not model (unique_id, bulk_created,
    …) and sends explicit nulls for some; both are accepted, a null meaning "not given"."""

    model_config = ConfigDict(extra="ignore", strict=True)

    result: list[dict[str, Any]] | None = Field(
        default=None, description="Regions; checked against the project's label config."
    )
    was_cancelled: bool | None = Field(
        default=None, description="The annotator skipped the task (a cancelled annotation does not label it)."
    )
    ground_truth: bool | None = Field(default=None, description="Mark the annotation as ground truth.")
    lead_time: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Seconds the annotator spent on it (0 or more)."
    )
    parent_prediction: RowId | None = Field(
        default=None, description="The prediction this annotation started from (same task)."
    )


class AnnotationOut(BaseModel):
    id: int = Field(description="Annotation id.")
    task: int = Field(description="Its task.")
    project: int = Field(description="Its project.")
    result: list[Any] = Field(description="Regions, in Label Studio's result format.")
    was_cancelled: bool = Field(description="The annotator skipped the task.")
    ground_truth: bool = Field(description="Marked as ground truth.")
    lead_time: float | None = Field(description="Seconds the annotator spent, if sent.")
    completed_by: int | None = Field(description="The user who made it.")
    parent_prediction: int | None = Field(description="The prediction it started from, if any.")
    created_at: datetime = Field(description="Creation time.")
    updated_at: datetime = Field(description="Last change.")

    @classmethod
    def of(cls, row: Annotation) -> AnnotationOut:
        return cls(
            id=row.id,
            task=row.task_id,
            project=row.project_id,
            result=row.result,
            was_cancelled=row.was_cancelled,
            ground_truth=row.ground_truth,
            lead_time=row.lead_time,
            completed_by=row.completed_by_id,
            parent_prediction=row.parent_prediction,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
