"""No job stays queued or running without progress: the watchdog fails it with a reason, deleting a
backend fails its training at once, and extra_params that could not be sent are refused at input."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import SERVICE_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import connect_backend, create_project, import_texts
from tests.support.waiting import wait_job
from tests.support.workers import RunBurst

pytestmark = pytest.mark.usefixtures("gateway_server")
FINISHED = frozenset({"completed", "failed", "cancelled"})


async def _train(api: httpx.AsyncClient, backend_id: int) -> int:
    response = await api.post(f"/api/ml/{backend_id}/train")
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id


async def test_deleting_a_backend_fails_its_running_training_at_once(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url)
    released = threading.Event()
    fake.configure(hold_webhook=released)
    job_id = await _train(api, backend["id"])
    worker = asyncio.create_task(run_burst())
    try:
        await fake.wait_for_calls("/webhook", 1, timeout_s=30)
        assert (await api.get(f"/api/jobs/{job_id}")).json()["status"] == "running"
        assert (await api.delete(f"/api/ml/{backend['id']}")).status_code == 204
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        assert job["status"] == "failed", job
        assert "deleted" in job["error"], job["error"]
    finally:
        released.set()
        await worker
    after = (await api.get(f"/api/jobs/{job_id}")).json()
    assert after["status"] == "failed" and "deleted" in after["error"], "the late report changes nothing"


@pytest.mark.api_settings(job_stall_timeout_s=1.0)
async def test_the_watchdog_fails_jobs_without_progress_with_a_reason(
    api: httpx.AsyncClient, db: asyncpg.Connection, run_burst: RunBurst, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    await import_texts(api, project["id"], 3)
    backend = await connect_backend(api, project["id"], fake.url, timeout=0.5)

    # Queued, and no worker ever takes it.
    never_taken = await _train(api, backend["id"])
    job = await wait_job(api, never_taken, FINISHED)
    assert job["status"] == "failed"
    assert "never started" in job["error"] and "no progress" in job["error"], job["error"]

    # Running: a worker took it (as the worker does) and then died without reporting.
    died = await _train(api, backend["id"])
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    taken = await api.post(f"/internal/train-jobs/{died}/start", headers=service)
    assert taken.status_code == 200 and taken.json()["go"] is True, taken.text
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["state"] == "TR"
    job = await wait_job(api, died, FINISHED)
    assert job["status"] == "failed"
    assert "stopped reporting" in job["error"], job["error"]
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["state"] == "CO", "no longer training"

    # A bulk prediction whose chunks no worker leases.
    started = await api.post(f"/api/ml/{backend['id']}/predict")
    assert started.status_code == 200, started.text
    predict_job = started.json()["job_id"]
    job = await wait_job(api, predict_job, FINISHED)
    assert job["status"] == "failed"
    assert "none of its chunks" in job["error"], job["error"]
    pending = await db.fetchval(
        "SELECT count(*) FROM job_chunk WHERE job_id = $1 AND status IN ('pending', 'leased')", predict_job
    )
    assert pending == 0, "its chunks were cancelled"
    await run_burst()  # a worker arriving late predicts nothing
    assert fake.calls("/predict") == []


async def test_extra_params_too_deep_to_send_are_refused_naming_the_field(
    api: httpx.AsyncClient, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    deep: Any = {}
    for _ in range(150):
        deep = {"a": deep}
    refused = await api.post(
        "/api/ml", json={"url": fake.url, "project": project["id"], "extra_params": deep}
    )
    assert refused.status_code == 400, refused.text
    assert "extra_params" in refused.json()["validation_errors"], refused.json()
    assert fake.calls("/setup") == [], "refused before any call"
    backend = await connect_backend(api, project["id"], fake.url, extra_params={"a": {"b": [1, 2]}})
    patched = await api.patch(f"/api/ml/{backend['id']}", json={"extra_params": deep})
    assert patched.status_code == 400, patched.text
    assert "extra_params" in patched.json()["validation_errors"]


async def test_training_with_stored_extra_params_that_cannot_be_sent_ends_failed(
    api: httpx.AsyncClient, db: asyncpg.Connection, run_burst: RunBurst, fake: FakeBackend
) -> None:
    """extra_params stored before the input check, deeper than any reader goes: the job ends, failed."""
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url)
    deep = '{"a":' * 300 + "{}" + "}" * 300
    await db.execute(
        "UPDATE ml_backend SET extra_params = CAST($1 AS jsonb) WHERE id = $2", deep, backend["id"]
    )
    job_id = await _train(api, backend["id"])
    await run_burst()
    job = await wait_job(api, job_id, FINISHED)
    assert job["status"] == "failed", job
    assert "extra_params" in job["error"], job["error"]
    assert fake.calls("/webhook") == []
