"""What a token may reach, decided once per request from the route's own ids.

Every ``/api`` route names the rows it touches by id in its path (``project_id``, ``task_id``, …) or by
the ``project`` query parameter; ``resource_project_ids`` resolves each to the project it belongs to with
one query, so the rule lives here rather than in each route.

An ML backend's token (``ApiToken.project_id`` set) may only read its project: the project itself, its
export, its tasks and their annotations — what a backend fetches in the Label Studio ML protocol (task
data, media, annotations to train on). Anything else is a 403; another project's row a 404.
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.errors import Forbidden, NotFound
from services.annotation_api.models import Annotation, Job, MlBackend, Prediction, Project, Task

_PROJECT_OF = {
    "project_id": (Project.id, Project.id),
    "task_id": (Task.id, Task.project_id),
    "annotation_id": (Annotation.id, Annotation.project_id),
    "prediction_id": (Prediction.id, Prediction.project_id),
    "backend_id": (MlBackend.id, MlBackend.project_id),
    "job_id": (Job.id, Job.project_id),
}

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


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    path: str = getattr(route, "path", request.url.path)
    return path.rstrip("/") or "/"


def _resource_ids(request: Request) -> dict[str, int]:
    ids: dict[str, int] = {}
    for name in _PROJECT_OF:
        value = request.path_params.get(name)
        if isinstance(value, str) and value.isdigit():
            ids[name] = int(value)
    return ids


async def resource_project_ids(session: AsyncSession, ids: dict[str, int]) -> dict[str, int | None]:
    """The project each named row belongs to (None when the row does not exist)."""
    if not ids:
        return {}
    parts = [
        select(literal(name).label("name"), project_col.label("project_id")).where(id_col == ids[name])
        for name, (id_col, project_col) in _PROJECT_OF.items()
        if name in ids
    ]
    rows = (await session.execute(union_all(*parts))).all()
    found: dict[str, int | None] = dict.fromkeys(ids)
    found.update({row.name: row.project_id for row in rows})
    return found


async def check_backend_token(request: Request, session: AsyncSession, project_id: int) -> None:
    """An ML backend's token: GET on its own project's tasks and annotations, nothing else."""
    if request.method not in ("GET", "HEAD") or _route_template(request) not in BACKEND_TOKEN_ROUTES:
        raise Forbidden(f"This token belongs to an ML backend: it reads project {project_id}'s tasks only.")
    query_project = request.query_params.get("project")
    if query_project is not None and query_project != str(project_id):
        raise NotFound(f"Project {query_project} not found.")
    ids = _resource_ids(request)
    for name, owner in (await resource_project_ids(session, ids)).items():
        if owner != project_id:
            raise NotFound(f"{name.removesuffix('_id').capitalize()} {ids[name]} not found.")
