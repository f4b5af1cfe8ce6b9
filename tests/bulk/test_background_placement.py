"""``LABELLOOP_BACKGROUND_LOOPS``: an API process with the loops off only serves requests, and the jobs its
requests record are run by an API process with them on, woken at once through Postgres ``NOTIFY``.

Two real API processes on one database, as ``make run`` and ``deploy/`` run them: the users' one (loops
off), where every request of this test goes, and the internal one (loops on), which the gateway worker
reports to. Both poll for jobs only once an hour, so a job that starts at all was started by the
notification. The users' process runs no job batch (its ``labelloop_job_runner_batches_total`` stays 0)
while the internal one runs them all.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests.bulk.conftest import StartApi, StartWorker
from tests.bulk.test_metrics import scrape, value
from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import connect_backend, create_project, import_texts
from tests.support.servers import ServerThread
from tests.support.waiting import wait_job, wait_job_result

TASKS = 60
BATCHES = "labelloop_job_runner_batches_total"
NEVER_POLL = {"LABELLOOP_JOB_POLL_INTERVAL_S": "3600", "LABELLOOP_CHUNK_SIZE": "10"}


@pytest.fixture
async def processes(start_api: StartApi, gateway_server: ServerThread) -> tuple[str, str]:
    """The users' API (loops off) and the internal API (loops on): their URLs."""
    gateway = {"LABELLOOP_GATEWAY_URL": gateway_server.url, **NEVER_POLL}
    _, users = await asyncio.to_thread(start_api, LABELLOOP_BACKGROUND_LOOPS="false", **gateway)
    _, internal = await asyncio.to_thread(start_api, LABELLOOP_BACKGROUND_LOOPS="true", **gateway)
    return users, internal


async def _start_delay_s(db: asyncpg.Connection, job_id: int) -> float:
    delay = await db.fetchval(
        "SELECT extract(epoch FROM started_at - created_at) FROM job WHERE id = $1", job_id
    )
    return float(delay)


async def test_jobs_requested_where_the_loops_are_off_are_run_by_the_process_with_them(
    processes: tuple[str, str],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    users_url, internal_url = processes
    headers = {"Authorization": f"Token {TEST_API_TOKEN}"}
    async with httpx.AsyncClient(base_url=users_url, headers=headers, timeout=60) as users:
        ready = {url: (await users.get(f"{url}/ready")).json() for url in processes}
        assert ready[users_url]["background_loops"] is False, ready
        assert ready[internal_url]["background_loops"] is True, ready

        project = await create_project(users, SENTIMENT_CONFIG, title="placement")
        project_id = project["id"]
        await import_texts(users, project_id, TASKS)
        await connect_backend(users, project_id, fake.url, batch_size=5)
        start_worker(LABELLOOP_API_URL=internal_url)

        predicting = await users.post(
            "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
        )
        assert predicting.status_code == 200, predicting.text
        predict_id = predicting.json()["job_id"]
        job = await wait_job(users, predict_id, timeout_s=60)
        assert job["status"] == "completed", job
        assert (job["done"], job["predicted"], job["failed"]) == (TASKS, TASKS, 0), job
        stored = await db.fetchrow("SELECT count(*), count(DISTINCT task_id) FROM prediction")
        assert tuple(stored) == (TASKS, TASKS), "every prediction stored exactly once"

        deleting = await users.post(
            "/api/dm/actions", params={"id": "delete_tasks_predictions", "project": project_id}
        )
        assert deleting.status_code == 200, deleting.text
        delete_id = deleting.json()["job_id"]
        result = await wait_job_result(users, delete_id)
        assert result["processed_items"] == TASKS
        assert await db.fetchval("SELECT count(*) FROM prediction") == 0
        assert (await users.get(f"/api/projects/{project_id}")).json()["total_predictions_number"] == 0

        users_metrics, internal_metrics = [await scrape(users, url) for url in processes]
    assert (BATCHES, frozenset()) in users_metrics, "the counter is exported, at zero"
    assert value(users_metrics, BATCHES) == 0, "the users' process ran no job batch"
    # Chunk planning of the predict job, then the delete's batches and its VACUUM.
    assert value(internal_metrics, BATCHES) >= 3
    for job_id in (predict_id, delete_id):
        print(f"job {job_id}: started {await _start_delay_s(db, job_id) * 1000:.1f} ms after its request")
