"""One task that cannot be sent fails alone; the rest of its chunk is predicted.

What the API stores, every later step must encode and send. The routes refuse numbers Postgres would keep
as integers beyond 64 bits and nesting past ``MAX_DEPTH``, but a database written before those checks
may hold such tasks, so they are written here with SQL, next to a task nested as deep as the routes
allow. A real worker leases, predicts and reports the chunk.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.bulk.conftest import StartWorker
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_tasks, import_texts
from tests.support.waiting import wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

ROUTE_DEPTH = 199
"""The deepest task data the API's routes accept (``shared.json_values.MAX_DEPTH`` less one)."""


def nested(depth: int) -> Any:
    """Task data whose innermost list is ``depth`` levels below the data object."""
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return {"text": "deep", "inner": value}


async def insert_task(db: asyncpg.Connection, project_id: int, data_json: str) -> int:
    """A task as an old database may hold it: written without any of the routes' checks."""
    task_id: int = await db.fetchval(
        "INSERT INTO task (project_id, data, meta, created_at, updated_at) "
        "VALUES ($1, CAST($2 AS jsonb), '{}', now(), now()) RETURNING id",
        project_id,
        data_json,
    )
    return task_id


async def test_tasks_that_cannot_be_sent_fail_alone_and_the_rest_of_the_chunk_is_predicted(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    healthy = await import_texts(api, project["id"], 6)
    deepest = (await import_tasks(api, project["id"], [nested(ROUTE_DEPTH)], return_task_ids="true"))[
        "task_ids"
    ]
    refused = await api.post(f"/api/projects/{project['id']}/import", json=[nested(ROUTE_DEPTH + 1)])
    assert refused.status_code == 400, refused.text
    huge = await insert_task(db, project["id"], '{"text": "huge", "n": 1e20}')
    too_deep = await insert_task(
        db, project["id"], '{"text": "deep", "inner": ' + "[" * 300 + "1" + "]" * 300 + "}"
    )
    await db.execute(
        "UPDATE project SET task_number = (SELECT count(*) FROM task WHERE project_id = $1) WHERE id = $1",
        project["id"],
    )
    await connect_backend(api, project["id"], fake.url, batch_size=4)
    start_worker()

    response = await api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project["id"]}
    )
    assert response.status_code == 200, response.text
    job = await wait_job(api, response.json()["job_id"])

    assert job["status"] == "completed", job
    assert (job["done"], job["predicted"], job["skipped"], job["failed"]) == (7, 7, 0, 2), job
    messages = {error["task"]: error["message"] for error in job["errors"]}
    assert set(messages) == {huge, too_deep}, messages
    assert "cannot be sent" in messages[huge] and "64" in messages[huge], messages
    assert "cannot be sent" in messages[too_deep] and "nest" in messages[too_deep].lower(), messages
    stored = {row["task_id"] for row in await db.fetch("SELECT task_id FROM prediction")}
    assert stored == {*healthy, *deepest}
    attempts = await db.fetchval("SELECT max(attempts) FROM job_chunk WHERE job_id = $1", job["id"])
    assert attempts == 1, "the worker failed on the chunk and it was leased again"
    sent = {task["id"] for call in fake.calls("/predict") for task in call.body["tasks"]}
    assert sent == {*healthy, *deepest}, "a task that cannot be sent reached the backend"
