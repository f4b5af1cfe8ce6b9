"""Safe rollouts: every worker restarted with SIGTERM mid-job, five times over, loses and gives up nothing.

Real worker processes (``python -m services.model_gateway.worker``), each replaced the way an
orchestrator rolls a Deployment: start the new one, wait for its readiness probe, SIGTERM the old one.
The backend is slow and the drain grace period short, so stopping workers hold chunks mid-prediction
and must release them; the job still ends with every prediction stored once and no attempt counted.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.bulk.conftest import StartWorker, WorkerProcess
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.waiting import wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 1000
WORKERS = 2
ROUNDS = 5


# A lease long enough that no chunk expires while worker processes start up on a busy machine: only a
# drain may hand a chunk on here, so any attempt counted twice is the drain's fault.
@pytest.mark.api_settings(chunk_lease_s=30.0)
async def test_rolling_restart_of_every_worker_five_times_mid_job(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    await import_texts(api, project["id"], TASKS)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=5, max_concurrency=1)
    fake.configure(predict_delay_s=2.0)  # at most ~2.5 tasks/s per worker: the job outlasts the rounds
    job_id = (await api.post(f"/api/ml/{backend['id']}/predict")).json()["job_id"]

    async with httpx.AsyncClient() as client:
        workers = [WorkerProcess(start_worker) for _ in range(WORKERS)]
        for worker in workers:
            await worker.wait_ready(client)
        for _ in range(ROUNDS):
            for index, old in enumerate(workers):
                new = WorkerProcess(start_worker)
                await new.wait_ready(client)
                job = (await api.get(f"/api/jobs/{job_id}")).json()
                assert job["status"] == "running", f"the job must still run when a worker stops: {job}"
                assert old.stop() == 0, "a drained worker exits cleanly"
                workers[index] = new
        fake.configure(predict_delay_s=0.0)
        job = await wait_job(api, job_id, timeout_s=120)

    assert job["status"] == "completed", job
    assert (job["done"], job["predicted"], job["failed"], job["errors"]) == (TASKS, TASKS, 0, []), job
    assert await db.fetchval("SELECT count(*) FROM prediction") == TASKS
    assert await db.fetchval("SELECT count(DISTINCT task_id) FROM prediction") == TASKS
    attempts = await db.fetchval("SELECT max(attempts) FROM job_chunk WHERE job_id = $1", job_id)
    assert attempts == 1, "a released chunk gives its attempt back; none was counted as failed"
    sent = sum(len(call.body["tasks"]) for call in fake.calls("/predict"))
    assert sent > TASKS, "stopping workers released chunks mid-prediction (their tasks were sent again)"
