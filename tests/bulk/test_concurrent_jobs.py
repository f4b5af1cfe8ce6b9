"""Concurrent retrieve actions on one project: each task reaches the backend once, counters say why.

Twenty users pressing "retrieve predictions" at once used to start twenty jobs that each sent the
project's tasks to the backend (195 calls where 38 sufficed), and some reported every task as done
with nothing predicted nor skipped. Real worker processes run the jobs against a fake backend that
records every call.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from tests.bulk.conftest import StartWorker
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.waiting import wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 60
ACTIONS = 20


async def retrieve(api: httpx.AsyncClient, project_id: int, body: Any = None) -> dict[str, Any]:
    params = {"id": "retrieve_tasks_predictions", "project": project_id}
    response = await api.post("/api/dm/actions", params=params, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def assert_counters_add_up(job: dict[str, Any]) -> None:
    """Every task of the job is accounted for once, and (the backend predicts every task it is sent)
    none is reported done without a prediction."""
    assert job["status"] == "completed", job
    assert job["done"] + job["skipped"] + job["failed"] == job["total"], job
    assert (job["done"], job["failed"]) == (job["predicted"], 0), job


async def test_parallel_retrieve_actions_send_each_task_to_the_backend_once(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    task_ids = await import_texts(api, project["id"], TASKS)
    await connect_backend(api, project["id"], fake.url, batch_size=4)
    fake.configure(predict_delay_s=0.05)
    start_worker()
    start_worker()

    answers = await asyncio.gather(*(retrieve(api, project["id"]) for _ in range(ACTIONS)))
    job_ids = sorted({answer["job_id"] for answer in answers})
    jobs = [await wait_job(api, job_id) for job_id in job_ids]

    sent = Counter(task["id"] for call in fake.calls("/predict") for task in call.body["tasks"])
    assert sent == Counter(task_ids), f"tasks sent more than once: {sent.most_common(3)}"
    for job in jobs:
        assert_counters_add_up(job)
    assert sum(job["predicted"] for job in jobs) == TASKS
    assert await db.fetchval("SELECT count(*) FROM prediction") == TASKS


async def test_overlapping_selections_send_each_task_once_and_count_the_rest_as_skipped(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    """Different selections sharing tasks are different jobs; a task one of them is predicting (or has
    predicted) is skipped by the others, never sent twice."""
    task_ids = await import_texts(api, project["id"], TASKS)
    await connect_backend(api, project["id"], fake.url, batch_size=4)
    fake.configure(predict_delay_s=0.05)
    start_worker()
    start_worker()

    selections = [None] + [
        {"selectedItems": {"all": False, "included": task_ids[start : start + 25]}} for start in (0, 10, 30)
    ]
    answers = await asyncio.gather(*(retrieve(api, project["id"], body) for body in selections))
    job_ids = sorted({answer["job_id"] for answer in answers})
    assert len(job_ids) == len(selections)
    jobs = [await wait_job(api, job_id) for job_id in job_ids]

    sent = Counter(task["id"] for call in fake.calls("/predict") for task in call.body["tasks"])
    assert sent == Counter(task_ids), f"tasks sent more than once: {sent.most_common(3)}"
    for job in jobs:
        assert_counters_add_up(job)
    assert sum(job["predicted"] for job in jobs) == TASKS
    assert await db.fetchval("SELECT count(*) FROM prediction") == TASKS
