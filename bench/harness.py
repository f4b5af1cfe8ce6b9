"""What the API benchmarks share: a throwaway migrated database and the annotation API serving it.

Run under ``python -m devstack.exec --`` (the Makefile does), which provides DATABASE_URL / REDIS_URL;
the benchmark creates its own database on that server and drops it afterwards, so it never touches the
data ``make run`` uses.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from services.annotation_api.main import create_app
from services.annotation_api.settings import ApiSettings
from tests.support.databases import alembic, drop_database, recreate_database, unique_name
from tests.support.servers import ServerThread

BENCH_TOKEN = "bench0123456789abcdef0123456789abcdef0123"


@dataclass
class BenchApi:
    client: httpx.AsyncClient
    database_url: str
    settings: ApiSettings


@asynccontextmanager
async def bench_api(prefix: str) -> AsyncIterator[BenchApi]:
    """A migrated database named ``<prefix>_<pid>_<n>`` and an API server on it; both gone on exit."""
    server_url = os.environ["DATABASE_URL"]
    name = unique_name(prefix)
    url = await recreate_database(server_url, name)
    try:
        await asyncio.to_thread(alembic, url, "upgrade", "head")
        settings = ApiSettings(
            DATABASE_URL=url,
            REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            api_token=BENCH_TOKEN,
            max_page_size=1000,
        )
        with ServerThread(create_app(settings)) as server:
            headers = {"Authorization": f"Token {BENCH_TOKEN}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=600) as client:
                yield BenchApi(client=client, database_url=url.replace("+asyncpg", ""), settings=settings)
    finally:
        await drop_database(server_url, name)


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
