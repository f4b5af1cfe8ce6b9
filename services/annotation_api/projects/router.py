"""``/api/projects``: Label Studio's project CRUD, paging and label-config validation."""

from __future__ import annotations

from fastapi import Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import PageNumber
from services.annotation_api.models import Project
from services.annotation_api.projects import service
from services.annotation_api.projects.schemas import (
    LabelConfigIn,
    LabelConfigOut,
    ProjectCreate,
    ProjectId,
    ProjectOut,
    ProjectPage,
    ProjectUpdate,
    project_out,
)
from services.annotation_api.routing import PrefixRouter

router = PrefixRouter(prefix="/api/projects", tags=["projects"])


async def _out(session: AsyncSession, project: Project) -> ProjectOut:
    project, unfolded = await service.get_project_counted(session, project.id)
    return project_out(project, await service.creator_emails(session, [project]), unfolded)


def _page_url(request: Request, page: int) -> str:
    return str(request.url.include_query_params(page=page))


@router.get("", response_model=ProjectPage)
@router.get("/", response_model=ProjectPage, include_in_schema=False)
async def list_projects(
    request: Request,
    session: SessionDep,
    _: CurrentUser,
    page: PageNumber = 1,
    page_size: int = Query(30, ge=1, description="Projects per page, capped at the server's max page size."),
) -> ProjectPage:
    page_size = min(page_size, request.app.state.settings.max_page_size)
    count, projects = await service.list_projects(session, page, page_size)
    creators = await service.creator_emails(session, [project for project, _ in projects])
    return ProjectPage(
        count=count,
        next=_page_url(request, page + 1) if page * page_size < count else None,
        previous=_page_url(request, page - 1) if page > 1 else None,
        results=[project_out(project, creators, unfolded) for project, unfolded in projects],
    )


@router.post("", response_model=ProjectOut, status_code=201)
@router.post("/", response_model=ProjectOut, status_code=201, include_in_schema=False)
async def create_project(body: ProjectCreate, session: SessionDep, user: CurrentUser) -> ProjectOut:
    return project_out(await service.create_project(session, body, user), {user.id: user.email})


@router.post("/validate", response_model=LabelConfigOut)
@router.post("/validate/", response_model=LabelConfigOut, include_in_schema=False)
async def validate_config(body: LabelConfigIn, _: CurrentUser) -> LabelConfigOut:
    await service.parse_config(body.label_config)
    return LabelConfigOut(label_config=body.label_config)


@router.get("/{project_id:int}", response_model=ProjectOut)
@router.get("/{project_id:int}/", response_model=ProjectOut, include_in_schema=False)
async def get_project(project_id: ProjectId, session: SessionDep, _: CurrentUser) -> ProjectOut:
    project, unfolded = await service.get_project_counted(session, project_id)
    return project_out(project, await service.creator_emails(session, [project]), unfolded)


@router.patch("/{project_id:int}", response_model=ProjectOut)
@router.patch("/{project_id:int}/", response_model=ProjectOut, include_in_schema=False)
async def update_project(
    project_id: ProjectId, body: ProjectUpdate, session: SessionDep, _: CurrentUser
) -> ProjectOut:
    return await _out(session, await service.update_project(session, project_id, body))


@router.delete("/{project_id:int}", status_code=204)
@router.delete("/{project_id:int}/", status_code=204, include_in_schema=False)
async def delete_project(project_id: ProjectId, session: SessionDep, _: CurrentUser) -> Response:
    """Hidden at once; a job (its id in ``X-Job-Id``, follow it in ``/api/jobs``) deletes the rest."""
    job = await service.delete_project(session, project_id)
    return Response(status_code=204, headers={"X-Job-Id": str(job.id)})


@router.post("/{project_id}/validate", response_model=LabelConfigOut)
@router.post("/{project_id}/validate/", response_model=LabelConfigOut, include_in_schema=False)
async def validate_project_config(
    project_id: ProjectId, body: LabelConfigIn, session: SessionDep, _: CurrentUser
) -> LabelConfigOut:
    await service.validate_config_for_project(session, project_id, body.label_config)
    return LabelConfigOut(label_config=body.label_config)
