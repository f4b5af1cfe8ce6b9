"""Safe rollouts: every worker restarted with SIGTERM mid-job, five times over, loses and gives up nothing.

Real worker processes (``python -m services.model_gateway.worker``), each replaced the way an
orchestrator rolls a Deployment: start the new one, wait for its readiness probe, SIGTERM the old one.
The backend is slow and the drain grace period short, so stopping workers hold chunks mid-prediction
and must release them; the job still ends with every prediction stored once and no attempt counted.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import asyncpg
import httpx
import pytest

from tests.bulk.conftest import StartWorker
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.servers import bound_socket
from tests.support.waiting import wait_for, wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 1000
WORKERS = 2
ROUNDS = 5


def free_port() -> int:
    with bound_socket() as sock:
        port: int = sock.getsockname()[1]
    return port


class Worker:
    """A worker process and the address of its probe/metrics listener."""

    def __init__(self, start_worker: StartWorker) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] = start_worker(
            LABELLOOP_WORKER_PROBE_PORT=str(port), LABELLOOP_WORKER_DRAIN_GRACE_S="0.3"
        )

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        async def ready() -> bool:
            assert self.process.poll() is None, "the worker exited before it was ready"
            try:
                answer = await client.get(f"{self.url}/ready")
            except httpx.TransportError:
                return False
            return answer.status_code == 200

        await wait_for(ready, 60, f"worker {self.url} to be ready")
        assert (await client.get(f"{self.url}/health")).json() == {"status": "UP"}

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


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
        workers = [Worker(start_worker) for _ in range(WORKERS)]
        for worker in workers:
            await worker.wait_ready(client)
        for _ in range(ROUNDS):
            for index, old in enumerate(workers):
                new = Worker(start_worker)
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
