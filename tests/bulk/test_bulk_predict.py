"""Bulk prediction end to end: action → job + chunks → real gateway workers → predictions in Postgres."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import SERVICE_TOKEN
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import choice, chunk_report, connect_backend, import_texts
from tests.support.waiting import wait_for, wait_job, wait_planned
from tests.support.workers import RunBurst

pytestmark = [
    pytest.mark.usefixtures("gateway_server"),
    # arq's burst-mode worker closes its own pool with a redis call that redis-py marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

ACTION = "/api/dm/actions"


async def retrieve(
    api: httpx.AsyncClient, project_id: int, body: Any = None, **params: Any
) -> httpx.Response:
    query = {"id": "retrieve_tasks_predictions", "project": project_id, **params}
    if body is None:
        return await api.post(ACTION, params=query)
    return await api.post(ACTION, params=query, json=body)


async def duplicates(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM (SELECT task_id, ml_backend_id, model_version FROM prediction "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        )
    )


async def test_action_predicts_all_tasks_in_chunks(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    task_ids = await import_texts(api, project["id"], 25)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=4)
    response = await retrieve(api, project["id"])
    assert response.status_code == 200, response.text
    started = response.json()
    assert started["processed_items"] == 25 and started["job_ids"] == [started["job_id"]]
    job = (await api.get(f"/api/jobs/{started['job_id']}")).json()
    assert job["status"] in ("queued", "running") and job["total"] == 25
    assert job["ml_backend"] == backend["id"]
    await wait_planned(db, job["id"])
    assert await db.fetchval("SELECT count(*) FROM job_chunk WHERE job_id = $1", job["id"]) == 3

    await run_burst()

    job = await wait_job(api, started["job_id"])
    assert job["status"] == "completed", job
    assert (job["done"], job["predicted"], job["skipped"], job["failed"]) == (25, 25, 0, 0)
    assert job["progress"] == 1.0 and job["rate"] > 0 and job["finished_at"] is not None
    rows = await db.fetch(
        "SELECT task_id, model_version, ml_backend_id, job_id FROM prediction ORDER BY task_id"
    )
    assert [row["task_id"] for row in rows] == task_ids
    assert {(r["model_version"], r["ml_backend_id"], r["job_id"]) for r in rows} == {
        ("fake-v1", backend["id"], job["id"])
    }
    assert all(len(call.body["tasks"]) <= 4 for call in fake.calls("/predict"))
    refreshed = (await api.get(f"/api/projects/{project['id']}")).json()
    assert refreshed["total_predictions_number"] == 25
    listed = (await api.get("/api/jobs", params={"project": project["id"]})).json()
    assert [item["id"] for item in listed] == [job["id"]]


@pytest.mark.api_settings(job_batch_size=20)
async def test_chunks_are_the_selections_ids_in_runs_of_chunk_size_across_planning_steps(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    """Planning windows the selection and writes its chunk rows in Postgres, 20 ids (two chunks) a step."""
    task_ids = await import_texts(api, project["id"], 47)
    excluded = task_ids[3:5] + task_ids[30:31]
    await connect_backend(api, project["id"], fake.url)
    body = {"selectedItems": {"all": True, "excluded": excluded}}
    response = await retrieve(api, project["id"], body)
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    await wait_planned(db, job_id)

    rows = await db.fetch("SELECT seq, task_ids FROM job_chunk WHERE job_id = $1 ORDER BY id", job_id)
    selected = [task_id for task_id in task_ids if task_id not in excluded]
    assert [row["seq"] for row in rows] == list(range(5))
    assert [list(row["task_ids"]) for row in rows] == [selected[i : i + 10] for i in range(0, 44, 10)]
    job = (await api.get(f"/api/jobs/{job_id}")).json()
    assert job["total"] == 44


async def test_tasks_answered_without_a_prediction_are_done_but_not_predicted(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    """A model that has learned nothing answers [] per task: not an error, and not a prediction."""
    await import_texts(api, project["id"], 6)
    await connect_backend(api, project["id"], fake.url)
    fake.behaviour.empty_results = True
    started = (await retrieve(api, project["id"])).json()
    await run_burst()
    job = await wait_job(api, started["job_id"])
    assert (job["status"], job["done"], job["predicted"], job["failed"]) == ("completed", 6, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM prediction") == 0


async def test_already_predicted_tasks_are_skipped(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    task_ids = await import_texts(api, project["id"], 12)
    await connect_backend(api, project["id"], fake.url)
    first = (
        await retrieve(api, project["id"], {"selectedItems": {"all": False, "included": task_ids[:5]}})
    ).json()
    assert first["processed_items"] == 5
    await run_burst()
    assert (await wait_job(api, first["job_id"]))["done"] == 5

    fake.clear_requests()
    second = (
        await retrieve(api, project["id"], {"selectedItems": {"all": True, "excluded": [task_ids[-1]]}})
    ).json()
    assert second["processed_items"] == 11
    await run_burst()
    job = await wait_job(api, second["job_id"])
    assert (job["done"], job["skipped"], job["failed"]) == (6, 5, 0)
    sent = sorted(task["id"] for call in fake.calls("/predict") for task in call.body["tasks"])
    assert sent == task_ids[5:11]
    assert await db.fetchval("SELECT count(*) FROM prediction") == 11
    assert await duplicates(db) == 0


async def test_every_connected_backend_gets_its_own_job_and_version(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    await import_texts(api, project["id"], 8)
    with FakeBackend() as other:
        other.configure(model_version="other-v2")
        first = await connect_backend(api, project["id"], fake.url)
        second = await connect_backend(api, project["id"], other.url)
        started = (await retrieve(api, project["id"])).json()
        assert len(started["job_ids"]) == 2 and started["processed_items"] == 16
        await run_burst()
        for job_id in started["job_ids"]:
            assert (await wait_job(api, job_id))["done"] == 8
    counts = dict(await db.fetch("SELECT model_version, count(*) FROM prediction GROUP BY model_version"))
    assert counts == {"fake-v1": 8, "other-v2": 8}
    jobs = {(await api.get(f"/api/jobs/{job_id}")).json()["ml_backend"] for job_id in started["job_ids"]}
    assert jobs == {first["id"], second["id"]}

    only = (await retrieve(api, project["id"], {"ml_backend": second["id"]})).json()
    assert len(only["job_ids"]) == 1


async def test_per_task_errors_are_counted_and_shown(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    response = await api.post(
        f"/api/projects/{project['id']}/import",
        json=[{"text": f"fine {i}"} for i in range(6)] + [{"text": "poison"}],
        params={"return_task_ids": "true"},
    )
    poison_id = response.json()["task_ids"][-1]
    fake.configure(poison_task_value="poison")
    backend = await connect_backend(api, project["id"], fake.url, batch_size=7)
    started = (await api.post(f"/api/ml/{backend['id']}/predict")).json()
    await run_burst()
    job = await wait_job(api, started["job_id"])
    assert job["status"] == "completed"
    assert (job["done"], job["failed"]) == (6, 1)
    assert [error["task"] for error in job["errors"]] == [poison_id]
    assert job["errors"][0]["message"]
    assert await db.fetchval("SELECT count(*) FROM prediction") == 6


async def test_predict_all_tasks_with_batch_size(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, run_burst: RunBurst
) -> None:
    await import_texts(api, project["id"], 9)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=32)
    response = await api.post(f"/api/ml/{backend['id']}/predict/", params={"batch_size": 3})
    assert response.status_code == 200, response.text
    await run_burst()
    assert (await wait_job(api, response.json()["job_id"]))["done"] == 9
    sizes = [len(call.body["tasks"]) for call in fake.calls("/predict")]
    assert sizes and max(sizes) <= 3


async def test_cancelled_job_stores_nothing(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url)
    started = (await retrieve(api, project["id"])).json()
    cancelled = await api.post(f"/api/jobs/{started['job_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await run_burst()
    assert fake.calls("/predict") == []
    assert await db.fetchval("SELECT count(*) FROM prediction") == 0
    statuses = await db.fetch("SELECT DISTINCT status FROM job_chunk")
    assert [row["status"] for row in statuses] == ["cancelled"]
    assert (await api.get(f"/api/jobs/{started['job_id']}")).json()["status"] == "cancelled"


async def test_bad_requests(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    await import_texts(api, project["id"], 3)
    no_backend = await retrieve(api, project["id"])
    assert no_backend.status_code == 400 and "no connected ML backend" in no_backend.json()["detail"]
    await connect_backend(api, project["id"], fake.url)
    bad = await retrieve(api, project["id"], {"selectedItems": {"all": False, "included": "x"}})
    assert bad.status_code == 400
    assert "selectedItems.included" in bad.json()["validation_errors"]
    unknown = await retrieve(api, project["id"], {"ml_backend": 424242})
    assert unknown.status_code == 404
    not_an_id = await retrieve(api, project["id"], ml_backend="abc")
    assert not_an_id.status_code == 400 and "ml_backend" in not_an_id.json()["validation_errors"]
    assert (await api.post("/api/ml/424242/predict")).status_code == 404
    assert (await api.get("/api/jobs/424242")).status_code == 404
    assert await db.fetchval("SELECT count(*) FROM job") == 0


async def one_chunk_job(
    api: httpx.AsyncClient, db: asyncpg.Connection, project_id: int, backend_url: str, count: int
) -> tuple[list[int], int, int]:
    """``count`` new tasks and a job predicting them, planned as one chunk: (task ids, job id, chunk id)."""
    task_ids = await import_texts(api, project_id, count)
    await connect_backend(api, project_id, backend_url)
    job_id = (await retrieve(api, project_id)).json()["job_id"]
    await wait_planned(db, job_id)
    return task_ids, job_id, await db.fetchval("SELECT id FROM job_chunk WHERE job_id = $1", job_id)


async def test_internal_routes_apply_a_report_once_and_refuse_client_tokens(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
) -> None:
    task_ids, job_id, chunk_id = await one_chunk_job(api, db, project["id"], fake.url, 3)

    assert (await api.post(f"/internal/chunks/{chunk_id}/lease")).status_code == 401
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    lease = (await api.post(f"/internal/chunks/{chunk_id}/lease", headers=service)).json()
    assert lease["status"] == "leased" and [task["id"] for task in lease["tasks"]] == task_ids
    assert lease["backend"]["url"] == fake.url and lease["lease_s"] > 0
    result_json = orjson.dumps(choice("Positive")).decode()
    errors = [{"task_id": task_ids[2], "message": "backend choked"}]
    rows = [(task_ids[0], result_json, 0.5, "fake-v1"), (task_ids[1], result_json, 0.7, "fake-v1")]
    report = chunk_report(rows, errors=errors)
    malformed = chunk_report([(task_ids[0], "[]", None, "fake-v1")])
    malformed["predictions"]["task_ids"] = ["x"]
    refused = await api.post(f"/internal/chunks/{chunk_id}/complete", json=malformed, headers=service)
    assert refused.status_code == 400 and "predictions.task_ids" in refused.json()["validation_errors"]
    # Results are stored as the text they came in: one Postgres refuses fails the whole report, by name.
    for bad in ('[{"from_name": "sentiment",', '["\\ud800"]', "{}"):
        unstorable = chunk_report([rows[0], (task_ids[1], bad, 0.7, "fake-v1")], errors=errors)
        refused = await api.post(f"/internal/chunks/{chunk_id}/complete", json=unstorable, headers=service)
        assert refused.status_code == 400, (bad, refused.text)
        assert list(refused.json()["validation_errors"]) == ["predictions.results.1"], refused.text
    assert await db.fetchval("SELECT count(*) FROM prediction") == 0
    first = await api.post(f"/internal/chunks/{chunk_id}/complete", json=report, headers=service)
    assert first.json() == {"accepted": True, "job_status": "completed"}
    again = await api.post(f"/internal/chunks/{chunk_id}/complete", json=report, headers=service)
    assert again.json()["accepted"] is False
    assert await db.fetchval("SELECT count(*) FROM prediction") == 2
    job = (await api.get(f"/api/jobs/{job_id}")).json()
    assert (job["done"], job["failed"], job["skipped"]) == (2, 1, 0)
    assert job["errors"] == [{"task": task_ids[2], "message": "backend choked"}]
    relet = (await api.post(f"/internal/chunks/{chunk_id}/lease", headers=service)).json()
    assert relet["status"] == "done"


async def test_a_report_of_a_worker_from_before_the_columns_is_stored_during_a_roll_out(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
) -> None:
    """Workers of the previous release post an object per prediction; the API reads that for one release."""
    task_ids, _, chunk_id = await one_chunk_job(api, db, project["id"], fake.url, 2)
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    await api.post(f"/internal/chunks/{chunk_id}/lease", headers=service)
    result_json = orjson.dumps(choice("Positive")).decode()
    rows = [
        {"task_id": task_id, "result_json": result_json, "score": 0.5, "model_version": "fake-v1"}
        for task_id in task_ids
    ]
    unstorable = {"predictions": [rows[0], {**rows[1], "result_json": '["\\ud800"]'}]}
    refused = await api.post(f"/internal/chunks/{chunk_id}/complete", json=unstorable, headers=service)
    assert refused.status_code == 400, refused.text
    assert list(refused.json()["validation_errors"]) == ["predictions.1.result_json"], refused.text
    stored = await api.post(
        f"/internal/chunks/{chunk_id}/complete", json={"predictions": rows}, headers=service
    )
    assert stored.json() == {"accepted": True, "job_status": "completed"}
    results = await db.fetch("SELECT task_id, result, score FROM prediction ORDER BY task_id")
    assert [(r["task_id"], orjson.loads(r["result"]), r["score"]) for r in results] == [
        (task_id, choice("Positive"), 0.5) for task_id in task_ids
    ]


async def test_cancel_stops_a_worker_mid_chunk_and_drops_its_results(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url, batch_size=5, max_concurrency=1)
    fake.configure(predict_gate=threading.Event())  # never opened: the first call is held until cancelled
    started = (await retrieve(api, project["id"])).json()
    worker = asyncio.create_task(run_burst())

    await fake.wait_for_calls("/predict", 1, timeout_s=30)
    assert (await api.post(f"/api/jobs/{started['job_id']}/cancel")).json()["status"] == "cancelled"
    # Held calls never answer: the burst ends only because the worker saw the cancel and dropped them.
    await asyncio.wait_for(worker, 30)

    chunks = await db.fetchval("SELECT count(*) FROM job_chunk")
    assert len(fake.calls("/predict")) <= chunks, "at most the held first call of each chunk"
    assert await db.fetchval("SELECT count(*) FROM prediction") == 0
    job = (await api.get(f"/api/jobs/{started['job_id']}")).json()
    assert (job["status"], job["done"]) == ("cancelled", 0)


async def test_deleting_the_project_stops_a_worker_mid_chunk(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    """The heartbeat's 404 means the job is gone: the backend is not called for the rest of the chunk."""
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url, batch_size=5, max_concurrency=1)
    fake.configure(predict_delay_s=1.0)
    await retrieve(api, project["id"])
    worker = asyncio.create_task(run_burst())

    async def leased() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM job_chunk WHERE status = 'leased'"))

    await wait_for(leased, 30, "a chunk to be leased")
    assert (await api.delete(f"/api/projects/{project['id']}")).status_code == 204

    async def chunks_stopped() -> bool:
        """The delete job cancelled (or already removed) the bulk job's chunks."""
        return not await db.fetchval("SELECT count(*) FROM job_chunk WHERE status IN ('leased', 'pending')")

    await wait_for(chunks_stopped, 30, "the project delete to stop the bulk job's chunks")
    calls_at_stop = len(fake.calls("/predict"))
    await asyncio.wait_for(worker, 30)
    # At most the call already in flight; without the heartbeat's 404 the worker went on to all 4 batches.
    assert len(fake.calls("/predict")) <= min(calls_at_stop + 1, 3), (
        "the worker stopped calling the backend once the project was gone"
    )
    assert await db.fetchval("SELECT count(*) FROM prediction") == 0


async def test_a_chunk_whose_workers_keep_dying_is_given_up(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    task_ids = await import_texts(api, project["id"], 3)
    await connect_backend(api, project["id"], fake.url)
    started = (await retrieve(api, project["id"])).json()
    await wait_planned(db, started["job_id"])
    chunk_id = await db.fetchval("SELECT id FROM job_chunk WHERE job_id = $1", started["job_id"])
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    for _ in range(5):  # five workers lease it and die without reporting
        lease = await api.post(f"/internal/chunks/{chunk_id}/lease", headers=service)
        assert lease.json()["status"] == "leased"

    job = await wait_job(api, started["job_id"], timeout_s=30)
    assert (job["status"], job["done"], job["failed"]) == ("failed", 0, 3)
    assert sorted(error["task"] for error in job["errors"]) == task_ids
    assert "gave up after 5 attempts" in job["errors"][0]["message"]


async def test_reports_of_two_backends_over_the_same_tasks_never_deadlock(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    task_ids = await import_texts(api, project["id"], 200)
    first = await connect_backend(api, project["id"], fake.url)
    second = await connect_backend(api, project["id"], fake.url)
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    result_json = orjson.dumps(choice("Positive")).decode()
    chunks: list[list[int]] = []
    for backend in (first, second):
        job = (await retrieve(api, project["id"], {"ml_backend": backend["id"]})).json()
        await wait_planned(db, job["job_id"])
        rows = await db.fetch("SELECT id FROM job_chunk WHERE job_id = $1 ORDER BY seq", job["job_id"])
        chunks.append([row["id"] for row in rows])

    async def report(chunk_id: int) -> httpx.Response:
        lease = (await api.post(f"/internal/chunks/{chunk_id}/lease", headers=service)).json()
        rows = [(task["id"], result_json, 0.5, "fake-v1") for task in lease["tasks"]]
        return await api.post(
            f"/internal/chunks/{chunk_id}/complete", json=chunk_report(rows), headers=service
        )

    for pair in zip(*chunks, strict=True):
        answers = await asyncio.gather(*(report(chunk_id) for chunk_id in pair))
        assert [answer.status_code for answer in answers] == [200, 200], [a.text for a in answers]
    assert await db.fetchval("SELECT count(*) FROM prediction") == 2 * len(task_ids)
    assert (
        await db.fetchval("SELECT min(n) FROM (SELECT count(*) AS n FROM prediction GROUP BY task_id)") == 2
    )


async def test_deleting_the_backend_keeps_its_predictions_without_it(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    """Predictions outlive their backend and read with no backend, as Label Studio's SET NULL shows them."""
    await import_texts(api, project["id"], 6)
    backend = await connect_backend(api, project["id"], fake.url)
    other = await connect_backend(api, project["id"], fake.url)
    for backend_id in (backend["id"], other["id"]):
        started = await retrieve(api, project["id"], {"ml_backend": backend_id})
        assert started.status_code == 200, started.text
        await wait_planned(db, started.json()["job_id"])
        await run_burst()
        assert (await wait_job(api, started.json()["job_id"]))["status"] == "completed"
    assert (await api.delete(f"/api/ml/{backend['id']}")).status_code == 204
    listed = (await api.get("/api/predictions", params={"project": project["id"]})).json()
    assert Counter(p["ml_backend"] for p in listed) == {other["id"]: 6, None: 6}
    page = (await api.get("/api/tasks", params={"project": project["id"], "fields": "all"})).json()
    shown = Counter(p["ml_backend"] for task in page["tasks"] for p in task["predictions"])
    assert shown == {other["id"]: 6, None: 6}
    project_now = (await api.get(f"/api/projects/{project['id']}")).json()
    assert project_now["total_predictions_number"] == 12


async def test_deleting_a_backend_writes_none_of_its_predictions(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """However many predictions a backend made, its delete answers without touching them: a transaction
    holding one of them locked does not hold the delete up (clearing the ids in the request would wait)."""
    await import_texts(api, project["id"], 4)
    backend = await connect_backend(api, project["id"], fake.url)
    started = await retrieve(api, project["id"], {"ml_backend": backend["id"]})
    await wait_planned(db, started.json()["job_id"])
    await run_burst()
    assert (await wait_job(api, started.json()["job_id"]))["status"] == "completed"
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM prediction FOR UPDATE")
            deleted = await asyncio.wait_for(api.delete(f"/api/ml/{backend['id']}"), timeout=30)
        assert deleted.status_code == 204
    finally:
        await holder.close()
    listed = (await api.get("/api/predictions", params={"project": project["id"]})).json()
    assert [p["ml_backend"] for p in listed] == [None] * 4
