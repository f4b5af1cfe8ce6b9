"""The periodic backend check sees a new model version: it is followed, and predicted with when asked.

A fast check interval (0.2 s) lets the API's background monitor run for real against a fake backend
whose ``/setup`` starts reporting another version between two checks.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts
from tests.support.waiting import wait_for, wait_job, wait_planned
from tests.support.workers import RunBurst

pytestmark = [
    pytest.mark.usefixtures("gateway_server"),
    pytest.mark.api_settings(backend_check_interval_s=0.2),
]


async def predict_jobs(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, project_id, ml_backend_id, model_version, total, selection, created_at"
        " FROM job WHERE kind = 'predict' ORDER BY id"
    )
    return [dict(row) for row in rows]


async def test_new_version_seen_by_the_periodic_check_repredicts_unlabeled_tasks(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend, db: asyncpg.Connection
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG, repredict_on_new_version=True)
    task_ids = await import_texts(api, project["id"], 3)
    labeled = await api.post(f"/api/tasks/{task_ids[0]}/annotations", json={"result": choice("Positive")})
    assert labeled.status_code == 201, labeled.text
    backend = await connect_backend(api, project["id"], fake.url)
    pinned = await connect_backend(api, project["id"], fake.url, auto_update=False)
    quiet = await create_project(api, SENTIMENT_CONFIG)
    await import_texts(api, quiet["id"], 2)
    quiet_backend = await connect_backend(api, quiet["id"], fake.url)

    async def checked_since(moment: Any) -> bool:
        rows = await db.fetch("SELECT last_checked_at FROM ml_backend")
        return all(row["last_checked_at"] > moment for row in rows)

    before = await db.fetchval("SELECT now()")
    await wait_for(lambda: checked_since(before), 30, "a periodic check of every backend")
    assert await predict_jobs(db) == [], "an unchanged version predicts nothing"

    fake.configure(model_version="fake-v2")

    async def repredict_started() -> bool:
        return bool(await predict_jobs(db))

    await wait_for(repredict_started, 30, "the check to start a prediction job")
    [job] = await predict_jobs(db)
    assert (job["project_id"], job["ml_backend_id"], job["model_version"]) == (
        project["id"],
        backend["id"],
        "fake-v2",
    )
    assert job["total"] == 2, "only the unlabeled tasks"
    assert '"source": "repredict_on_new_version"' in job["selection"]
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["model_version"] == "fake-v2"
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == "fake-v2"
    assert (await api.get(f"/api/ml/{pinned['id']}")).json()["model_version"] == "fake-v1"

    await wait_planned(db, job["id"])  # the API's job runner writes the chunks, then they are queued
    await run_burst()
    done = await wait_job(api, job["id"])
    assert (done["status"], done["done"], done["failed"]) == ("completed", 2, 0), done
    versions = await db.fetch(
        "SELECT task_id, model_version FROM prediction WHERE project_id = $1 ORDER BY task_id", project["id"]
    )
    assert [(row["task_id"], row["model_version"]) for row in versions] == [
        (task_ids[1], "fake-v2"),
        (task_ids[2], "fake-v2"),
    ]

    await wait_for(lambda: checked_since(job["created_at"]), 30, "checks after the new version")
    assert (await api.get(f"/api/ml/{quiet_backend['id']}")).json()["model_version"] == "fake-v2"
    assert [row["id"] for row in await predict_jobs(db)] == [job["id"]], (
        "the same version is not predicted twice, and a project without the setting is not predicted"
    )
