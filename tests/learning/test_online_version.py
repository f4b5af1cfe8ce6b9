"""Online learning made visible: an annotation reaches the scikit-learn example backend, it learns and
reports a new model version, and the API records that version right after the delivery (the periodic
check is an hour away in these tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from examples.sklearn_backend.app import create_app
from tests.support.builders import choice, connect_backend, create_project, import_tasks
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for
from tests.support.workers import RunBurst

pytestmark = [
    pytest.mark.usefixtures("gateway_server"),
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]


@pytest.fixture
def sklearn_backend(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(create_app(tmp_path / "models")) as server:
        yield server


async def test_a_submitted_annotation_moves_the_backend_version_within_the_delivery(
    api: httpx.AsyncClient, sklearn_backend: ServerThread, run_burst: RunBurst
) -> None:
    project = await create_project(api)
    body = await import_tasks(
        api, project["id"], [{"text": "great, love it"}, {"text": "awful, broke"}], return_task_ids=True
    )
    task_ids: list[int] = body["task_ids"]
    backend = await connect_backend(api, project["id"], sklearn_backend.url)
    first = backend["model_version"]
    assert first

    async def annotate(task_id: int, label: str) -> None:
        response = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice(label)})
        assert response.status_code == 201, response.text

    async def version_moved_past(version: str) -> dict[str, Any]:
        current: dict[str, Any] = {}

        async def moved() -> bool:
            nonlocal current
            await run_burst()
            current = (await api.get(f"/api/ml/{backend['id']}")).json()
            return bool(current["model_version"] != version)

        await wait_for(moved, what=f"the backend's version to move past {version}")
        return current

    await annotate(task_ids[0], "positive")
    second = (await version_moved_past(first))["model_version"]
    await annotate(task_ids[1], "negative")
    third = (await version_moved_past(second))["model_version"]

    # the project's shown version followed the backend (auto-update), and the history recorded each step
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == third
    history = (await api.get(f"/api/ml/{backend['id']}/performance")).json()["versions"]
    assert [version["model_version"] for version in history] == [first, second, third]


async def test_without_auto_update_the_recheck_runs_but_the_version_stays(
    api: httpx.AsyncClient, sklearn_backend: ServerThread, run_burst: RunBurst, db: asyncpg.Connection
) -> None:
    project = await create_project(api)
    task_ids = (await import_tasks(api, project["id"], [{"text": "great"}], return_task_ids=True))["task_ids"]
    backend = await connect_backend(api, project["id"], sklearn_backend.url, auto_update=False)
    query = "SELECT last_checked_at FROM ml_backend WHERE id = $1"
    connected_at = await db.fetchval(query, backend["id"])
    response = await api.post(f"/api/tasks/{task_ids[0]}/annotations", json={"result": choice("positive")})
    assert response.status_code == 201, response.text

    async def rechecked() -> bool:
        await run_burst()
        return bool(await db.fetchval(query, backend["id"]) > connected_at)

    await wait_for(rechecked, what="the re-check after the delivery")
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["model_version"] == backend["model_version"]
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == backend[
        "model_version"
    ]
