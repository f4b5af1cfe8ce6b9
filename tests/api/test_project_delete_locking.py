"""Deleting a project while a writer holds some of its tasks waits for it instead of deadlocking.

Every writer (a chunk report, an annotation) locks tasks first and the project row (its counters) last.
A DELETE that locked the project row first and met the tasks in its cascade took them the other way
round: a deadlock, and a 500 for the delete (found deleting a project during a bulk prediction job).
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.support.waiting import wait_for_lock_wait

LABEL_CONFIG = '<View><Text name="text" value="$text"/></View>'


async def test_delete_waits_for_a_writer_holding_tasks_then_succeeds(
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
        delete = asyncio.create_task(api.delete(f"/api/projects/{project_id}"))
        await wait_for_lock_wait(database_url, "the DELETE to wait for the task lock")
        # The writer's last step, as in a chunk report: the project's counters.
        await db.execute(
            "UPDATE project SET total_predictions_number = total_predictions_number + 1 WHERE id = $1",
            project_id,
        )
        await writer.commit()

        response = await delete
        assert response.status_code == 204, response.text
        assert await db.fetchval("SELECT count(*) FROM task WHERE project_id = $1", project_id) == 0
    finally:
        await db.close()
