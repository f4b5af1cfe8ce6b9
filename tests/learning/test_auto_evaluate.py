"""``evaluate_predictions_automatically``: a task served without a prediction of the current version gets
one through the gateway's interactive path, stored and included; a failing backend costs nothing."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import connect_backend, create_project, import_texts

pytestmark = pytest.mark.usefixtures("gateway_server")


async def test_next_and_task_get_predict_missing_tasks_once(
    api: httpx.AsyncClient, fake: FakeBackend, db: asyncpg.Connection
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG, evaluate_predictions_automatically=True))["id"]
    task_ids = await import_texts(api, project_id, 3)
    await connect_backend(api, project_id, fake.url)

    served = await api.get(f"/api/projects/{project_id}/next")
    assert served.status_code == 200, served.text
    task = served.json()
    assert task["id"] == task_ids[0]
    assert [(p["model_version"], p["result"][0]["value"]) for p in task["predictions"]] == [
        ("fake-v1", {"choices": ["Negative"]})
    ]
    assert task["total_predictions"] == 1
    predict_calls = len(fake.calls("/predict"))
    assert predict_calls == 1

    again = (await api.get(f"/api/projects/{project_id}/next")).json()
    assert again["id"] == task_ids[0] and len(again["predictions"]) == 1
    assert len(fake.calls("/predict")) == predict_calls, (
        "a task with a current prediction is not re-predicted"
    )

    opened = (await api.get(f"/api/tasks/{task_ids[1]}")).json()
    assert [p["model_version"] for p in opened["predictions"]] == ["fake-v1"]
    stored = await db.fetchval("SELECT count(*) FROM prediction WHERE project_id = $1", project_id)
    assert stored == 2
    counted = (await api.get(f"/api/projects/{project_id}")).json()["total_predictions_number"]
    assert counted == 2


async def test_a_failing_backend_still_serves_the_task(api: httpx.AsyncClient) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG, evaluate_predictions_automatically=True))["id"]
    task_ids = await import_texts(api, project_id, 1)
    fake = FakeBackend().start()
    await connect_backend(api, project_id, fake.url)
    fake.stop()
    served = await api.get(f"/api/projects/{project_id}/next")
    assert served.status_code == 200, served.text
    assert served.json()["id"] == task_ids[0]
    assert served.json()["predictions"] == []


async def test_off_by_default(api: httpx.AsyncClient, fake: FakeBackend) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    await import_texts(api, project_id, 1)
    await connect_backend(api, project_id, fake.url)
    served = (await api.get(f"/api/projects/{project_id}/next")).json()
    assert served["predictions"] == []
    assert fake.calls("/predict") == []


async def test_a_newer_version_in_the_answer_is_followed_and_served(
    api: httpx.AsyncClient, fake: FakeBackend
) -> None:
    """A model learning online answers with a version its record does not show yet: the task still comes
    back with that prediction, and backend and project follow the version (as after a bulk job)."""
    project_id = (await create_project(api, SENTIMENT_CONFIG, evaluate_predictions_automatically=True))["id"]
    await import_texts(api, project_id, 1)
    backend = await connect_backend(api, project_id, fake.url)
    assert (await api.get(f"/api/projects/{project_id}")).json()["model_version"] == "fake-v1"
    fake.configure(model_version="fake-v2")

    served = (await api.get(f"/api/projects/{project_id}/next")).json()
    assert [p["model_version"] for p in served["predictions"]] == ["fake-v2"]
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["model_version"] == "fake-v2"
    assert (await api.get(f"/api/projects/{project_id}")).json()["model_version"] == "fake-v2"
