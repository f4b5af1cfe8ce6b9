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

    model_config = ConfigDict(extra="ignore")

    result: list[dict[str, Any]] | None = Field(
        default=None, description="Regions; checked against the project's label config."
    )
    was_cancelled: bool | None = None
    ground_truth: bool | None = None
    lead_time: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    parent_prediction: RowId | None = Field(
        default=None, description="The prediction this annotation started from (same task)."
    )


class AnnotationOut(BaseModel):
    id: int
    task: int
    project: int
    result: list[Any]
    was_cancelled: bool
    ground_truth: bool
    lead_time: float | None
    completed_by: int | None
    parent_prediction: int | None
    created_at: datetime
    updated_at: datetime

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
            parent_prediction=row.parent_prediction_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
