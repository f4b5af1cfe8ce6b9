"""Training jobs over real HTTP: START_TRAINING through the gateway, the backend's answer on the job,
new model versions followed (auto-update) and optionally predicted again."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.fakes.fake_backend import SENTIMENT_CONFIG, Behaviour, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts
from tests.support.waiting import wait_job
from tests.support.workers import RunBurst

pytestmark = pytest.mark.usefixtures("gateway_server")


async def _train(api: httpx.AsyncClient, backend_id: int, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/api/ml/{backend_id}/train", json=body or None)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    assert job["job_id"] == job["id"]
    assert job["kind"] == "train" and job["ml_backend"] == backend_id
    return job


async def test_training_moves_backend_and_project_to_the_new_version(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url)
    assert backend["model_version"] == "fake-v1"
    fake.configure(version_after_train="fake-v2")

    started = await _train(api, backend["id"], use_ground_truth=True)
    assert started["status"] == "queued"
    assert started["selection"] == {"use_ground_truth": True}
    await run_burst()
    job = await wait_job(api, started["id"])
    assert job["status"] == "completed", job
    assert job["error"] is None

    calls = fake.calls("/webhook")
    assert [call.body["action"] for call in calls] == ["START_TRAINING"]
    assert set(calls[0].body) == {"action", "project"}
    assert calls[0].body["project"]["id"] == project["id"]
    assert calls[0].body["project"]["label_config"] == SENTIMENT_CONFIG

    refreshed = (await api.get(f"/api/ml/{backend['id']}")).json()
    assert refreshed["model_version"] == "fake-v2"
    assert refreshed["state"] == "CO"
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == "fake-v2"
    assert job["result"] == {
        "status_code": 201,
        "body": {"result": {"model_version": "fake-v2"}, "status": "ok"},
        "previous_model_version": "fake-v1",
        "model_version": "fake-v2",
    }


async def test_backend_error_is_visible_on_the_job(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url)
    fake.configure(webhook_fail=500, version_after_train="never")
    started = await _train(api, backend["id"])
    await run_burst()
    job = await wait_job(api, started["id"])
    assert job["status"] == "failed"
    assert "FakeBackendError: webhook failed" in job["error"], job["error"]
    assert job["error"].startswith("Training failed")
    after = (await api.get(f"/api/ml/{backend['id']}")).json()
    assert after["model_version"] == "fake-v1"
    assert after["state"] == "CO", "the backend answered: it is reachable"


async def test_unreachable_backend_fails_the_job_and_marks_it_disconnected(
    api: httpx.AsyncClient, run_burst: RunBurst
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    fake = FakeBackend().start()
    backend = await connect_backend(api, project["id"], fake.url)
    fake.stop()
    started = await _train(api, backend["id"])
    await run_burst()
    job = await wait_job(api, started["id"])
    assert job["status"] == "failed"
    assert "connect" in job["error"], job["error"]
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["state"] == "DI"


async def test_without_auto_update_the_versions_stay(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url, auto_update=False)
    fake.configure(version_after_train="fake-v2")
    job = await _train(api, backend["id"])
    await run_burst()
    assert (await wait_job(api, job["id"]))["status"] == "completed"
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["model_version"] == "fake-v1"
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == "fake-v1"


async def test_project_showing_another_version_keeps_it(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG, model_version="imported-v7")
    backend = await connect_backend(api, project["id"], fake.url)
    fake.configure(version_after_train="fake-v2")
    job = await _train(api, backend["id"])
    await run_burst()
    assert (await wait_job(api, job["id"]))["status"] == "completed"
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["model_version"] == "fake-v2"
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == "imported-v7"


async def test_new_version_repredicts_unlabeled_tasks_when_asked(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend, db: asyncpg.Connection
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG, repredict_on_new_version=True)
    task_ids = await import_texts(api, project["id"], 3)
    labeled = await api.post(
        f"/api/tasks/{task_ids[0]}/annotations",
        json={"result": choice("Positive")},
    )
    assert labeled.status_code == 201
    # Connected after the annotation, so no event reaches it: the re-check that follows a delivery
    # would otherwise race training to pick the new version up.
    backend = await connect_backend(api, project["id"], fake.url)
    fake.configure(version_after_train="fake-v2")
    job = await _train(api, backend["id"])
    await run_burst()  # trains, then runs the prediction job the new version started
    trained = await wait_job(api, job["id"])
    repredict_id = trained["result"]["repredict_job_id"]
    rows = await db.fetch(
        "SELECT id, total, status, selection FROM job WHERE kind = 'predict' AND project_id = $1",
        project["id"],
    )
    assert len(rows) == 1
    assert rows[0]["id"] == repredict_id
    assert rows[0]["total"] == 2, "only the unlabeled tasks"
    predicted = await wait_job(api, rows[0]["id"])
    assert predicted["status"] == "completed" and predicted["done"] == 2
    versions = await db.fetch(
        "SELECT task_id, model_version FROM prediction WHERE project_id = $1 ORDER BY task_id", project["id"]
    )
    assert [(row["task_id"], row["model_version"]) for row in versions] == [
        (task_ids[1], "fake-v2"),
        (task_ids[2], "fake-v2"),
    ]


async def test_legacy_backend_trains_through_post_train(api: httpx.AsyncClient, run_burst: RunBurst) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    with FakeBackend(behaviour=Behaviour(mode="v1")) as legacy:
        backend = await connect_backend(api, project["id"], legacy.url)
        job = await _train(api, backend["id"])
        await run_burst()
        done = await wait_job(api, job["id"])
        assert done["status"] == "completed", done
        assert len(legacy.calls("/train")) == 1
        assert legacy.calls("/webhook") == []


async def test_train_unknown_backend_is_404_and_routes_answer_with_slash(
    api: httpx.AsyncClient, fake: FakeBackend
) -> None:
    assert (await api.post("/api/ml/999999/train")).status_code == 404
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url)
    slash = await api.post(f"/api/ml/{backend['id']}/train/")
    assert slash.status_code == 201
    bad = await api.post(f"/api/ml/{backend['id']}/train", json={"use_ground_truth": "maybe"})
    assert bad.status_code == 400
    assert "use_ground_truth" in bad.json()["validation_errors"]
