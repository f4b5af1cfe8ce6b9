"""``PrefixRouter`` turns away paths outside its prefix and still serves every route under it."""

from __future__ import annotations

from collections import Counter

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from services.annotation_api.routing import PrefixRouter

tried: Counter[str] = Counter()
"""How often each route was matched against a request."""


class CountedRoute(APIRoute):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        tried[self.path] += 1
        return super().matches(scope)


projects = PrefixRouter(prefix="/api/projects", route_class=CountedRoute)
versions = PrefixRouter(prefix="/api/projects/{project_id}/model-versions", route_class=CountedRoute)
tasks = PrefixRouter(prefix="/api/tasks", route_class=CountedRoute)


@projects.get("/{project_id}")
async def project(project_id: int) -> dict[str, object]:
    return {"router": "projects", "id": project_id}


@versions.get("")
async def model_versions(project_id: int) -> dict[str, object]:
    return {"router": "versions", "id": project_id}


@tasks.get("/{task_id}")
async def task(task_id: int) -> dict[str, object]:
    return {"router": "tasks", "id": task_id}


def _app() -> FastAPI:
    app = FastAPI()
    for router in (projects, versions, tasks):
        app.include_router(router)
    return app


def test_the_literal_prefix_stops_at_the_first_path_parameter() -> None:
    assert projects.literal_prefix == "/api/projects"
    assert versions.literal_prefix == "/api/projects/"


async def test_a_path_outside_the_prefix_is_not_matched_against_the_routes() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://test") as client:
        tried.clear()
        assert (await client.get("/api/tasks/9")).json() == {"router": "tasks", "id": 9}
    assert tried["/api/tasks/{task_id}"] > 0
    assert tried["/api/projects/{project_id}"] == 0
    assert tried["/api/projects/{project_id}/model-versions"] == 0


async def test_every_route_is_still_served_also_under_a_root_path() -> None:
    for root_path in ("", "/labelloop"):
        transport = httpx.ASGITransport(app=_app(), root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = [
                (await client.get(f"{root_path}{path}")).json()
                for path in ("/api/projects/7", "/api/projects/7/model-versions", "/api/tasks/9")
            ]
            missing = await client.get(f"{root_path}/api/nothing/1")
        assert answers == [
            {"router": "projects", "id": 7},
            {"router": "versions", "id": 7},
            {"router": "tasks", "id": 9},
        ]
        assert missing.status_code == 404
