"""Deleting a project while a writer holds some of its tasks: hidden at once, deleted once the writer is done.

Every writer (a chunk report, an annotation) locks tasks first and the project row (its counters) last.
The request only marks the project (``deleting``) and records a job; the job takes tasks first and the
project row last, like every writer, so it waits for the writer instead of deadlocking with it (a
DELETE that took the project row first and met the tasks in its cascade deadlocked: a 500).
"""

from __future__ import annotations

import asyncpg
import httpx

from tests.support.waiting import wait_for_lock_wait, wait_job_result

LABEL_CONFIG = '<View><Text name="text" value="$text"/></View>'


async def test_delete_hides_at_once_waits_for_a_writer_holding_tasks_then_finishes(
    api: httpx.AsyncClient, database_url: str
) -> None:
    response = await api.post("/api/projects", json={"title": "p", "label_config": LABEL_CONFIG})
    project_id = response.json()["id"]
    imported = await api.post(
        f"/api/projects/{project_id}/import",
        json=[{"text": "a"}, {"text": "b"}],
        params={"return_task_ids": "true"},
    )
    task_id = imported.json()["task_ids"][0]

    db = await asyncpg.connect(database_url)
    try:
        writer = db.transaction()
        await writer.start()
        await db.execute("SELECT id FROM task WHERE id = $1 FOR NO KEY UPDATE", task_id)
        response = await api.delete(f"/api/projects/{project_id}")
        assert response.status_code == 204, response.text
        job_id = int(response.headers["X-Job-Id"])
        assert (await api.get(f"/api/projects/{project_id}")).status_code == 404
        listed = (await api.get("/api/projects")).json()
        assert project_id not in [project["id"] for project in listed["results"]]
        assert (await api.get("/api/tasks", params={"project": project_id})).status_code == 404
        await wait_for_lock_wait(database_url, "the delete job to wait for the task lock")
        # The writer's last step, as in a chunk report: the project's counters.
        await db.execute(
            "UPDATE project SET total_predictions_number = total_predictions_number + 1 WHERE id = $1",
            project_id,
        )
        await writer.commit()

        result = await wait_job_result(api, job_id)
        assert result["processed_items"] == 2
        assert await db.fetchval("SELECT count(*) FROM task WHERE project_id = $1", project_id) == 0
        assert await db.fetchval("SELECT count(*) FROM project WHERE id = $1", project_id) == 0
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        assert (job["kind"], job["project"], job["done"], job["total"]) == ("delete_project", None, 2, 2)
        assert (await api.delete(f"/api/projects/{project_id}")).status_code == 404
    finally:
        await db.close()
