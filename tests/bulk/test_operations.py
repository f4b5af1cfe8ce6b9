"""Operating the services: readiness across schema versions and Redis outages, a draining worker's
probes, and what the logs say (request ids through the jobs, chunk chatter at DEBUG, "stopped")."""

from __future__ import annotations

import io
import logging
import signal
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from services.annotation_api.main import create_app as create_api_app
from services.annotation_api.settings import ApiSettings
from services.model_gateway.main import create_app as create_gateway_app
from services.model_gateway.settings import GatewaySettings
from shared.logging import JsonFormatter
from tests.bulk.conftest import StartWorker, WorkerProcess
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for, wait_job
from tests.support.workers import RunBurst


async def test_api_ready_on_a_later_schema_revision(api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    """Expand/contract: the old code keeps serving once the next release's migration has run."""
    await db.execute("UPDATE alembic_version SET version_num = 'zzzz_from_a_later_release'")
    ready = await api.get("/ready")
    assert ready.status_code == 200, ready.text
    await db.execute("DELETE FROM alembic_version")
    not_ready = await api.get("/ready")
    assert not_ready.status_code == 503
    assert "not migrated" in not_ready.json()["reason"]


async def test_gateway_ready_without_redis(gateway_settings: GatewaySettings) -> None:
    """The gateway's HTTP app never uses Redis, so a Redis outage keeps it in the load balancer."""
    settings = gateway_settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    with ServerThread(create_gateway_app(settings)) as server:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.url}/ready")
    assert response.status_code == 200, response.text


@pytest.mark.usefixtures("gateway_server")
async def test_a_draining_worker_is_not_ready_and_finishes_its_chunk_within_the_grace_period(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    db: asyncpg.Connection,
) -> None:
    await import_texts(api, project["id"], 5)
    backend = await connect_backend(api, project["id"], fake.url, batch_size=5)
    fake.configure(predict_delay_s=2.0)
    async with httpx.AsyncClient() as client:
        worker = WorkerProcess(start_worker, drain_grace_s=30.0)
        await worker.wait_ready(client)
        job_id = (await api.post(f"/api/ml/{backend['id']}/predict")).json()["job_id"]
        await fake.wait_for_calls("/predict", 1, timeout_s=30)
        worker.process.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            response = await client.get(f"{worker.url}/ready")
            return response.status_code == 503 and "draining" in response.json()["reason"]

        await wait_for(draining, 10, "the worker to report draining")
        assert (await client.get(f"{worker.url}/health")).status_code == 200
        assert worker.process.wait(timeout=60) == 0
    job = await wait_job(api, job_id, timeout_s=5)
    assert (job["status"], job["predicted"]) == ("completed", 5), job
    assert await db.fetchval("SELECT max(attempts) FROM job_chunk") == 1


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line of the in-process servers and worker, DEBUG included, as JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("gateway_server")
async def test_the_request_id_follows_a_job_and_chunk_chatter_is_debug(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    log_lines: io.StringIO,
) -> None:
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url)
    action = await api.post(
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
        headers={"X-Request-ID": "log-request-1"},
    )
    assert action.status_code == 200, action.text
    await run_burst()

    access = [line for line in parsed(log_lines) if line["logger"] == "labelloop.access"]
    (action_line,) = [line for line in access if line["path"] == "/api/dm/actions"]
    assert (action_line["level"], action_line["request_id"]) == ("info", "log-request-1")
    chunk_lines = [line for line in access if line["path"].startswith("/internal/chunks/")]
    assert len(chunk_lines) == 4, "a lease and a completion for each of the two chunks"
    assert {(line["level"], line["request_id"]) for line in chunk_lines} == {("debug", "log-request-1")}


async def test_every_service_logs_stopped(
    api_settings: ApiSettings, gateway_settings: GatewaySettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with ServerThread(create_api_app(api_settings)), ServerThread(create_gateway_app(gateway_settings)):
        pass
    stopped = {record.name for record in caplog.records if record.getMessage() == "stopped"}
    assert {"services.annotation_api.main", "services.model_gateway.main"} <= stopped
