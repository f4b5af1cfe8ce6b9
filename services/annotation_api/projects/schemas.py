"""Project request/response bodies, with Label Studio's field names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from services.annotation_api.models import Project

Sampling = Literal["Sequential sampling", "Uniform sampling", "Uncertainty sampling"]
DEFAULT_LABEL_CONFIG = "<View></View>"
INT_MAX = 2**31 - 1
#: A project id in a path: beyond Postgres ``integer`` it can name no project, so 400 before any query.
ProjectId = Annotated[int, Path(ge=1, le=INT_MAX)]


class _Input(BaseModel):
    # Label Studio clients send many project fields we do not model (color, expert_instruction, …);
    # ignoring them keeps those clients working.
    model_config = ConfigDict(extra="ignore")


class ProjectCreate(_Input):
    title: str = Field(default="", max_length=250)
    description: str = ""
    label_config: str = DEFAULT_LABEL_CONFIG
    model_version: str = ""
    sampling: Sampling = "Sequential sampling"
    show_collab_predictions: bool = True
    evaluate_predictions_automatically: bool = False
    repredict_on_new_version: bool = False


class ProjectUpdate(_Input):
    """Partial update: only the fields present in the body change."""

    title: str = Field(default="", max_length=250)
    description: str = ""
    label_config: str = DEFAULT_LABEL_CONFIG
    model_version: str = ""
    sampling: Sampling = "Sequential sampling"
    show_collab_predictions: bool = True
    evaluate_predictions_automatically: bool = False
    repredict_on_new_version: bool = False


class LabelConfigIn(BaseModel):
    label_config: str


class LabelConfigOut(BaseModel):
    label_config: str


class UserSimple(BaseModel):
    """Label Studio nests the creator as a small user object (its SDK parses `created_by` as one)."""

    id: int
    email: str
    username: str
    first_name: str = ""
    last_name: str = ""
    avatar: str | None = None


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str
    label_config: str
    model_version: str
    sampling: str
    show_collab_predictions: bool
    evaluate_predictions_automatically: bool
    repredict_on_new_version: bool
    task_number: int
    total_predictions_number: int
    total_annotations_number: int
    num_tasks_with_annotations: int
    created_by: UserSimple | None = None
    created_at: datetime
    updated_at: datetime


class ProjectPage(BaseModel):
    count: int
    next: str | None
    previous: str | None
    results: list[ProjectOut]


def project_out(project: Project, creators: Mapping[int, str], unfolded_predictions: int = 0) -> ProjectOut:
    """``creators``: user id → email for the projects' creators (see service.creator_emails);
    ``unfolded_predictions``: see service.unfolded_predictions."""
    out = ProjectOut.model_validate(project)
    out.total_predictions_number += unfolded_predictions
    if project.created_by_id is not None and project.created_by_id in creators:
        email = creators[project.created_by_id]
        out.created_by = UserSimple(id=project.created_by_id, email=email, username=email)
    return out
