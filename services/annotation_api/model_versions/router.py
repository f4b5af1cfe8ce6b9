"""``/api/projects/{id}/model-versions`` (Label Studio path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.model_versions import service
from services.annotation_api.model_versions.schemas import (
    DeletedPredictions,
    ExtendedVersions,
    VersionToDelete,
)
from services.annotation_api.projects.schemas import ProjectId
from services.annotation_api.routing import PrefixRouter

router = PrefixRouter(prefix="/api/projects/{project_id}/model-versions", tags=["predictions"])


@router.get("", response_model=dict[str, int] | ExtendedVersions)
@router.get("/", response_model=dict[str, int] | ExtendedVersions, include_in_schema=False)
async def list_model_versions(
    project_id: ProjectId,
    session: SessionDep,
    _: CurrentUser,
    extended: Annotated[
        bool, Query(description="Also when each version was last used, and the project's backends.")
    ] = False,
) -> dict[str, int] | ExtendedVersions:
    """``{"<version>": count}``; with ``extended=true`` ``{"static": [...], "live": [backends]}``."""
    if extended:
        return await service.extended_versions(session, project_id)
    return await service.version_counts(session, project_id)


@router.delete("", response_model=DeletedPredictions)
@router.delete("/", response_model=DeletedPredictions, include_in_schema=False)
async def delete_model_version(
    project_id: ProjectId, body: VersionToDelete, session: SessionDep, _: CurrentUser
) -> DeletedPredictions:
    """Delete all of the project's predictions of one model version, in the background (a job)."""
    return await service.delete_version(session, project_id, body.model_version)
