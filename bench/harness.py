"""What the benchmarks share: a throwaway migrated database, uvicorn processes, the annotation API serving
the database, latency percentiles.

Run under ``python -m devstack.exec --`` (the Makefile does), which provides DATABASE_URL / REDIS_URL;
the benchmark creates its own database on that server and drops it afterwards, so it never touches the
data ``make run`` uses.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.embedded import free_port
from tests.support.databases import alembic, drop_database, recreate_database, unique_name

BENCH_TOKEN = "bench0123456789abcdef0123456789abcdef0123"
REPO_ROOT = Path(__file__).resolve().parents[1]
_START_TIMEOUT_S = 30.0


@dataclass
class BenchApi:
    client: httpx.AsyncClient
    database_url: str
    pid: int


async def _wait_healthy(client: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"annotation API exited with {process.returncode}")
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("annotation API did not become healthy in time")


LABEL_CONFIG = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="positive"/><Choice value="negative"/>
  </Choices>
</View>
"""
"""A two-choice text config the API benchmarks create their projects with."""


@asynccontextmanager
async def bench_database(prefix: str) -> AsyncIterator[str]:
    """A migrated database named ``<prefix>_<pid>_<n>`` on DATABASE_URL's server, dropped on exit."""
    server_url = os.environ["DATABASE_URL"]
    name = unique_name(prefix)
    url = await recreate_database(server_url, name)
    try:
        await asyncio.to_thread(alembic, url, "upgrade", "head")
        yield url
    finally:
        await drop_database(server_url, name)


def uvicorn_command(factory: str, port: int) -> list[str]:
    """``python -m uvicorn <factory> --factory`` on 127.0.0.1:``port``, quiet."""
    command = [sys.executable, "-m", "uvicorn", factory, "--factory"]
    return command + ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]


@asynccontextmanager
async def bench_api(prefix: str) -> AsyncIterator[BenchApi]:
    """A migrated database named ``<prefix>_<pid>_<n>`` and the API serving it; both gone on exit.

    The API runs as its own uvicorn process, as deployed, so the client never competes with it for
    the GIL and figures are per-request server latency plus loopback HTTP.
    """
    async with bench_database(prefix) as url:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LABELLOOP_API_TOKEN": BENCH_TOKEN,
            "LABELLOOP_MAX_PAGE_SIZE": "1000",
            "LABELLOOP_LOG_LEVEL": "WARNING",
        }
        command = uvicorn_command("services.annotation_api.main:app_from_env", port)
        process = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO_ROOT)
        try:
            headers = {"Authorization": f"Token {BENCH_TOKEN}"}
            base_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as client:
                await _wait_healthy(client, process)
                yield BenchApi(client=client, database_url=url.replace("+asyncpg", ""), pid=process.pid)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=15)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def latencies(
    call: Callable[[], Awaitable[None]], requests: int, warmup: int = 3
) -> tuple[float, float]:
    """(median, p99) in milliseconds over ``requests`` sequential calls, after a short warm-up."""
    loop = asyncio.get_running_loop()
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(requests):
        started = loop.time()
        await call()
        samples.append((loop.time() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.99)
