"""The API's own jobs survive the API: a real API process SIGKILLed mid-job, another one finishes it.

Every kind the job runner runs: a project delete, a model version's predictions, the data manager's
deletes (tasks, predictions, annotations), auto-labeling (``predictions_to_annotations``) and the chunk
planning of a bulk prediction. The job is held mid-way by a task row lock this test takes (planning, which
locks no task, by a trigger that waits on an advisory lock before a given chunk row), so the kill lands
while a batch is open (its transaction is rolled back with the dead process) and after earlier batches
committed. The second
API process resumes from the job's cursor; the outcome is exact: every row gone (or made) once, counters
right.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import orjson

from tests.bulk.conftest import StartApi, StartWorker
from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, import_texts
from tests.support.servers import ServerThread
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


_TASK_ROW = "SELECT id FROM task WHERE id = $1 FOR NO KEY UPDATE"
# Prediction deletes lock no task: the job waits on the prediction itself.
_PREDICTION_ROWS = "SELECT id FROM prediction WHERE task_id = $1 FOR UPDATE"
_V1_PREDICTION_ROWS = "SELECT id FROM prediction WHERE task_id = $1 AND model_version = 'v1' FOR UPDATE"

StartJob = Callable[[httpx.AsyncClient, int], Awaitable[int]]
"""Start the job on the project (the client, its id); the job's id."""


@contextlib.asynccontextmanager
async def _resumed_after_kill(
    start_api: StartApi, db: asyncpg.Connection, database_url: str, start: StartJob, hold: str = _TASK_ROW
) -> AsyncIterator[tuple[httpx.AsyncClient, int, int]]:
    """A project with history (``_project_with_history``) and its job started while ``hold`` locks rows of
    one task; the API is killed once batches committed and the job waits on the lock, then another API
    process starts. Yields (a client of the second process, the project's id, the job's id); afterwards
    the second process must still be serving."""
    first, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        project_id, task_ids = await _project_with_history(api)
        holder = db.transaction()
        await holder.start()
        await db.execute(hold, task_ids[120])
        job_id = await start(api, project_id)
        await wait_for_lock_wait(database_url, "the job to reach the locked task")
        done_before = (await api.get(f"/api/jobs/{job_id}")).json()["done"]
        assert 0 < done_before < TASKS, "the kill must land mid-job"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        await holder.rollback()
    second, url = await asyncio.to_thread(start_api)
    async with _client(url) as api:
        yield api, project_id, job_id
    assert second.poll() is None, "the second API process is still serving"


async def _dm_action(
    api: httpx.AsyncClient, action: str, project_id: int, body: dict[str, str] | None = None
) -> int:
    response = await api.post(
        "/api/dm/actions", params={"id": action, "project": project_id}, json=body or {}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["job_id"])


async def _delete_project(api: httpx.AsyncClient, project_id: int) -> int:
    response = await api.delete(f"/api/projects/{project_id}")
    assert response.status_code == 204, response.text
    return int(response.headers["X-Job-Id"])


async def _delete_version_v1(api: httpx.AsyncClient, project_id: int) -> int:
    response = await api.request(
        "DELETE", f"/api/projects/{project_id}/model-versions", json={"model_version": "v1"}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["job_id"])


async def _counters_match_rows(db: asyncpg.Connection) -> None:
    """Each task's annotation counter, and each project's prediction counter, equal their rows (a task's
    prediction count is counted when read)."""
    wrong = await db.fetchval(
        "SELECT count(*) FROM task t WHERE "
        "total_annotations <> (SELECT count(*) FROM annotation a WHERE a.task_id = t.id)"
    )
    assert wrong == 0
    wrong = await db.fetchval(
        "SELECT count(*) FROM project p WHERE "
        "total_predictions_number <> (SELECT count(*) FROM prediction r WHERE r.project_id = p.id)"
    )
    assert wrong == 0


async def test_api_killed_mid_project_delete_another_finishes_it_exactly(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    async with _resumed_after_kill(start_api, db, database_url, _delete_project) as (api, _, job_id):
        result = await wait_job_result(api, job_id)
        job = (await api.get(f"/api/jobs/{job_id}")).json()
    assert result["processed_items"] == TASKS
    assert (job["done"], job["total"], job["project"]) == (TASKS, TASKS, None)
    for table in ("task", "prediction", "annotation", "project"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_api_killed_mid_version_delete_another_finishes_it_with_exact_counters(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    resumed = _resumed_after_kill(start_api, db, database_url, _delete_version_v1, _V1_PREDICTION_ROWS)
    async with resumed as (api, project_id, job_id):
        job = await wait_job(api, job_id)
        project = (await api.get(f"/api/projects/{project_id}")).json()
    assert job["status"] == "completed", job
    assert (job["done"], job["result"]["processed_items"]) == (TASKS, TASKS)
    versions = await db.fetch("SELECT model_version, count(*) FROM prediction GROUP BY 1")
    assert [tuple(row) for row in versions] == [("v2", TASKS)]
    assert project["total_predictions_number"] == TASKS


async def test_api_killed_mid_annotation_delete_another_finishes_it_exactly(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    async def delete_annotations(api: httpx.AsyncClient, project_id: int) -> int:
        return await _dm_action(api, "delete_tasks_annotations", project_id)

    async with _resumed_after_kill(start_api, db, database_url, delete_annotations) as (
        api,
        project_id,
        job_id,
    ):
        result = await wait_job_result(api, job_id)
        project = (await api.get(f"/api/projects/{project_id}")).json()
    assert result == {"processed_items": TASKS, "detail": f"Deleted {TASKS} annotations"}
    assert await db.fetchval("SELECT count(*) FROM annotation") == 0
    assert (project["total_annotations_number"], project["num_tasks_with_annotations"]) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM task WHERE total_annotations <> 0 OR is_labeled") == 0
    events = await db.fetch("SELECT payload::text FROM outbox_event WHERE action = 'ANNOTATIONS_DELETED'")
    deleted = [item["id"] for row in events for item in orjson.loads(row[0])["annotations"]]
    assert len(deleted) == len(set(deleted)) == TASKS, "each deleted annotation announced exactly once"


async def test_api_killed_mid_tasks_delete_another_finishes_it_exactly(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    async def delete_tasks(api: httpx.AsyncClient, project_id: int) -> int:
        return await _dm_action(api, "delete_tasks", project_id)

    async with _resumed_after_kill(start_api, db, database_url, delete_tasks) as (api, project_id, job_id):
        result = await wait_job_result(api, job_id)
        project = (await api.get(f"/api/projects/{project_id}")).json()
    assert result == {"processed_items": TASKS, "detail": f"Deleted {TASKS} tasks", "deleted": TASKS}
    for table in ("task", "prediction", "annotation"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    counters = ("task_number", "total_predictions_number", "total_annotations_number")
    assert [project[name] for name in counters] == [0, 0, 0], project
    assert project["num_tasks_with_annotations"] == 0


async def test_api_killed_mid_predictions_delete_another_finishes_it_with_exact_counters(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    async def delete_predictions(api: httpx.AsyncClient, project_id: int) -> int:
        return await _dm_action(api, "delete_tasks_predictions", project_id)

    resumed = _resumed_after_kill(start_api, db, database_url, delete_predictions, _PREDICTION_ROWS)
    async with resumed as (api, project_id, job_id):
        result = await wait_job_result(api, job_id)
        project = (await api.get(f"/api/projects/{project_id}")).json()
    assert result == {"processed_items": 2 * TASKS, "detail": f"Deleted {2 * TASKS} predictions"}
    assert await db.fetchval("SELECT count(*) FROM prediction") == 0
    assert await db.fetchval("SELECT count(*) FROM annotation") == TASKS, "annotations untouched"
    assert (project["task_number"], project["total_predictions_number"]) == (TASKS, 0)
    await _counters_match_rows(db)


async def test_api_killed_mid_auto_labeling_another_finishes_it_exactly(
    start_api: StartApi, db: asyncpg.Connection, database_url: str
) -> None:
    async def auto_label(api: httpx.AsyncClient, project_id: int) -> int:
        return await _dm_action(api, "predictions_to_annotations", project_id, {"model_version": "v1"})

    async with _resumed_after_kill(start_api, db, database_url, auto_label) as (api, project_id, job_id):
        result = await wait_job_result(api, job_id)
        project = (await api.get(f"/api/projects/{project_id}")).json()
    assert result == {
        "processed_items": TASKS,
        "detail": f"Created {TASKS} annotations, skipped 0",
        "created": TASKS,
        "skipped": 0,
    }
    made = await db.fetch(
        "SELECT a.id, a.task_id, p.model_version, p.task_id = a.task_id AS own FROM annotation a "
        "JOIN prediction p ON p.id = a.parent_prediction_id"
    )
    assert len(made) == len({row["task_id"] for row in made}) == TASKS, "one annotation per task, once"
    assert {(row["model_version"], row["own"]) for row in made} == {("v1", True)}
    assert (project["total_annotations_number"], project["num_tasks_with_annotations"]) == (2 * TASKS, TASKS)
    await _counters_match_rows(db)
    events = await db.fetch("SELECT payload::text FROM outbox_event WHERE action = 'ANNOTATION_CREATED'")
    announced = [orjson.loads(row[0])["annotation"]["id"] for row in events]
    made_ids = {row["id"] for row in made}
    from_job = [annotation_id for annotation_id in announced if annotation_id in made_ids]
    assert sorted(from_job) == sorted(made_ids), "each new annotation announced exactly once"


_HOLD = 4242
_HOLD_PLANNING = f"""
CREATE FUNCTION hold_planning() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared({_HOLD}); RETURN NEW; END $$;
CREATE TRIGGER hold_planning BEFORE INSERT ON job_chunk FOR EACH ROW WHEN (NEW.seq >= $SEQ)
EXECUTE FUNCTION hold_planning();
"""


async def test_api_killed_mid_chunk_planning_another_finishes_it_exactly(
    start_api: StartApi,
    start_worker: StartWorker,
    gateway_server: ServerThread,
    fake: FakeBackend,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """Planning writes a bulk prediction's chunk rows a window (``job_batch_size`` tasks) per transaction;
    the window that would write chunk ``held`` waits, the API dies, another plans the rest from the
    cursor: every task in exactly one chunk, predicted exactly once."""
    chunk_size, held = 5, 20  # windows of 25 tasks (the start_api batch size): 4 windows committed
    env = {"LABELLOOP_GATEWAY_URL": gateway_server.url, "LABELLOOP_CHUNK_SIZE": str(chunk_size)}
    first, url = await asyncio.to_thread(start_api, **env)
    async with _client(url) as api:
        created = await api.post("/api/projects", json={"title": "plan", "label_config": SENTIMENT_CONFIG})
        project_id = created.json()["id"]
        await import_texts(api, project_id, TASKS)
        await connect_backend(api, project_id, fake.url, batch_size=5)
        await db.execute(_HOLD_PLANNING.replace("$SEQ", str(held)))
        await db.execute("SELECT pg_advisory_lock($1)", _HOLD)
        started = await api.post(
            "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
        )
        assert started.status_code == 200, started.text
        job_id = int(started.json()["job_id"])
        await wait_for_lock_wait(database_url, "planning to reach the held chunk")
        planned = await db.fetchval("SELECT count(*) FROM job_chunk WHERE job_id = $1", job_id)
        assert 0 < planned * chunk_size < TASKS, "the kill must land mid-planning"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        await db.execute("SELECT pg_advisory_unlock($1)", _HOLD)

    second, url = await asyncio.to_thread(start_api, **env)
    start_worker(LABELLOOP_API_URL=url)
    async with _client(url) as api:
        job = await wait_job(api, job_id, timeout_s=120)
        # The project's counters take the chunks' counts in batches; reads add what is not folded yet.
        project = (await api.get(f"/api/projects/{job['project']}")).json()
    assert project["total_predictions_number"] == TASKS
    assert job["status"] == "completed", job
    assert (job["total"], job["done"], job["predicted"], job["failed"]) == (TASKS, TASKS, TASKS, 0), job
    covered = await db.fetchrow(
        "SELECT count(DISTINCT c.id), count(*), count(DISTINCT t) FROM job_chunk c, unnest(c.task_ids) t "
        "WHERE c.job_id = $1",
        job_id,
    )
    assert tuple(covered) == (TASKS // chunk_size, TASKS, TASKS), "each task planned in exactly one chunk"
    stored = await db.fetchrow("SELECT count(*), count(DISTINCT task_id) FROM prediction")
    assert tuple(stored) == (TASKS, TASKS), "every prediction stored exactly once"
    assert second.poll() is None, "the second API process is still serving"
