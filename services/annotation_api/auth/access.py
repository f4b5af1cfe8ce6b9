"""What a token may reach, decided once per request from the ids the request names.

Tenancy (as in Label Studio): every user belongs to one organization and every project to one; a
token reaches its organization's projects and everything in them (tasks, annotations, predictions, ML
backends, jobs), and nothing else exists for it: another organization's row answers 404, exactly like
a missing one. Every ``/api`` route names the rows it touches by id in its path (``project_id``,
``task_id``, …) or its query (``project``, ``task``); ``authorize`` (run by the authentication
dependency) resolves them all to their project and organization in one query, so routes never check
by hand. List queries without a project filter take ``visible_projects`` instead, and the few bodies
that name a project or task (creating a backend, a task, a prediction) ask ``hidden``.

A project being deleted (``Project.deleting``, set when its delete job is recorded) is gone at once
for every route that names it or a row in it, so reads never see it half-deleted; only its jobs stay
reachable (the delete job's progress, its cancel).

An ML backend's token (``ApiToken.project_id`` set) may moreover only read its project: the project
itself, its export, its tasks and their annotations — what a backend fetches in the Label Studio ML
protocol (task data, media, annotations to train on). Any other route is a 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy import ColumnElement, Select, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.errors import Forbidden, NotFound
from services.annotation_api.ids import BIGINT_MAX, INT_MAX
from services.annotation_api.models import Annotation, Job, MlBackend, Prediction, Project, Task, User

_ORGANIZATION = "organization_id"
_SCOPE = "token_project_id"

# kind → (id column, its project column, largest id the column holds, name in messages)
_KINDS: dict[str, tuple[Any, Any, int, str]] = {
    "project_id": (Project.id, Project.id, INT_MAX, "Project"),
    "task_id": (Task.id, Task.project_id, BIGINT_MAX, "Task"),
    "annotation_id": (Annotation.id, Annotation.project_id, BIGINT_MAX, "Annotation"),
    "prediction_id": (Prediction.id, Prediction.project_id, BIGINT_MAX, "Prediction"),
    "backend_id": (MlBackend.id, MlBackend.project_id, INT_MAX, "ML backend"),
    "job_id": (Job.id, Job.project_id, BIGINT_MAX, "Job"),
}
_QUERY_KINDS = {"project": "project_id", "task__project": "project_id", "task": "task_id"}

BACKEND_TOKEN_ROUTES = frozenset(
    {
        "/api/current-user/whoami",
        "/api/projects/{project_id}",
        "/api/projects/{project_id}/export",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/annotations",
        "/api/annotations/{annotation_id}",
    }
)

Ref = tuple[str, int]


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    # path_format: the template without convertors (``{project_id}``, not ``{project_id:int}``)
    path = str(getattr(route, "path_format", None) or getattr(route, "path", request.url.path))
    return path.rstrip("/") or "/"


def _as_id(kind: str, value: object) -> int | None:
    """A well-formed id of that kind, else None (the route's own validation answers 400)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= _KINDS[kind][2]:
        return value
    return None


def _refs(request: Request) -> list[Ref]:
    refs: list[Ref] = []
    for kind in _KINDS:
        found = _as_id(kind, request.path_params.get(kind))
        if found is not None:
            refs.append((kind, found))
    for name, kind in _QUERY_KINDS.items():
        for value in request.query_params.getlist(name):
            found = _as_id(kind, value)
            if found is not None:
                refs.append((kind, found))
    return refs


async def _owners(session: AsyncSession, refs: list[Ref]) -> dict[int, tuple[int, int, bool]]:
    """Position in ``refs`` → (project id, organization id, project being deleted), for the rows that exist."""
    parts = []
    for position, (kind, row_id) in enumerate(refs):
        id_col, project_col, _, _ = _KINDS[kind]
        stmt = select(
            literal(position).label("position"), Project.id, Project.organization_id, Project.deleting
        )
        if kind != "project_id":
            stmt = stmt.select_from(id_col.table).join(Project, Project.id == project_col)
        parts.append(stmt.where(id_col == row_id))
    if not parts:
        return {}
    rows = (await session.execute(union_all(*parts))).all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _not_found(kind: str, row_id: int) -> NotFound:
    return NotFound(f"{_KINDS[kind][3]} {row_id} not found.")


async def authorize(
    request: Request, session: AsyncSession, user: User, token_project_id: int | None
) -> None:
    """404 for any row the request names outside the token's reach; 403 for a backend token's writes."""
    session.info[_ORGANIZATION] = user.organization_id
    session.info[_SCOPE] = token_project_id
    if token_project_id is not None and (
        request.method not in ("GET", "HEAD") or _route_template(request) not in BACKEND_TOKEN_ROUTES
    ):
        raise Forbidden(
            f"This token belongs to an ML backend: it reads project {token_project_id}'s tasks only."
        )
    refs = _refs(request)
    owners = await _owners(session, refs)
    for position, (kind, row_id) in enumerate(refs):
        owner = owners.get(position)
        if owner is None:
            continue
        project_id, organization_id, deleting = owner
        if not _reachable(session, project_id, organization_id) or (deleting and kind != "job_id"):
            raise _not_found(kind, row_id)


def _reachable(session: AsyncSession, project_id: int, organization_id: int) -> bool:
    if _ORGANIZATION not in session.info:
        return True  # background work and service routes: no user, no tenancy
    scope = session.info[_SCOPE]
    return organization_id == session.info[_ORGANIZATION] and (scope is None or scope == project_id)


async def hidden(session: AsyncSession, kind: str, row_id: int) -> bool:
    """True when the row exists but is out of this request's reach (callers answer as if it did not)."""
    owner = (await _owners(session, [(kind, row_id)])).get(0)
    return owner is not None and not _reachable(session, owner[0], owner[1])


def visible_projects(session: AsyncSession) -> Select[Any] | None:
    """The ids of the projects this request may see, for list queries; None when unrestricted."""
    if _ORGANIZATION not in session.info:
        return None
    return select(Project.id).where(Project.organization_id == session.info[_ORGANIZATION])


def only_visible(session: AsyncSession, project_column: Any) -> ColumnElement[bool] | None:
    """``project_column IN (visible projects)`` for a list query, or None when unrestricted."""
    projects = visible_projects(session)
    return None if projects is None else project_column.in_(projects.scalar_subquery())


def visible_organization(session: AsyncSession) -> int | None:
    """The organization a request's lists are restricted to (raw-SQL lists); None when unrestricted."""
    organization: int | None = session.info.get(_ORGANIZATION)
    return organization
