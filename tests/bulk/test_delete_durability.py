"""The API's own jobs survive the API: a real API process SIGKILLed mid-delete, another one finishes it.

The job is held mid-way by a task row lock this test takes, so the kill lands while a batch is open
(its transaction is rolled back with the dead process) and after earlier batches committed. The second
API process resumes from the job's cursor; the outcome is exact: every row gone once, counters right.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import orjson

from tests.bulk.conftest import StartApi
from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import choice
from tests.support.waiting import wait_for_lock_wait, wait_job, wait_job_result

TASKS = 200


def _client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Token {TEST_API_TOKEN}"}, timeout=60)


async def _project_with_history(api: httpx.AsyncClient) -> tuple[int, list[int]]:
    """TASKS tasks, each with an annotation and a v1 and a v2 prediction."""
    created = await api.post("/api/projects", json={"title": "d", "label_config": SENTIMENT_CONFIG})
    project_id: int = created.json()["id"]
    items = [
        {
            "data": {"text": f"t{i}"},
            "annotations": [{"result": choice("Positive")}],
            "predictions": [
                {"result": choice("Positive"), "model_version": "v1"},
                {"result": choice("Negative"), "model_version": "v2"},
            ],
        }
        for i in range(TASKS)
    ]
    imported = await api.post(f"/api/projects/{project_id}/import?return_task_ids=true", json=items)
    assert imported.status_code == 201, imported.text
    return project_id, imported.json()["task_ids"]


async def _kill_mid_job(
    db: asyncpg.Connection,
    database_url: str,
    api: httpx.AsyncClient,
    process: subprocess.Popen[bytes],
    locked_task: int,
    start: Callable[[], Awaitable[int]],
    hold: str = "SELECT id FROM task WHERE id = $1 FOR NO KEY UPDATE",
) -> int:
    """Start the job (``start``) while ``hold`` locks rows of ``locked_task``, kill the API once batches
    committed and the job waits on the lock, then release it; the job's id."""
    holder = db.transaction()
    await holder.start()
    await db.execute(hold, locked_task)
    job_id: int = await start()
    await wait_for_lock_wait(database_url, "the job to reach the locked task")
    done_before = (await api.get(f"/api/jobs/{job_id}")).json()["done"]
    assert 0 < done_before < TASKS, "the kill must land mid-job"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    await holder.rollback()
    return job_id


async def test_api_killed_mid_project_delete_another_finishes_it_exactly(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    first, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        project_id, task_ids = await _project_with_history(api)

        async def delete() -> int:
            response = await api.delete(f"/api/projects/{project_id}")
            assert response.status_code == 204, response.text
            return int(response.headers["X-Job-Id"])

        job_id = await _kill_mid_job(db, database_url, api, first, task_ids[120], delete)

    _, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        result = await wait_job_result(api, job_id)
        job = (await api.get(f"/api/jobs/{job_id}")).json()
    assert result["processed_items"] == TASKS
    assert (job["done"], job["total"], job["project"]) == (TASKS, TASKS, None)
    for table in ("task", "prediction", "annotation", "project"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_api_killed_mid_version_delete_another_finishes_it_with_exact_counters(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    first, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        project_id, task_ids = await _project_with_history(api)

        async def delete_version() -> int:
            response = await api.request(
                "DELETE", f"/api/projects/{project_id}/model-versions", json={"model_version": "v1"}
            )
            assert response.status_code == 200, response.text
            return int(response.json()["job_id"])

        # The job deletes predictions without locking their tasks: it waits on the prediction itself.
        hold = "SELECT id FROM prediction WHERE task_id = $1 AND model_version = 'v1' FOR UPDATE"
        job_id = await _kill_mid_job(db, database_url, api, first, task_ids[120], delete_version, hold)

    second, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        job = await wait_job(api, job_id)
        project = (await api.get(f"/api/projects/{project_id}")).json()
    assert job["status"] == "completed", job
    assert (job["done"], job["result"]["processed_items"]) == (TASKS, TASKS)
    versions = await db.fetch("SELECT model_version, count(*) FROM prediction GROUP BY 1")
    assert [tuple(row) for row in versions] == [("v2", TASKS)]
    assert project["total_predictions_number"] == TASKS
    assert second.poll() is None, "the second API process is still serving"


async def test_api_killed_mid_annotation_delete_another_finishes_it_exactly(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    first, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        project_id, task_ids = await _project_with_history(api)

        async def delete_annotations() -> int:
            response = await api.post(
                "/api/dm/actions", params={"id": "delete_tasks_annotations", "project": project_id}
            )
            assert response.status_code == 200, response.text
            return int(response.json()["job_id"])

        job_id = await _kill_mid_job(db, database_url, api, first, task_ids[120], delete_annotations)

    second, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        result = await wait_job_result(api, job_id)
        project = (await api.get(f"/api/projects/{project_id}")).json()
    assert result == {"processed_items": TASKS, "detail": f"Deleted {TASKS} annotations"}
    assert await db.fetchval("SELECT count(*) FROM annotation") == 0
    assert (project["total_annotations_number"], project["num_tasks_with_annotations"]) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM task WHERE total_annotations <> 0 OR is_labeled") == 0
    events = await db.fetch("SELECT payload::text FROM outbox_event WHERE action = 'ANNOTATIONS_DELETED'")
    deleted = [item["id"] for row in events for item in orjson.loads(row[0])["annotations"]]
    assert len(deleted) == len(set(deleted)) == TASKS, "each deleted annotation announced exactly once"
    assert second.poll() is None, "the second API process is still serving"
