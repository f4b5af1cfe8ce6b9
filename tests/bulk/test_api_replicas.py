"""Several API replicas on one database: their background loops (chunk planning, the job runner, the fold,
the sweeper) share the work through ``SKIP LOCKED`` and the outcome is exact.

Two API processes: the test's in-process API (users' calls) and a real uvicorn process, which the gateway
workers report to and which takes the deletes. Both run every loop, with small batches so that each job
takes many turns that either replica may take.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from tests.bulk.conftest import StartApi, StartWorker
from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.servers import ServerThread
from tests.support.waiting import wait_job, wait_job_result

pytestmark = pytest.mark.api_settings(job_batch_size=7, job_inline_tasks=0, job_poll_interval_s=0.2)

TASKS = 300
CHUNK_SIZE = 10


async def _counters(api: httpx.AsyncClient, project_id: int) -> tuple[int, int]:
    project = (await api.get(f"/api/projects/{project_id}")).json()
    return project["task_number"], project["total_predictions_number"]


async def test_two_api_replicas_share_planning_runner_fold_and_sweeps_exactly(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    gateway_server: ServerThread,
    start_api: StartApi,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    _, replica_url = await asyncio.to_thread(
        start_api,
        LABELLOOP_GATEWAY_URL=gateway_server.url,
        LABELLOOP_CHUNK_SIZE=str(CHUNK_SIZE),
        LABELLOOP_CHUNK_LEASE_S="5",
        LABELLOOP_SWEEP_INTERVAL_S="0.2",
        LABELLOOP_BACKEND_CHECK_INTERVAL_S="3600",
    )
    for _ in range(2):
        start_worker(LABELLOOP_API_URL=replica_url)
    project_id = project["id"]
    await import_texts(api, project_id, TASKS)
    await connect_backend(api, project_id, fake.url, batch_size=5)

    started = await api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
    )
    assert started.status_code == 200, started.text
    job = await wait_job(api, started.json()["job_id"], timeout_s=120)
    assert job["status"] == "completed", job
    assert (job["done"], job["predicted"], job["failed"]) == (TASKS, TASKS, 0), job
    chunks = await db.fetchval("SELECT count(*) FROM job_chunk WHERE job_id = $1", job["id"])
    assert chunks == TASKS // CHUNK_SIZE, "each chunk planned once"
    stored = await db.fetchrow("SELECT count(*), count(DISTINCT task_id) FROM prediction")
    assert tuple(stored) == (TASKS, TASKS), "every prediction stored exactly once"

    headers = {"Authorization": f"Token {TEST_API_TOKEN}"}
    async with httpx.AsyncClient(base_url=replica_url, headers=headers, timeout=60) as replica:
        for client in (api, replica):
            assert await _counters(client, project_id) == (TASKS, TASKS)
        deleting = await replica.post(
            "/api/dm/actions", params={"id": "delete_tasks_predictions", "project": project_id}
        )
        assert deleting.status_code == 200, deleting.text
        result = await wait_job_result(replica, deleting.json()["job_id"])
        assert result["processed_items"] == TASKS
        assert await db.fetchval("SELECT count(*) FROM prediction") == 0
        for client in (api, replica):
            assert await _counters(client, project_id) == (TASKS, 0)

        removed = await replica.delete(f"/api/projects/{project_id}")
        assert removed.status_code == 204, removed.text
        await wait_job_result(replica, int(removed.headers["X-Job-Id"]))
    for table in ("task", "prediction", "project"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
