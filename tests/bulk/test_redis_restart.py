"""Redis killed and restarted empty mid-job: every component reconnects by itself and nothing is lost.

This module runs its own non-persistent Redis server on a fixed port (the ``redis_url`` fixture is
overridden), so it can SIGKILL it and start a fresh, empty one on the same address, as when a Redis
without persistence is restarted by its supervisor. Everything queued in Redis is gone; Postgres still
holds every chunk, and the API's sweeper, its after-commit enqueue, the event delivery loop and the
gateway worker process must all find the new server without being restarted.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.embedded import EmbeddedRedis
from tests.bulk.conftest import StartWorker, WorkerProcess
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, import_texts
from tests.support.databases import project_predictions
from tests.support.waiting import wait_for, wait_job

TASKS = 300
LATE_TASKS = 20


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(own_redis: EmbeddedRedis) -> str:
    """This module's own Redis instead of the session's shared one."""
    return own_redis.url


def kill(server: EmbeddedRedis) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)


async def ready(client: httpx.AsyncClient, url: str, expected: bool) -> bool:
    return (await client.get(f"{url}/ready")).status_code == (200 if expected else 503)


async def job_done(api: httpx.AsyncClient, job_id: int) -> int:
    done: int = (await api.get(f"/api/jobs/{job_id}")).json()["done"]
    return done


async def assert_project_predicted_once(
    db: asyncpg.Connection, job: dict[str, Any], project_id: int, tasks: int
) -> None:
    assert job["status"] == "completed", job
    assert (job["done"], job["failed"]) == (tasks, 0), job
    row = await db.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT task_id) AS distinct_tasks FROM prediction WHERE project_id = $1",
        project_id,
    )
    assert (row["n"], row["distinct_tasks"]) == (tasks, tasks)
    assert await project_predictions(db, project_id) == tasks


async def test_redis_restarted_empty_mid_job_everything_reconnects(
    api: httpx.AsyncClient,
    gateway: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    own_redis: EmbeddedRedis,
    db: asyncpg.Connection,
) -> None:
    other = (await api.post("/api/projects", json={"title": "late", "label_config": SENTIMENT_CONFIG})).json()
    late_task_ids = await import_texts(api, other["id"], LATE_TASKS)
    other_backend = await connect_backend(api, other["id"], fake.url, batch_size=5)
    await import_texts(api, project["id"], TASKS)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=5, max_concurrency=4)
    fake.configure(predict_delay_s=0.1)  # slow, so the job is still running when Redis dies
    response = await api.post(f"/api/ml/{backend['id']}/predict")
    assert response.status_code == 200, response.text
    job_id: int = response.json()["job_id"]
    worker = WorkerProcess(start_worker)
    await worker.wait_ready(gateway)

    async def progressed() -> bool:
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        assert job["status"] != "completed", "the job finished before Redis was killed"
        return bool(job["done"] > 0)

    await wait_for(progressed, 60, f"job {job_id} to make progress")
    # Hold the backend calls from now on, so the worker still holds unreported chunks once Redis is gone
    # and the count below is read: however slow this machine, their reports come after it.
    held = threading.Event()
    fake.configure(predict_gate=held, ungated_predicts=len(fake.calls("/predict")))
    kill(own_redis)
    done_at_kill = await job_done(api, job_id)
    await wait_for(lambda: ready(gateway, worker.url, False), 30, "the worker to report Redis down")
    assert await ready(gateway, str(gateway.base_url).rstrip("/"), True), (
        "the gateway's HTTP app does not use Redis"
    )

    # While Redis is down: a new job and an annotation are accepted (their enqueues fail after commit,
    # the sweeper and the delivery loop ring again later), and the worker finishes and reports the
    # chunks it holds, then finds Redis gone.
    response = await api.post(f"/api/ml/{other_backend['id']}/predict")
    assert response.status_code == 200, response.text
    late_job_id: int = response.json()["job_id"]
    response = await api.post(
        f"/api/tasks/{late_task_ids[0]}/annotations", json={"result": choice("Positive")}
    )
    assert response.status_code == 201, response.text
    annotation_id: int = response.json()["id"]

    async def worker_reported_during_outage() -> bool:
        return await job_done(api, job_id) > done_at_kill

    held.set()

    await wait_for(worker_reported_during_outage, 30, "the worker to report chunks while Redis is down")
    stranded = await db.fetchval(
        "SELECT count(*) FROM job_chunk WHERE job_id = $1 AND status = 'pending'", job_id
    )
    assert stranded > 0, "chunks queued only in the killed Redis must be left behind"

    own_redis.start()  # same port, empty
    await wait_for(lambda: ready(gateway, worker.url, True), 30, "the worker to reach the new Redis")
    job = await wait_job(api, job_id, timeout_s=60)
    late_job = await wait_job(api, late_job_id, timeout_s=30)

    def delivered() -> bool:
        return any(
            call.body.get("annotation", {}).get("id") == annotation_id for call in fake.calls("/webhook")
        )

    await wait_for(lambda: asyncio.sleep(0, delivered()), 30, "the annotation event to reach the backend")
    assert worker.process.poll() is None, "the worker process reconnected instead of dying"
    await assert_project_predicted_once(db, job, project["id"], TASKS)
    await assert_project_predicted_once(db, late_job, other["id"], LATE_TASKS)
