"""No hot row: chunk reports write their counts on their own chunk row, a fold adds them up, reads are exact.

All of a job's chunks are reported at once over real HTTP; the job and project counters read while the
fold has not run, and after it, are the exact totals. Finished jobs lose their chunk rows after the
retention, and keep their summary.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import SERVICE_TOKEN
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import choice, chunk_report, connect_backend, import_texts
from tests.support.waiting import wait_for, wait_job, wait_planned

pytestmark = pytest.mark.usefixtures("gateway_server")

SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
TASKS = 120  # twelve chunks of ten


async def _report(api: httpx.AsyncClient, chunk_id: int) -> httpx.Response:
    """Lease a chunk and report a prediction for every task but the first, which fails."""
    return await _complete(api, chunk_id, await _lease(api, chunk_id))


async def _lease(api: httpx.AsyncClient, chunk_id: int) -> dict[str, Any]:
    lease: dict[str, Any] = (await api.post(f"/internal/chunks/{chunk_id}/lease", headers=SERVICE)).json()
    return lease


async def _complete(api: httpx.AsyncClient, chunk_id: int, lease: dict[str, Any]) -> httpx.Response:
    """Report a prediction for every task of the lease but the first, which fails."""
    result_json = orjson.dumps(choice("Positive")).decode()
    first, *rest = lease["tasks"]
    body = chunk_report(
        [(task["id"], result_json, 0.5, "fake-v1") for task in rest],
        errors=[{"task_id": first["id"], "message": "no answer"}],
    )
    return await api.post(f"/internal/chunks/{chunk_id}/complete", json=body, headers=SERVICE)


async def _start(api: httpx.AsyncClient, project_id: int, db: asyncpg.Connection) -> tuple[int, list[int]]:
    response = await api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
    )
    assert response.status_code == 200, response.text
    job_id: int = response.json()["job_id"]
    await wait_planned(db, job_id)
    rows = await db.fetch("SELECT id FROM job_chunk WHERE job_id = $1 ORDER BY id", job_id)
    return job_id, [row["id"] for row in rows]


@pytest.mark.api_settings(job_poll_interval_s=3600.0, chunk_retention_s=3600.0)
async def test_concurrent_completions_share_no_row_and_counters_stay_exact(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    await import_texts(api, project["id"], TASKS)
    await connect_backend(api, project["id"], fake.url)
    job_id, chunk_ids = await _start(api, project["id"], db)
    assert len(chunk_ids) == TASKS // 10

    answers = await asyncio.gather(*(_report(api, chunk_id) for chunk_id in chunk_ids))
    assert [answer.status_code for answer in answers] == [200] * len(chunk_ids), [a.text for a in answers]
    assert all(answer.json()["accepted"] for answer in answers)
    expected = (TASKS - len(chunk_ids), len(chunk_ids), TASKS - len(chunk_ids))

    # The fold has not run (the runner polls hourly here): the counts live on the chunk rows.
    assert await db.fetchval("SELECT count(*) FROM job_chunk WHERE NOT folded") == len(chunk_ids)
    assert await db.fetchval("SELECT done + failed FROM job WHERE id = $1", job_id) == 0
    job = await wait_job(api, job_id, frozenset({"completed"}))
    assert (job["done"], job["failed"], job["predicted"]) == expected
    assert len(job["errors"]) == len(chunk_ids)
    project_read = (await api.get(f"/api/projects/{project['id']}")).json()
    assert project_read["total_predictions_number"] == TASKS - len(chunk_ids)
    tasks_page = (await api.get("/api/tasks", params={"project": project["id"]})).json()
    assert tasks_page["total_predictions"] == TASKS - len(chunk_ids)

    # A report delivered again changes nothing.
    again = await api.post(f"/internal/chunks/{chunk_ids[0]}/complete", json={"errors": []}, headers=SERVICE)
    assert again.json()["accepted"] is False

    # The fold (run by the runner loop once woken, here by a new job) moves the counts onto the rows.
    await _start(api, project["id"], db)

    async def folded() -> bool:
        return not await db.fetchval("SELECT count(*) FROM job_chunk WHERE NOT folded")

    await wait_for(folded, what="the fold")
    row = await db.fetchrow("SELECT done, failed, predicted FROM job WHERE id = $1", job_id)
    assert tuple(row) == expected
    assert await db.fetchval("SELECT total_predictions_number FROM project WHERE id = $1", project["id"]) == (
        TASKS - len(chunk_ids)
    )
    job = (await api.get(f"/api/jobs/{job_id}")).json()
    assert (job["done"], job["failed"], job["predicted"], len(job["errors"])) == (*expected, len(chunk_ids))
    assert await db.fetchval("SELECT count(*) FROM prediction") == TASKS - len(chunk_ids)


@pytest.mark.api_settings(job_poll_interval_s=0.2, chunk_retention_s=0.5)
async def test_finished_jobs_keep_their_summary_but_not_their_chunk_rows(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    await import_texts(api, project["id"], 30)
    await connect_backend(api, project["id"], fake.url)
    job_id, chunk_ids = await _start(api, project["id"], db)
    for chunk_id in chunk_ids:
        assert (await _report(api, chunk_id)).status_code == 200
    await wait_job(api, job_id, frozenset({"completed"}))

    async def purged() -> bool:
        return not await db.fetchval("SELECT count(*) FROM job_chunk WHERE job_id = $1", job_id)

    await wait_for(purged, what="the finished job's chunk rows to be purged")
    job = (await api.get(f"/api/jobs/{job_id}")).json()
    assert (job["status"], job["total"], job["done"], job["failed"], job["predicted"]) == (
        "completed",
        30,
        27,
        3,
        27,
    )
    assert len(job["errors"]) == 3


# Holds every transaction that changes a chunk row from now on at its COMMIT, after all its statements
# ran, until the test lets go of the advisory lock: a test instrument in the test's own database.
_HOLD_AT_COMMIT = """
CREATE FUNCTION hold_at_commit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER hold_at_commit AFTER UPDATE ON job_chunk
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_at_commit();
"""


@pytest.mark.api_settings(sweep_interval_s=3600.0)
async def test_the_last_reports_committing_together_still_finish_the_job_without_the_sweeper(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    """Each of the last two reports checks for the job's end before either commits, so each sees the
    other's chunk open; the check a report makes after its commit finishes the job, not the sweeper
    (which would take ``sweep_interval_s``, an hour here)."""
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url)
    job_id, chunk_ids = await _start(api, project["id"], db)
    assert len(chunk_ids) == 2
    leases = [await _lease(api, chunk_id) for chunk_id in chunk_ids]  # before the trigger: not held
    await db.execute(_HOLD_AT_COMMIT)
    await db.execute("SELECT pg_advisory_lock(4242)")
    reports = [
        asyncio.create_task(_complete(api, chunk_id, lease))
        for chunk_id, lease in zip(chunk_ids, leases, strict=True)
    ]

    async def both_held_at_commit() -> bool:
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted"
        return bool(await db.fetchval(waiting) == 2)

    try:
        await wait_for(both_held_at_commit, what="both reports to reach their commit")
        assert (await api.get(f"/api/jobs/{job_id}")).json()["status"] == "running"
    finally:
        await db.execute("SELECT pg_advisory_unlock(4242)")
    answers = await asyncio.gather(*reports)
    assert [answer.status_code for answer in answers] == [200, 200], [a.text for a in answers]
    job = await wait_job(api, job_id, timeout_s=20)
    assert (job["status"], job["done"], job["failed"]) == ("completed", 18, 2)
