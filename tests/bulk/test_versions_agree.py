"""What a user reads about a bulk job agrees with what was stored (issue 10's messages and counters).

The job, the backend's record and the stored predictions name the same model version as soon as the
predictions are visible; a re-run counts the tasks it did not need to predict as skipped; the action's
``detail`` names the URL to follow; the shown version cannot be set to one nothing predicted.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes.fake_backend import DEFAULT_MODEL_VERSION, FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.workers import RunBurst

pytestmark = pytest.mark.usefixtures("gateway_server")


async def retrieve(api: httpx.AsyncClient, project_id: int) -> dict[str, Any]:
    response = await api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def read(api: httpx.AsyncClient, path: str) -> Any:
    response = await api.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_action_detail_names_the_job_url(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    await import_texts(api, project["id"], 3)
    await connect_backend(api, project["id"], fake.url)
    started = await retrieve(api, project["id"])
    assert "{id}" not in started["detail"]
    assert (
        started["detail"] == f"Predicting 3 tasks in the background: follow GET /api/jobs/{started['job_id']}"
    )


async def test_job_backend_and_predictions_agree_after_the_backend_learned(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, run_burst: RunBurst
) -> None:
    await import_texts(api, project["id"], 25)
    backend = await connect_backend(api, project["id"], fake.url)
    assert backend["model_version"] == DEFAULT_MODEL_VERSION
    fake.behaviour.model_version = "fake-v2"  # the model learned; the API has not checked it since

    job_id = (await retrieve(api, project["id"]))["job_id"]
    assert (await read(api, f"/api/jobs/{job_id}"))["model_version"] == DEFAULT_MODEL_VERSION
    await run_burst()

    job = await read(api, f"/api/jobs/{job_id}")
    assert (job["status"], job["done"], job["predicted"], job["skipped"]) == ("completed", 25, 25, 0)
    assert job["model_version"] == "fake-v2"
    assert (await read(api, f"/api/ml/{backend['id']}"))["model_version"] == "fake-v2"
    assert (await read(api, f"/api/projects/{project['id']}"))["model_version"] == "fake-v2"
    assert await read(api, f"/api/projects/{project['id']}/model-versions") == {"fake-v2": 25}


async def test_a_rerun_counts_already_predicted_tasks_as_skipped(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, run_burst: RunBurst
) -> None:
    await import_texts(api, project["id"], 25)
    # Pinned: the record keeps the version it was created with while the backend answers with another,
    # so the re-run asks the backend again and gets back predictions that are already stored.
    backend = await connect_backend(api, project["id"], fake.url, auto_update=False)
    fake.behaviour.model_version = "fake-v2"
    first = (await retrieve(api, project["id"]))["job_id"]
    await run_burst()
    assert (await read(api, f"/api/jobs/{first}"))["predicted"] == 25

    second = (await retrieve(api, project["id"]))["job_id"]
    await run_burst()
    job = await read(api, f"/api/jobs/{second}")
    assert (job["status"], job["done"], job["predicted"], job["skipped"], job["failed"]) == (
        "completed",
        0,
        0,
        25,
        0,
    )
    assert job["model_version"] == "fake-v2", "the version the backend answered with"
    assert (await read(api, f"/api/ml/{backend['id']}"))["model_version"] == DEFAULT_MODEL_VERSION, "pinned"

    third = (await retrieve(api, project["id"]))["job_id"]
    await run_burst()
    job = await read(api, f"/api/jobs/{third}")
    assert (job["done"], job["predicted"], job["skipped"]) == (0, 0, 25)


async def test_showing_a_version_nothing_predicted_is_refused_by_name(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    task_ids = await import_texts(api, project["id"], 2)
    path = f"/api/projects/{project['id']}"
    refused = await api.patch(path, json={"model_version": "nobody-v9"})
    assert refused.status_code == 400, refused.text
    assert "nobody-v9" in refused.json()["validation_errors"]["model_version"][0]
    assert (await read(api, path))["model_version"] == ""

    created = await api.post(
        "/api/predictions", json={"task": task_ids[0], "result": [], "model_version": "static-v1"}
    )
    assert created.status_code == 201, created.text
    await connect_backend(api, project["id"], fake.url)  # a live version: fake-v1
    for version in ("static-v1", DEFAULT_MODEL_VERSION, ""):
        accepted = await api.patch(path, json={"model_version": version})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["model_version"] == version
