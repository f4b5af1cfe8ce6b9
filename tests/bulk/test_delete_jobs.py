"""Deletes and auto-labeling too large for a request: jobs in the API's runner, batch by batch, exact.

``job_inline_tasks=0`` sends every selection to the runner and ``job_batch_size=7`` makes each job take
several batches, so these tests exercise the cursor, the counters and the VACUUM a large job goes through.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import choice, connect_backend, import_tasks, read_project
from tests.support.waiting import wait_for_lock_wait, wait_job, wait_job_result, wait_planned

pytestmark = [
    pytest.mark.usefixtures("gateway_server"),
    pytest.mark.api_settings(job_inline_tasks=0, job_batch_size=7),
]

TASKS = 30
ACTION = "/api/dm/actions"
# The tables a project delete touches; each must be left without the project's rows and dead tuples.
TOUCHED = ("task", "prediction", "annotation", "outbox_event", "job_chunk")


async def _populate(api: httpx.AsyncClient, project_id: int, count: int = TASKS) -> list[int]:
    """``count`` tasks, each with one annotation and a v1 and a v2 prediction."""
    items = [
        {
            "data": {"text": f"t{i}"},
            "annotations": [{"result": choice("Positive")}],
            "predictions": [
                {"result": choice("Positive"), "model_version": "v1", "score": 0.9},
                {"result": choice("Negative"), "model_version": "v2", "score": 0.9},
            ],
        }
        for i in range(count)
    ]
    body = await import_tasks(api, project_id, items, return_task_ids="true")
    task_ids: list[int] = body["task_ids"]
    return task_ids


async def _act(api: httpx.AsyncClient, action: str, project_id: int, body: Any) -> dict[str, Any]:
    response = await api.post(ACTION, params={"id": action, "project": project_id}, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["detail"].endswith(f"in the background: follow GET /api/jobs/{answer['job_id']}")
    return answer


async def _counters(api: httpx.AsyncClient, project_id: int) -> tuple[int, int, int, int]:
    p = await read_project(api, project_id)
    return (
        p["task_number"],
        p["total_annotations_number"],
        p["total_predictions_number"],
        p["num_tasks_with_annotations"],
    )


async def _task_counters_are_exact(db: asyncpg.Connection, project_id: int) -> None:
    wrong = await db.fetchval(
        """
        SELECT count(*) FROM task t WHERE t.project_id = $1
          AND t.total_annotations <> (SELECT count(*) FROM annotation a WHERE a.task_id = t.id)
        """,
        project_id,
    )
    assert wrong == 0


async def test_large_deletes_and_auto_labeling_run_as_batched_jobs(
    api: httpx.AsyncClient, project: dict[str, Any], db: asyncpg.Connection
) -> None:
    project_id = project["id"]
    task_ids = await _populate(api, project_id)

    response = await api.request(
        "DELETE", f"/api/projects/{project_id}/model-versions", json={"model_version": "v1"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["deleted_predictions"] == 0, "answered before the work"
    job = await wait_job(api, response.json()["job_id"])
    assert (job["kind"], job["status"], job["total"], job["done"]) == (
        "delete_predictions",
        "completed",
        30,
        30,
    )
    assert job["result"] == {"processed_items": 30, "detail": "Deleted 30 predictions"}
    assert await _counters(api, project_id) == (30, 30, 30, 30)

    selection = {"selectedItems": {"all": False, "included": task_ids[:10]}}
    answer = await _act(api, "delete_tasks_predictions", project_id, selection)
    assert answer["processed_items"] == 10
    assert (await wait_job_result(api, answer["job_id"]))["processed_items"] == 10
    assert await _counters(api, project_id) == (30, 30, 20, 30)

    answer = await _act(api, "predictions_to_annotations", project_id, {"model_version": "v2"})
    result = await wait_job_result(api, answer["job_id"])
    assert (result["created"], result["skipped"]) == (20, 10)
    assert await _counters(api, project_id) == (30, 50, 20, 30)
    events = await db.fetchval(
        "SELECT count(*) FROM outbox_event WHERE project_id = $1 AND action = 'ANNOTATION_CREATED'",
        project_id,
    )
    assert events == 20

    everything_but_one = {"selectedItems": {"all": True, "excluded": [task_ids[-1]]}}
    answer = await _act(api, "delete_tasks", project_id, everything_but_one)
    assert (answer["processed_items"], answer["reload"]) == (29, True)
    assert (await wait_job_result(api, answer["job_id"]))["processed_items"] == 29
    assert await _counters(api, project_id) == (1, 2, 1, 1)
    assert [row[0] for row in await db.fetch("SELECT id FROM task WHERE project_id = $1", project_id)] == [
        task_ids[-1]
    ]
    await _task_counters_are_exact(db, project_id)


async def test_project_delete_leaves_no_rows_and_no_dead_tuples(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    project_id = project["id"]
    task_ids = await _populate(api, project_id)
    for task_id in task_ids[:3]:  # annotations written through the API leave outbox events
        created = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice("Negative")})
        assert created.status_code == 201, created.text
    await connect_backend(api, project_id, fake.url)
    started = await api.post(ACTION, params={"id": "retrieve_tasks_predictions", "project": project_id})
    await wait_planned(db, started.json()["job_id"])  # chunk rows exist; no worker runs them
    other = await api.post("/api/projects", json={"title": "kept", "label_config": project["label_config"]})
    kept_tasks = await _populate(api, other.json()["id"], 2)
    assert await db.fetchval("SELECT count(*) FROM job_chunk") > 0
    assert await db.fetchval("SELECT count(*) FROM outbox_event WHERE project_id = $1", project_id) == 3

    response = await api.delete(f"/api/projects/{project_id}")
    assert response.status_code == 204, response.text
    job = await wait_job(api, int(response.headers["X-Job-Id"]))
    assert (job["status"], job["kind"], job["project"], job["done"]) == (
        "completed",
        "delete_project",
        None,
        30,
    )
    assert (await api.get(f"/api/jobs/{started.json()['job_id']}")).status_code == 404

    for table in TOUCHED[:-1]:
        left = await db.fetchval(f"SELECT count(*) FROM {table} WHERE project_id = $1", project_id)
        assert left == 0, table
    assert await db.fetchval("SELECT count(*) FROM job_chunk") == 0, "the other project has no job"
    assert await db.fetchval("SELECT count(*) FROM task") == len(kept_tasks)
    await db.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    for table in TOUCHED:
        dead = await db.fetchval("SELECT dead_tuple_count FROM pgstattuple($1)", table)
        assert dead == 0, f"{table} kept {dead} dead tuples"
        vacuumed = await db.fetchval(
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1", table
        )
        assert vacuumed, f"{table} was not vacuumed by the delete job"


async def test_cancelled_project_delete_shows_what_is_left_with_exact_counters(
    api: httpx.AsyncClient, project: dict[str, Any], db: asyncpg.Connection, database_url: str
) -> None:
    project_id = project["id"]
    task_ids = await _populate(api, project_id, 20)
    writer = db.transaction()
    await writer.start()
    await db.execute("SELECT id FROM task WHERE id = $1 FOR NO KEY UPDATE", task_ids[10])
    response = await api.delete(f"/api/projects/{project_id}")
    job_id = int(response.headers["X-Job-Id"])
    assert (await api.get(f"/api/projects/{project_id}")).status_code == 404
    await wait_for_lock_wait(database_url, "the delete job to reach the locked task")
    cancel = asyncio.create_task(api.post(f"/api/jobs/{job_id}/cancel"))
    # The cancel queues for the job's row, which the blocked batch holds: it goes next, before any batch.
    await wait_for_lock_wait(database_url, "the cancel to wait for the running batch", sessions=2)
    await writer.commit()
    cancelled = await cancel
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    left = await db.fetchval("SELECT count(*) FROM task WHERE project_id = $1", project_id)
    assert 0 < left < 20, "some batches ran, the rest was stopped"
    assert cancelled.json()["done"] == 20 - left
    assert await _counters(api, project_id) == (left, left, 2 * left, left)
    await _task_counters_are_exact(db, project_id)
    final = await wait_job(api, job_id, frozenset({"cancelled"}))
    assert final["done"] == 20 - left


async def test_a_project_being_deleted_answers_404_to_every_read_of_it(
    api: httpx.AsyncClient, project: dict[str, Any], db: asyncpg.Connection, database_url: str
) -> None:
    project_id = project["id"]
    task_ids = await _populate(api, project_id, 20)
    annotation_id = await db.fetchval("SELECT min(id) FROM annotation WHERE task_id = $1", task_ids[0])
    prediction_id = await db.fetchval("SELECT min(id) FROM prediction WHERE task_id = $1", task_ids[0])
    writer = db.transaction()
    await writer.start()
    await db.execute("SELECT id FROM task WHERE id = $1 FOR NO KEY UPDATE", task_ids[10])
    response = await api.delete(f"/api/projects/{project_id}")
    assert response.status_code == 204, response.text
    await wait_for_lock_wait(database_url, "the delete job to reach the locked task")
    assert await db.fetchval("SELECT count(*) FROM task WHERE id = $1", task_ids[-1]) == 1
    try:
        reads = [
            f"/api/projects/{project_id}",
            f"/api/tasks?project={project_id}",
            f"/api/tasks/{task_ids[-1]}",
            f"/api/tasks/{task_ids[-1]}/annotations",
            f"/api/annotations/{annotation_id}",
            f"/api/predictions/{prediction_id}",
            f"/api/predictions?task={task_ids[-1]}",
            f"/api/projects/{project_id}/next",
            f"/api/projects/{project_id}/model-versions",
            f"/api/projects/{project_id}/export",
        ]
        for url in reads:
            read = await api.get(url)
            assert read.status_code == 404, (url, read.status_code, read.text)
        listed = (await api.get("/api/projects")).json()["results"]
        assert project_id not in [item["id"] for item in listed]
        patched = await api.patch(f"/api/tasks/{task_ids[-1]}", json={"meta": {"x": 1}})
        assert patched.status_code == 404, patched.text
    finally:
        await writer.commit()
    await wait_job(api, int(response.headers["X-Job-Id"]))


async def test_annotation_delete_runs_as_a_batched_job_with_its_events_and_exact_counters(
    api: httpx.AsyncClient, project: dict[str, Any], db: asyncpg.Connection
) -> None:
    project_id = project["id"]
    task_ids = await _populate(api, project_id)
    before = [row[0] for row in await db.fetch("SELECT id FROM annotation ORDER BY id")]
    everything_but_one = {"selectedItems": {"all": True, "excluded": [task_ids[-1]]}}
    answer = await _act(api, "delete_tasks_annotations", project_id, everything_but_one)
    assert answer["processed_items"] == TASKS - 1
    job = await wait_job(api, answer["job_id"])
    assert (job["kind"], job["status"], job["done"]) == ("delete_annotations", "completed", TASKS - 1)
    assert job["result"] == {"processed_items": TASKS - 1, "detail": f"Deleted {TASKS - 1} annotations"}
    assert await _counters(api, project_id) == (TASKS, 1, 2 * TASKS, 1)
    await _task_counters_are_exact(db, project_id)
    rows = await db.fetch("SELECT action, payload::text FROM outbox_event WHERE project_id = $1", project_id)
    assert {row[0] for row in rows} == {"ANNOTATIONS_DELETED"}
    deleted = sorted(item["id"] for row in rows for item in orjson.loads(row[1])["annotations"])
    assert deleted == before[:-1]
