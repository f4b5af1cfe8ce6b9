"""Task bodies and the task page, with Label Studio's field names.

Pages are rendered straight from rows with orjson (see tasks.repository); these models document the
shape in OpenAPI and validate the small bodies of single-task writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from shared.json_types import JsonInt

BIGINT_MAX: Final = 2**63 - 1
INT_MAX: Final = 2**31 - 1

TaskId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="Task id.")]
Ordering = Literal["id", "-id", "prediction_score", "-prediction_score"]
Fields = Literal["all", "task_only"]


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    project: JsonInt = Field(ge=1, le=INT_MAX, description="The project the task belongs to (project id).")
    data: dict[str, Any] = Field(
        description="The task's data: keys the label config refers to as $key (each one it reads must be "
        "there)."
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="Free-form metadata.")


class TaskUpdate(BaseModel):
    """Partial update: only the fields present change."""

    model_config = ConfigDict(extra="ignore", strict=True)

    data: dict[str, Any] = Field(
        default_factory=dict,
        description="Replaces the task's data: keys the label config refers to as $key (each one it reads "
        "must be there).",
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="Replaces the task's metadata.")


class TaskOut(BaseModel):
    id: int = Field(description="Task id.")
    project: int = Field(description="Its project.")
    data: dict[str, Any] = Field(description="The task's data (keys the label config refers to as $key).")
    meta: dict[str, Any] = Field(description="Free-form metadata.")
    is_labeled: bool = Field(description="Has at least one annotation that is not cancelled.")
    total_annotations: int = Field(description="Annotations, cancelled ones excluded.")
    cancelled_annotations: int = Field(description="Skipped (cancelled) annotations.")
    total_predictions: int = Field(description="Predictions of the task.")
    predictions_score: float | None = Field(
        default=None,
        description="The score ordering=prediction_score sorts by: the highest of the task's predictions "
        "of the project's shown model version (of any version when none is chosen); null when none.",
    )
    created_at: datetime = Field(description="Creation time.")
    updated_at: datetime = Field(description="Last change.")
    annotations: list[dict[str, Any]] | None = Field(
        default=None, description="With fields=all (always on a single task)."
    )
    predictions: list[dict[str, Any]] | None = Field(
        default=None, description="With fields=all (always on a single task)."
    )


class TaskPage(BaseModel):
    tasks: list[TaskOut] = Field(description="This page's tasks.")
    total: int | None = Field(
        description="Tasks matching the filters (all pages). Null on a filtered keyset (after=) request: "
        "counting would scan the filtered set on every page; ask once without after= for the count."
    )
    total_annotations: int | None = Field(
        description="Annotations of the matching tasks (null when total is)."
    )
    total_predictions: int | None = Field(
        description="Predictions of the matching tasks (null when total is)."
    )
    next_after: str | None = Field(
        description="Pass as after= for the next page in this ordering (keyset paging: one page of work at "
        "any depth); null when this page is the last."
    )
