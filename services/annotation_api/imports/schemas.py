"""Import response, in Label Studio's shape."""

from __future__ import annotations

from pydantic import BaseModel


class ImportResponse(BaseModel):
    task_count: int
    annotation_count: int
    prediction_count: int
    duration: float
    could_be_tasks_list: bool = False
    data_columns: list[str]
    found_formats: list[str] = []
    file_upload_ids: list[int] = []
    task_ids: list[int] | None = None
