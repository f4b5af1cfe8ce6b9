"""Organizations: a token reaches its organization's projects and everything in them, nothing else.

User B (their own organization, created by the real CLI) gets 404 on every row of A's and never sees
them in a list; C, created into A's organization, works on A's project as A does."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import httpx
import pytest

from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts

pytestmark = pytest.mark.usefixtures("gateway_server")


async def _new_user(api: httpx.AsyncClient, database_url: str, *args: str) -> httpx.AsyncClient:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.annotation_api.cli",
        "create-user",
        *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    headers = {"Authorization": f"Token {stdout.decode().strip()}"}
    return httpx.AsyncClient(base_url=str(api.base_url), headers=headers, timeout=60)


async def test_other_organization_gets_404_everywhere_and_empty_lists(
    api: httpx.AsyncClient, database_url: str, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG, title="A's")
    pid = project["id"]
    task = (await import_texts(api, pid, 3))[0]
    annotation = (
        await api.post(f"/api/tasks/{task}/annotations", json={"result": choice("Positive")})
    ).json()
    prediction = (
        await api.post("/api/predictions", json={"task": task, "result": choice("Negative"), "score": 0.5})
    ).json()
    backend = await connect_backend(api, pid, fake.url)
    action = await api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid})
    assert action.status_code == 200, action.text
    job_id = action.json()["job_id"]

    bob = await _new_user(api, database_url, "--email", "bob@example.com")
    carol = await _new_user(
        api, database_url, "--email", "carol@example.com", "--same-organization-as", "admin@labelloop.local"
    )
    async with bob, carol:
        not_found: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", f"/api/projects/{pid}", {}),
            ("PATCH", f"/api/projects/{pid}", {"json": {"title": "mine"}}),
            ("DELETE", f"/api/projects/{pid}", {}),
            ("GET", f"/api/projects/{pid}/export", {}),
            ("GET", f"/api/projects/{pid}/next", {}),
            ("GET", f"/api/projects/{pid}/model-versions", {}),
            ("POST", f"/api/projects/{pid}/import", {"json": [{"text": "x"}]}),
            ("GET", "/api/tasks", {"params": {"project": pid}}),
            ("POST", "/api/tasks", {"json": {"project": pid, "data": {"text": "x"}}}),
            ("GET", f"/api/tasks/{task}", {}),
            ("PATCH", f"/api/tasks/{task}", {"json": {"data": {"text": "changed"}}}),
            ("DELETE", f"/api/tasks/{task}", {}),
            ("GET", f"/api/tasks/{task}/annotations", {}),
            ("POST", f"/api/tasks/{task}/annotations", {"json": {"result": choice("Negative")}}),
            ("GET", f"/api/annotations/{annotation['id']}", {}),
            ("DELETE", f"/api/annotations/{annotation['id']}", {}),
            ("GET", f"/api/predictions/{prediction['id']}", {}),
            ("DELETE", f"/api/predictions/{prediction['id']}", {}),
            ("GET", "/api/predictions", {"params": {"task": task}}),
            ("GET", f"/api/ml/{backend['id']}", {}),
            ("PATCH", f"/api/ml/{backend['id']}", {"json": {"title": "mine"}}),
            ("DELETE", f"/api/ml/{backend['id']}", {}),
            ("POST", f"/api/ml/{backend['id']}/train", {}),
            ("GET", "/api/ml", {"params": {"project": pid}}),
            ("GET", f"/api/jobs/{job_id}", {}),
            ("POST", f"/api/jobs/{job_id}/cancel", {}),
            ("GET", "/api/jobs", {"params": {"project": pid}}),
            ("POST", "/api/dm/actions", {"params": {"id": "retrieve_tasks_predictions", "project": pid}}),
        ]
        for method, path, kwargs in not_found:
            response = await bob.request(method, path, **kwargs)
            assert response.status_code == 404, (method, path, response.text)
        for path, body in (
            ("/api/ml", {"project": pid, "url": fake.url}),
            ("/api/predictions", {"task": task, "result": choice("Negative")}),
        ):
            response = await bob.post(path, json=body)
            assert response.status_code == 400, (path, response.text)

        listed = (await bob.get("/api/projects")).json()
        assert listed["count"] == 0 and listed["results"] == []
        assert (await bob.get("/api/ml")).json() == []
        assert (await bob.get("/api/jobs")).json() == []
        assert (await bob.get("/api/predictions")).json() == []

        own = await create_project(bob, SENTIMENT_CONFIG, title="B's")
        assert [p["id"] for p in (await bob.get("/api/projects")).json()["results"]] == [own["id"]]
        assert own["id"] not in [p["id"] for p in (await api.get("/api/projects")).json()["results"]]
        assert (await api.get(f"/api/projects/{own['id']}")).status_code == 404

        assert (await carol.get(f"/api/projects/{pid}")).status_code == 200
        assert (await carol.get(f"/api/tasks/{task}")).status_code == 200
        assert [b["id"] for b in (await carol.get("/api/ml")).json()] == [backend["id"]]
        assert [j["id"] for j in (await carol.get("/api/jobs")).json()] == [job_id]

    after = (await api.get(f"/api/projects/{pid}")).json()
    assert after["title"] == "A's" and after["task_number"] == 3
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["title"] == backend["title"]
