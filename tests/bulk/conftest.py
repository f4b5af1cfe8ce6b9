"""Bulk prediction fixtures: a real API + gateway, fake backends, gateway workers and direct DB reads.

``api_settings`` is narrowed here (small chunks, short leases, a fast sweeper) so crash and loss
scenarios resolve in seconds; a test can change more with ``@pytest.mark.api_settings(field=value)``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker

from services.annotation_api.settings import ApiSettings
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.worker import WorkerSettings, shutdown, startup
from shared.jobs import QUEUE_NAME
from tests.conftest import SERVICE_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend

REPO_ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "api_settings(**fields): override annotation API settings")


@pytest.fixture
def api_settings(api_settings: ApiSettings, request: pytest.FixtureRequest) -> ApiSettings:
    update: dict[str, Any] = {
        "chunk_size": 10,
        "chunk_lease_s": 2.0,
        "sweep_interval_s": 0.2,
        "backend_check_interval_s": 3600.0,
    }
    marker = request.node.get_closest_marker("api_settings")
    if marker is not None:
        update.update(marker.kwargs)
    return api_settings.model_copy(update=update)


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    with FakeBackend() as backend:
        yield backend


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def project(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.post("/api/projects", json={"title": "bulk", "label_config": SENTIMENT_CONFIG})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def import_texts(api: httpx.AsyncClient, project_id: int, count: int) -> list[int]:
    tasks = [{"text": f"task {i} is {'good' if i % 2 else 'bad'}"} for i in range(count)]
    response = await api.post(
        f"/api/projects/{project_id}/import", json=tasks, params={"return_task_ids": "true"}
    )
    assert response.status_code == 201, response.text
    ids: list[int] = response.json()["task_ids"]
    return ids


async def connect_backend(api: httpx.AsyncClient, project_id: int, url: str, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/ml", json={"url": url, "project": project_id, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``check`` until true, failing after a bounded deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_job(
    api: httpx.AsyncClient,
    job_id: int,
    statuses: frozenset[str] = frozenset({"completed", "failed"}),
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal job
        response = await api.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        return job["status"] in statuses

    await wait_for(finished, timeout_s, f"job {job_id} to reach {sorted(statuses)}")
    return job


RunBurst = Callable[[], Awaitable[None]]


@pytest.fixture
def run_burst(gateway_settings: GatewaySettings) -> RunBurst:
    """Run an in-process gateway worker until the queue is empty (deterministic, no sleeps)."""

    async def run() -> None:
        worker = Worker(
            functions=WorkerSettings.functions,
            queue_name=QUEUE_NAME,
            redis_settings=RedisSettings.from_dsn(gateway_settings.redis_url),
            burst=True,
            on_startup=startup,
            on_shutdown=shutdown,
            ctx={"settings": gateway_settings},
            handle_signals=False,
            keep_result=0,
            poll_delay=0.05,
            max_jobs=WorkerSettings.max_jobs,
        )
        try:
            await worker.main()
        finally:
            await worker.close()

    return run


StartWorker = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
def start_worker(gateway_settings: GatewaySettings) -> Iterator[StartWorker]:
    """Start real worker processes (``python -m services.model_gateway.worker``); killed after the test."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "REDIS_URL": gateway_settings.redis_url,
        "LABELLOOP_API_URL": gateway_settings.api_url,
        "LABELLOOP_SERVICE_TOKEN": SERVICE_TOKEN,
        "LABELLOOP_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LABELLOOP_LOG_LEVEL": "WARNING",
    }

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.model_gateway.worker"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
