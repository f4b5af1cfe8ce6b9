"""A gateway worker outlives its annotation API: it takes no job while the API is not ready, and loses no
work it holds when the API goes away.

Workers and the API start in any order (``make run`` starts them together; an orchestrator restarts
either alone). Real worker processes run against an address where a real API process is not up yet, or
is killed mid-work and started again on the same address; the suite's own API (another replica on the
same database) records the jobs meanwhile.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from devstack.embedded import free_port
from shared.jobs import QUEUE_NAME
from tests.bulk.conftest import StartApi, StartWorker
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import choice, connect_backend, import_texts
from tests.support.waiting import wait_for, wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 60


class WorkerOnApi:
    """A worker process whose annotation API is whatever listens on ``api_port``: nothing yet, maybe."""

    def __init__(self, start_worker: StartWorker, api_port: int) -> None:
        probe_port = free_port()
        self.url = f"http://127.0.0.1:{probe_port}"
        start_worker(
            LABELLOOP_API_URL=f"http://127.0.0.1:{api_port}", LABELLOOP_WORKER_PROBE_PORT=str(probe_port)
        )

    async def says(self, status: int, reason: str = "") -> bool:
        """Whether its ``/ready`` answers ``status``, with a reason starting with ``reason``."""
        async with httpx.AsyncClient() as client:
            try:
                answer = await client.get(f"{self.url}/ready")
            except httpx.TransportError:
                return False
        return answer.status_code == status and answer.json().get("reason", "").startswith(reason)


async def _api_and_its_worker(
    start_api: StartApi, start_worker: StartWorker
) -> tuple[subprocess.Popen[bytes], int, WorkerOnApi]:
    """An API process of the worker's own (to kill and start again on its port), and the worker, ready."""
    api_port = free_port()
    own_api, _ = start_api(port=api_port)
    worker = WorkerOnApi(start_worker, api_port)
    await wait_for(lambda: worker.says(200), 60, "the worker to be ready")
    return own_api, api_port, worker


async def test_a_worker_started_before_its_api_leaves_every_job_queued_until_the_api_is_ready(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    start_api: StartApi,
    redis_url: str,
    db: asyncpg.Connection,
) -> None:
    task_ids = await import_texts(api, project["id"], TASKS)
    backend = await connect_backend(api, project["id"], fake.url)
    annotated = await api.post(f"/api/tasks/{task_ids[0]}/annotations", json={"result": choice("Positive")})
    assert annotated.status_code == 201, annotated.text
    train_job_id = (await api.post(f"/api/ml/{backend['id']}/train")).json()["job_id"]
    predict_job_id = (await api.post(f"/api/ml/{backend['id']}/predict")).json()["job_id"]

    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:

        async def queued() -> list[str]:
            return list(await redis.zrange(QUEUE_NAME, 0, -1))

        async def every_kind_queued() -> bool:
            ids = await queued()
            return all(any(i.startswith(kind) for i in ids) for kind in ("chunk:", "deliver:", "train:"))

        await wait_for(every_kind_queued, 30, "chunks, a delivery and a training job on the queue")
        waiting = await queued()

        api_port = free_port()
        worker = WorkerOnApi(start_worker, api_port)
        # The reason names a failed check only once the poll loop ran one (before, it says "starting",
        # then "not checked yet"): the worker had its chance at the queue, and took nothing from it.
        await wait_for(
            lambda: worker.says(503, "annotation API not ready: ConnectError"),
            60,
            "the worker to report its API not ready",
        )
        for job_id in waiting:
            assert await redis.exists(f"arq:in-progress:{job_id}", f"arq:retry:{job_id}") == 0, job_id
        assert set(waiting) <= set(await queued()), "no job left the queue"
        assert fake.calls("/predict") == [] and fake.calls("/webhook") == []

        start_api(port=api_port)
        await wait_for(lambda: worker.says(200), 60, "the worker to see its API ready")
    finally:
        await redis.aclose()

    predicted = await wait_job(api, predict_job_id, timeout_s=120)
    assert predicted["status"] == "completed", predicted
    assert (predicted["done"], predicted["failed"]) == (TASKS, 0), predicted
    assert await db.fetchval("SELECT count(DISTINCT task_id) FROM prediction") == TASKS
    assert await db.fetchval("SELECT count(*) FROM prediction") == TASKS
    attempts = await db.fetchval("SELECT max(attempts) FROM job_chunk WHERE job_id = $1", predict_job_id)
    assert attempts == 1, "every chunk was leased once, by the worker, once its API was ready"
    trained = await wait_job(api, train_job_id, timeout_s=60)
    assert trained["status"] == "completed", trained
    await fake.wait_for_calls("/webhook", 2, timeout_s=30)
    actions = sorted(call.body["action"] for call in fake.calls("/webhook"))
    assert actions == ["ANNOTATION_CREATED", "START_TRAINING"], actions


async def test_a_job_that_finds_its_api_gone_goes_back_on_the_queue_and_the_worker_waits(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    start_api: StartApi,
    redis_url: str,
) -> None:
    """The worker's API dies while another replica still takes writes: the delivery job the worker takes
    next cannot connect, so it goes back on the queue, and the worker takes nothing more until its API is
    back; then the event is delivered, once."""
    task_ids = await import_texts(api, project["id"], 2)
    await connect_backend(api, project["id"], fake.url)
    own_api, api_port, worker = await _api_and_its_worker(start_api, start_worker)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        own_api.kill()
        own_api.wait(timeout=10)
        annotated = await api.post(
            f"/api/tasks/{task_ids[0]}/annotations", json={"result": choice("Positive")}
        )
        assert annotated.status_code == 201, annotated.text
        await wait_for(
            lambda: worker.says(503, "annotation API not ready: ConnectError"),
            60,
            "the worker to find its API gone",
        )
        handed_back = [i for i in await redis.zrange(QUEUE_NAME, 0, -1) if i.startswith("deliver:")]
        assert handed_back, "the delivery job is still on the queue"
        assert any([await redis.get(f"arq:retry:{job_id}") for job_id in handed_back]), (
            "the worker took the job once, and gave it back"
        )
        assert fake.calls("/webhook") == []

        start_api(port=api_port)
        await wait_for(lambda: worker.says(200), 60, "the worker to see its API back")
    finally:
        await redis.aclose()
    await fake.wait_for_calls("/webhook", 1, timeout_s=30)
    assert [call.body["action"] for call in fake.calls("/webhook")] == ["ANNOTATION_CREATED"]


@pytest.mark.api_settings(chunk_lease_s=30.0)
async def test_chunks_in_flight_when_the_api_dies_are_reported_once_it_is_back(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    start_api: StartApi,
    db: asyncpg.Connection,
) -> None:
    """The worker's API is killed while the backend predicts its chunks and comes back seconds later,
    longer than a report's ordinary retries last: the reports wait for it, within their leases, so no
    chunk is leased or predicted twice."""
    await import_texts(api, project["id"], 40)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=10)
    own_api, api_port, worker = await _api_and_its_worker(start_api, start_worker)
    fake.configure(predict_delay_s=1.5)
    job_id = (await api.post(f"/api/ml/{backend['id']}/predict")).json()["job_id"]
    await fake.wait_for_calls("/predict", 4, timeout_s=30)
    own_api.kill()
    own_api.wait(timeout=10)
    await wait_for(
        lambda: worker.says(503, "annotation API not ready"), 30, "the reports to find the API gone"
    )
    # Longer than a call's ordinary retries (0.5 + 1 + 2 s) take to give up.
    await asyncio.sleep(4.5)
    start_api(port=api_port)
    job = await wait_job(api, job_id, timeout_s=60)
    assert job["status"] == "completed", job
    assert (job["done"], job["predicted"], job["failed"]) == (40, 40, 0), job
    attempts = await db.fetchval("SELECT max(attempts) FROM job_chunk WHERE job_id = $1", job_id)
    assert attempts == 1, "every chunk was leased once: its report waited for the API"
    assert sum(len(call.body["tasks"]) for call in fake.calls("/predict")) == 40
    assert await db.fetchval("SELECT count(*) FROM prediction") == 40


async def test_a_training_run_that_ends_while_the_api_is_down_is_reported_once_it_is_back(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    start_api: StartApi,
) -> None:
    """The backend trains while the worker's API is killed; the outcome, reported after longer than a
    call's ordinary retries, still reaches the API once it is back, and the job completes."""
    await import_texts(api, project["id"], 2)
    backend = await connect_backend(api, project["id"], fake.url)
    own_api, api_port, _ = await _api_and_its_worker(start_api, start_worker)
    fake.configure(webhook_delay_s=1.5)
    job_id = (await api.post(f"/api/ml/{backend['id']}/train")).json()["job_id"]
    await fake.wait_for_calls("/webhook", 1, timeout_s=30)
    own_api.kill()
    own_api.wait(timeout=10)
    await asyncio.sleep(4.5)  # past the end of training, and longer than 0.5 + 1 + 2 s of retries
    start_api(port=api_port)
    job = await wait_job(api, job_id, timeout_s=60)
    assert job["status"] == "completed", job
    assert [call.body["action"] for call in fake.calls("/webhook")] == ["START_TRAINING"]
