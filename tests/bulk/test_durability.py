"""Nothing lost, nothing doubled: real worker processes killed with SIGKILL, and Redis flushed, mid-job.

The backend answers the first ``UNGATED`` predict calls and holds the rest until the test opens its gate,
so the job is certainly part-done when the damage is done (no race with a slow backend); the sweeper's
short test lease (``chunk_lease_s`` = 2 s) brings the orphaned chunks back.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from tests.bulk.conftest import StartWorker
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.databases import project_predictions
from tests.support.waiting import wait_for, wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 300
UNGATED = 10


async def start_held_job(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, gate: threading.Event
) -> int:
    await import_texts(api, project["id"], TASKS)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=5, max_concurrency=4)
    fake.configure(predict_gate=gate, ungated_predicts=UNGATED)
    response = await api.post(f"/api/ml/{backend['id']}/predict")
    assert response.status_code == 200, response.text
    job_id: int = response.json()["job_id"]
    return job_id


async def some_done_but_not_all(api: httpx.AsyncClient, job_id: int) -> None:
    async def progressed() -> bool:
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        assert job["status"] != "completed", "the gate holds the job back"
        return bool(job["done"] > 0)

    await wait_for(progressed, 60, f"job {job_id} to make progress")


async def finished_job(api: httpx.AsyncClient, db: asyncpg.Connection, job_id: int) -> dict[str, Any]:
    """The job once it finished; on a timeout, the error also lists its chunks not done (Postgres' side of
    a stall: which chunks, how many attempts, how long their leases still run)."""
    try:
        return await wait_job(api, job_id, timeout_s=90)
    except AssertionError as exc:
        rows = await db.fetch(
            "SELECT id, status, attempts, lease_expires_at - now() AS lease_left, enqueued_at "
            "FROM job_chunk WHERE job_id = $1 AND status <> 'done' ORDER BY id",
            job_id,
        )
        raise AssertionError(f"{exc}; chunks not done: {[dict(row) for row in rows]}") from None


async def assert_each_prediction_once(db: asyncpg.Connection, job: dict[str, Any]) -> None:
    assert job["status"] == "completed", job
    assert (job["done"], job["failed"]) == (TASKS, 0), job
    assert await db.fetchval("SELECT count(*) FROM prediction") == TASKS
    assert await db.fetchval("SELECT count(DISTINCT task_id) FROM prediction") == TASKS
    assert await project_predictions(db) == TASKS


async def test_worker_killed_mid_job_another_finishes_it(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    gate = threading.Event()
    job_id = await start_held_job(api, project, fake, gate)
    first = start_worker()
    await some_done_but_not_all(api, job_id)

    async def holding_leased_chunks() -> bool:
        leased = await db.fetchval("SELECT count(*) FROM job_chunk WHERE status = 'leased'")
        return bool(leased > 0 and fake.current_concurrency > 0)

    # The kill must land while the worker holds leases (its calls wait at the gate), not between chunks.
    await wait_for(holding_leased_chunks, 60, "the worker to hold leased chunks at the gate")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    leased = await db.fetchval("SELECT count(*) FROM job_chunk WHERE status = 'leased'")
    assert leased > 0, "the kill must leave leased chunks behind"

    gate.set()
    start_worker()
    job = await finished_job(api, db, job_id)
    await assert_each_prediction_once(db, job)
    retried = await db.fetchval("SELECT count(*) FROM job_chunk WHERE attempts > 1")
    assert retried > 0, "chunks the dead worker held were leased again"


async def test_redis_flushed_mid_job_the_sweeper_requeues(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    redis_url: str,
    db: asyncpg.Connection,
) -> None:
    gate = threading.Event()
    job_id = await start_held_job(api, project, fake, gate)
    start_worker()
    await some_done_but_not_all(api, job_id)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    waiting = await db.fetchval("SELECT count(*) FROM job_chunk WHERE status = 'pending'")
    assert waiting > 0, "the flush must drop queued chunks"
    gate.set()

    job = await finished_job(api, db, job_id)
    await assert_each_prediction_once(db, job)


async def test_max_concurrency_holds_across_worker_processes(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    """Two worker processes, each allowed two calls of its own: the backend still never sees more than the
    backend's max_concurrency (2) in flight, counted by the fake backend itself."""
    await import_texts(api, project["id"], 120)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=5, max_concurrency=2)
    fake.configure(predict_delay_s=0.05)
    response = await api.post(f"/api/ml/{backend['id']}/predict")
    job_id = response.json()["job_id"]
    start_worker()
    start_worker()
    job = await finished_job(api, db, job_id)
    assert (job["status"], job["done"], job["failed"]) == ("completed", 120, 0), job
    assert len(fake.calls("/predict")) == 24
    assert fake.max_concurrency == 2
