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
ProjectId = Annotated[int, Path(ge=1, le=INT_MAX, description="Project id.")]


class _Input(BaseModel):
    # Label Studio clients send many project fields we do not model (color, expert_instruction, …);
    # ignoring them keeps those clients working.
    model_config = ConfigDict(extra="ignore", strict=True)


class ProjectCreate(_Input):
    title: str = Field(default="", max_length=250, description="Project name, up to 250 characters.")
    description: str = Field(default="", description="Free text.")
    label_config: str = Field(
        default=DEFAULT_LABEL_CONFIG,
        description="The Label Studio labeling config (XML); 400 if it is not valid, or (on update) if an "
        "existing task lacks a data key it reads.",
    )
    model_version: str = Field(
        default="",
        description="Which model version's predictions annotators see; empty: none chosen. On update, 400 "
        "unless an ML backend of the project reports that version (or is titled so) or predictions carry it.",
    )
    sampling: Sampling = Field(
        default="Sequential sampling",
        description="Order in which `/next` serves tasks: lowest id first, a random one, or the one whose "
        "prediction of `model_version` has the lowest score (lowest id when there is none).",
    )
    show_collab_predictions: bool = Field(
        default=True, description="Whether annotators see predictions (Label Studio's flag, stored as given)."
    )
    evaluate_predictions_automatically: bool = Field(
        default=False,
        description="Ask the project's ML backend for a prediction when an annotator opens a task that has "
        "none of the current model version.",
    )
    repredict_on_new_version: bool = Field(
        default=False,
        description="Predict the unlabeled tasks again when an ML backend reports a new model version.",
    )


class ProjectUpdate(ProjectCreate):
    """Partial update: only the fields present in the body change."""


class LabelConfigIn(BaseModel):
    model_config = ConfigDict(strict=True)

    label_config: str = Field(description="A Label Studio labeling config (XML) to check.")


class LabelConfigOut(BaseModel):
    label_config: str = Field(description="The config, as validated.")


class UserSimple(BaseModel):
    """Label Studio nests the creator as a small user object (its SDK parses `created_by` as one)."""

    id: int = Field(description="User id.")
    email: str = Field(description="E-mail.")
    username: str = Field(description="Same as the e-mail here.")
    first_name: str = Field(default="", description="Empty here (Label Studio's field).")
    last_name: str = Field(default="", description="Empty here (Label Studio's field).")
    avatar: str | None = Field(default=None, description="Always null here (Label Studio's field).")


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Project id.")
    title: str = Field(description="Project name.")
    description: str = Field(description="Free text.")
    label_config: str = Field(description="The Label Studio labeling config (XML).")
    model_version: str = Field(
        description="Which model version's predictions annotators see (empty: none chosen)."
    )
    sampling: str = Field(description="Order of `/next`: Sequential, Uniform or Uncertainty sampling.")
    show_collab_predictions: bool = Field(
        description="Whether annotators see predictions (Label Studio's flag)."
    )
    evaluate_predictions_automatically: bool = Field(
        description="Retrieve predictions for a task when an annotator opens it."
    )
    repredict_on_new_version: bool = Field(
        description="Predict the unlabeled tasks again when the backend reports a new model version."
    )
    task_number: int = Field(description="Tasks in the project.")
    total_predictions_number: int = Field(description="Predictions in the project.")
    total_annotations_number: int = Field(description="Annotations in the project (cancelled ones excluded).")
    num_tasks_with_annotations: int = Field(description="Tasks with at least one annotation.")
    created_by: UserSimple | None = Field(default=None, description="Who created the project.")
    created_at: datetime = Field(description="Creation time.")
    updated_at: datetime = Field(description="Last change.")


class ProjectPage(BaseModel):
    count: int = Field(description="Projects in all pages.")
    next: str | None = Field(description="URL of the next page, if any.")
    previous: str | None = Field(description="URL of the previous page, if any.")
    results: list[ProjectOut] = Field(description="This page's projects.")


def project_out(project: Project, creators: Mapping[int, str], unfolded_predictions: int = 0) -> ProjectOut:
    """``creators``: user id → email for the projects' creators (see service.creator_emails);
    ``unfolded_predictions``: see service.unfolded_predictions."""
    out = ProjectOut.model_validate(project)
    out.total_predictions_number += unfolded_predictions
    if project.created_by_id is not None and project.created_by_id in creators:
        email = creators[project.created_by_id]
        out.created_by = UserSimple(id=project.created_by_id, email=email, username=email)
    return out
