"""Bulk prediction fixtures: narrowed API settings, a sentiment project and real worker processes.

``api_settings`` is narrowed here (small chunks, short leases, a fast sweeper) so crash and loss
scenarios resolve in seconds; a test can change more with ``@pytest.mark.api_settings(field=value)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.embedded import free_port
from services.annotation_api.settings import ApiSettings
from services.model_gateway.settings import GatewaySettings
from tests.conftest import SERVICE_TOKEN, TEST_API_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import create_project
from tests.support.servers import first_answer
from tests.support.settings import narrowed_api_settings
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api_settings(api_settings: ApiSettings, request: pytest.FixtureRequest) -> ApiSettings:
    return narrowed_api_settings(
        api_settings,
        request,
        chunk_size=10,
        chunk_lease_s=2.0,
        sweep_interval_s=0.2,
        backend_check_interval_s=3600.0,
    )


@pytest.fixture
async def project(api: httpx.AsyncClient) -> dict[str, Any]:
    return await create_project(api, SENTIMENT_CONFIG, title="bulk")


StartWorker = Callable[..., subprocess.Popen[bytes]]
"""``start_worker(**env)``: extra environment variables for this worker, e.g. its probe port."""


@pytest.fixture
def start_worker(gateway_settings: GatewaySettings, tmp_path: Path) -> Iterator[StartWorker]:
    """Start real worker processes (``python -m services.model_gateway.worker``); killed after the test.

    Each worker's warnings and errors go to a file, whose end is printed after the test: pytest shows it
    when the test failed, so a worker's side of a failure is on record.
    """
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    env = {
        **os.environ,
        "REDIS_URL": gateway_settings.redis_url,
        "LABELLOOP_API_URL": gateway_settings.api_url,
        "LABELLOOP_SERVICE_TOKEN": SERVICE_TOKEN,
        "LABELLOOP_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LABELLOOP_LOG_LEVEL": "WARNING",
        "LABELLOOP_WORKER_PROBE_PORT": "0",
        "LABELLOOP_WORKER_PROBE_HOST": "127.0.0.1",
    }

    def start(**extra_env: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.model_gateway.worker"],
                cwd=REPO_ROOT,
                env={**env, **extra_env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        logs.append(log)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    for process, log in zip(started, logs, strict=True):
        lines = log.read_text(errors="replace").splitlines()
        print(f"--- {log.name} (exit {process.returncode}), last 40 of {len(lines)} lines:")
        print("\n".join(lines[-40:]))


class WorkerProcess:
    """A worker process and the address of its probe/metrics listener."""

    def __init__(self, start_worker: StartWorker, drain_grace_s: float = 0.3) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] = start_worker(
            LABELLOOP_WORKER_PROBE_PORT=str(port), LABELLOOP_WORKER_DRAIN_GRACE_S=str(drain_grace_s)
        )

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        async def ready() -> bool:
            assert self.process.poll() is None, "the worker exited before it was ready"
            try:
                answer = await client.get(f"{self.url}/ready")
            except httpx.TransportError:
                return False
            return answer.status_code == 200

        await wait_for(ready, 60, f"worker {self.url} to be ready")
        assert (await client.get(f"{self.url}/health")).json() == {"status": "UP"}

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


StartApi = Callable[..., tuple[subprocess.Popen[bytes], str]]
"""``start_api(port=None, **env)``: a real API process (on ``port``, else a free one) and its URL."""


@pytest.fixture
def start_api(database_url: str, redis_url: str) -> Iterator[StartApi]:
    """Start real API processes (uvicorn) on the test's database, besides the test's in-process API
    (small job batches, every delete a background job); ``start_api(**env)`` adds variables. Killed
    after the test."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LABELLOOP_API_TOKEN": TEST_API_TOKEN,
        "LABELLOOP_SERVICE_TOKEN": SERVICE_TOKEN,
        "LABELLOOP_GATEWAY_URL": f"http://127.0.0.1:{free_port()}",
        "LABELLOOP_JOB_BATCH_SIZE": "25",
        "LABELLOOP_JOB_INLINE_TASKS": "0",
        "LABELLOOP_JOB_POLL_INTERVAL_S": "0.2",
        "LABELLOOP_LOG_LEVEL": "WARNING",
    }

    def start(port: int | None = None, **extra_env: str) -> tuple[subprocess.Popen[bytes], str]:
        port = port or free_port()
        command = [sys.executable, "-m", "uvicorn", "services.annotation_api.main:app_from_env", "--factory"]
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**env, **extra_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        first_answer(process, f"{url}/health", timeout_s=120)
        return process, url

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
