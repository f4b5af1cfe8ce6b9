"""An ML backend that dies halfway through a bulk job: the breaker stops the calls, the job ends.

The job fails the tasks it could not predict, each with the reason, instead of waiting for the backend
(see ``services.annotation_api.jobs.service``); what was stored before the death stays, once, and a
second run after the backend is back predicts exactly the tasks that failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from services.model_gateway.settings import GatewaySettings
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.databases import project_predictions
from tests.support.waiting import wait_for, wait_job
from tests.support.workers import drain

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 300


async def predictions(db: asyncpg.Connection) -> tuple[int, int]:
    row = await db.fetchrow("SELECT count(*) AS n, count(DISTINCT task_id) AS tasks FROM prediction")
    return int(row["n"]), int(row["tasks"])


async def test_backend_dies_mid_job_breaker_opens_and_the_rest_fails_with_the_reason(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    gateway_settings: GatewaySettings,
    db: asyncpg.Connection,
) -> None:
    await import_texts(api, project["id"], TASKS)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=5, max_concurrency=2)
    fake.configure(predict_delay_s=0.05)
    response = await api.post(f"/api/ml/{backend['id']}/predict")
    assert response.status_code == 200, response.text
    job_id: int = response.json()["job_id"]
    worker = asyncio.create_task(drain(gateway_settings))

    async def progressed() -> bool:
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        assert job["status"] != "completed", "the job finished before the backend died"
        return bool(job["done"] > 0)

    await wait_for(progressed, 60, f"job {job_id} to make progress")
    fake.stop()
    await asyncio.wait_for(worker, 60)
    job = await wait_job(api, job_id, timeout_s=30)

    assert job["status"] == "completed", job
    assert job["done"] > 0 and job["failed"] > 0, job
    assert job["done"] + job["failed"] == TASKS, job
    assert await predictions(db) == (job["done"], job["done"])
    failed_ids = {error["task"] for error in job["errors"]}
    assert len(failed_ids) == len(job["errors"]) == min(job["failed"], 50), job["errors"]
    predicted = await db.fetch("SELECT task_id FROM prediction WHERE task_id = ANY($1::bigint[])", failed_ids)
    assert predicted == [], "a task reported as failed has a prediction"
    messages = [error["message"] for error in job["errors"]]
    unreachable = f"cannot connect to {fake.url}"
    circuit_open = f"circuit open for backend {fake.url}"
    lost = f"connection to {fake.url} lost"
    assert all(unreachable in m or circuit_open in m or lost in m for m in messages), messages
    assert any(circuit_open in m for m in messages), "the breaker never opened: every task hit the backend"

    fake.start()
    response = await api.post(f"/api/ml/{backend['id']}/predict")
    assert response.status_code == 200, response.text
    await drain(gateway_settings)
    rerun = await wait_job(api, response.json()["job_id"], timeout_s=30)
    assert rerun["status"] == "completed", rerun
    assert (rerun["done"], rerun["skipped"], rerun["failed"]) == (job["failed"], job["done"], 0), rerun
    assert await predictions(db) == (TASKS, TASKS)
    assert await project_predictions(db) == TASKS
