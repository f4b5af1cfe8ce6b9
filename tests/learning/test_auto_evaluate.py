"""``evaluate_predictions_automatically``: a task served without a prediction of the current version gets
one through the gateway's interactive path, stored and included; a failing backend costs nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import connect_backend, create_project, import_texts
from tests.support.waiting import wait_for

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


async def _held_predict(fake: FakeBackend) -> threading.Event:
    """Hold /predict calls until the returned event is set (a backend thinking for as long as needed)."""
    gate = threading.Event()
    fake.configure(predict_gate=gate)
    return gate


async def test_a_task_deleted_while_its_prediction_is_computed_is_not_waited_for_nor_a_500(
    api: httpx.AsyncClient, fake: FakeBackend, db: asyncpg.Connection
) -> None:
    """The backend call runs with no transaction open: the delete does not wait for it, and the late
    answer is dropped instead of failing on the gone task."""
    project_id = (await create_project(api, SENTIMENT_CONFIG, evaluate_predictions_automatically=True))["id"]
    task_ids = await import_texts(api, project_id, 2)
    await connect_backend(api, project_id, fake.url)
    gate = await _held_predict(fake)
    try:
        for path in (f"/api/projects/{project_id}/next", f"/api/tasks/{task_ids[1]}"):
            opening = asyncio.create_task(api.get(path))
            await fake.wait_for_calls("/predict", 1, timeout_s=30)
            task_id = fake.calls("/predict")[0].body["tasks"][0]["id"]
            deleting = asyncio.create_task(api.delete(f"/api/tasks/{task_id}"))
            await wait_for(_done(deleting), what="the delete, while the backend still holds the call")
            assert deleting.result().status_code == 204, deleting.result().text
            fake.clear_requests()
            gate.set()
            answered = await opening
            assert answered.status_code in (200, 404), answered.text
            gate.clear()
    finally:
        gate.set()
    assert await db.fetchval("SELECT count(*) FROM prediction WHERE project_id = $1", project_id) == 0


async def test_a_backend_deleted_while_it_predicts_leaves_the_task_served_without_it(
    api: httpx.AsyncClient, fake: FakeBackend, db: asyncpg.Connection
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG, evaluate_predictions_automatically=True))["id"]
    task_ids = await import_texts(api, project_id, 1)
    backend = await connect_backend(api, project_id, fake.url)
    gate = await _held_predict(fake)
    try:
        opening = asyncio.create_task(api.get(f"/api/projects/{project_id}/next"))
        await fake.wait_for_calls("/predict", 1, timeout_s=30)
        assert (await api.delete(f"/api/ml/{backend['id']}")).status_code == 204
    finally:
        gate.set()
    served = await opening
    assert served.status_code == 200, served.text
    assert served.json()["id"] == task_ids[0]
    assert served.json()["predictions"] == []
    assert await db.fetchval("SELECT count(*) FROM prediction WHERE project_id = $1", project_id) == 0


def _done(task: asyncio.Task[httpx.Response]) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        return task.done()

    return done


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
