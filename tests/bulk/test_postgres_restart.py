"""Postgres killed mid-job and started again: requests meanwhile are 503s to retry, and nothing is lost.

This module runs its own PostgreSQL (the ``database_url`` fixture is overridden) so it can SIGKILL the
server's whole process group, as a crash or a failover does, and start it again on the same data and
port. The API's pools hold connections that are dead from then on; the API's background loops, the
worker's chunk calls and the users' requests must all ride the outage out without a restart.

Chunk transactions commit without waiting for their WAL flush (``jobs.repository.begin_chunk_transaction``),
so the crash may take the last few reports with it; those chunks stay leased until their leases run out
and are predicted and stored again, which the exactly-once count below covers.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.embedded import EmbeddedPostgres
from tests.bulk.conftest import StartWorker, WorkerProcess
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.databases import alembic
from tests.support.waiting import wait_for, wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 300


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "postgres", durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database_url(own_postgres: EmbeddedPostgres) -> str:
    """This module's own migrated database instead of a copy of the session's template."""
    alembic(own_postgres.url, "upgrade", "head")
    return own_postgres.url


def crash(server: EmbeddedPostgres) -> None:
    """SIGKILL the postmaster and every backend at once (its process group): no shutdown, no checkpoint."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


async def test_postgres_killed_mid_job_users_get_503_and_the_job_ends_exactly_once(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    own_postgres: EmbeddedPostgres,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="labelloop.access")  # the workers' chunk calls log at DEBUG
    await import_texts(api, project["id"], TASKS)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=10)
    async with httpx.AsyncClient() as client:
        await WorkerProcess(start_worker).wait_ready(client)
    fake.configure(predict_delay_s=0.2)
    job_id = (await api.post(f"/api/ml/{backend['id']}/predict")).json()["job_id"]

    async def some_done() -> bool:
        done: int = (await api.get(f"/api/jobs/{job_id}")).json()["done"]
        return done > 0

    await wait_for(some_done, 60, "the job to store its first chunks")
    crash(own_postgres)

    during = [await api.get(f"/api/projects/{project['id']}") for _ in range(3)]
    for answer in during:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        assert "database" in answer.json()["detail"]

    async def a_chunk_call_met_the_outage() -> bool:
        return any(
            record.name == "labelloop.access"
            and str(getattr(record, "path", "")).startswith("/internal/chunks/")
            and getattr(record, "status", None) == 503
            for record in caplog.records
        )

    await wait_for(a_chunk_call_met_the_outage, 30, "the worker's chunk calls to meet the outage")
    own_postgres.start()  # the same server object, so the fixture stops it afterwards

    async def project_readable() -> bool:
        return (await api.get(f"/api/projects/{project['id']}")).status_code == 200

    await wait_for(project_readable, 30, "the API to read again")
    job = await wait_job(api, job_id, timeout_s=120)
    assert job["status"] == "completed", job
    assert (job["done"], job["predicted"], job["failed"]) == (TASKS, TASKS, 0), job
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM prediction") == TASKS
        assert await conn.fetchval("SELECT count(DISTINCT task_id) FROM prediction") == TASKS
    finally:
        await conn.close()

    async def notifications_back() -> bool:
        return any(r.getMessage().startswith("job notifications received again") for r in caplog.records)

    await wait_for(notifications_back, 30, "the job notifications' connection to be opened again")
    # The API's background loops (the sweeper runs every 0.2 s here, the notifications' connection is
    # retried every 2 s) said it once each way, no traceback.
    lines = [record.getMessage() for record in caplog.records]
    assert sum(line.startswith("chunk sweep: database unreachable") for line in lines) == 1, lines
    assert sum(line.startswith("chunk sweep: database reachable again") for line in lines) == 1, lines
    assert sum(line.startswith("job notifications not received") for line in lines) == 1, lines
    assert sum(line.startswith("job notifications received again") for line in lines) == 1, lines
    loops = ("jobs.background", "events.background", "ml_backends.monitor")
    failed = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name.endswith(loops)]
    assert failed == [], failed
