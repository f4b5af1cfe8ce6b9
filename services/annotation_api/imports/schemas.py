"""Import response, in Label Studio's shape."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ImportResponse(BaseModel):
    task_count: int = Field(description="Tasks created.")
    annotation_count: int = Field(description="Annotations created with them.")
    prediction_count: int = Field(description="Predictions created with them.")
    duration: float = Field(description="Seconds the import took.")
    could_be_tasks_list: bool = Field(
        default=False, description="Always false (Label Studio's file-upload field)."
    )
    data_columns: list[str] = Field(description="Data keys seen in the tasks.")
    found_formats: list[str] = Field(
        default=[], description="Always empty (Label Studio's file-upload field)."
    )
    file_upload_ids: list[int] = Field(
        default=[], description="Always empty (Label Studio's file-upload field)."
    )
    task_ids: list[int] | None = Field(
        default=None, description="Ids of the created tasks, in order (with return_task_ids=true)."
    )
