"""Fixtures of the learning-loop tests: annotators with their own tokens, fake backends, a burst worker."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker

from services.annotation_api.auth.service import token_digest
from services.annotation_api.settings import ApiSettings
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.worker import WorkerSettings, shutdown, startup
from shared.jobs import QUEUE_NAME
from tests.fakes.fake_backend import FakeBackend
from tests.support.servers import ServerThread

NewAnnotator = Callable[[], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def new_annotator(database_url: str, api_server: ServerThread) -> AsyncIterator[NewAnnotator]:
    """``await new_annotator()``: a client of the API authenticated as a fresh user."""
    clients: list[httpx.AsyncClient] = []
    numbers = itertools.count()

    async def new() -> httpx.AsyncClient:
        key = secrets.token_hex(20)
        conn = await asyncpg.connect(database_url)
        try:
            user_id = await conn.fetchval(
                'INSERT INTO "user" (email) VALUES ($1) RETURNING id', f"annotator{next(numbers)}@x.test"
            )
            await conn.execute(
                "INSERT INTO api_token (user_id, key_digest) VALUES ($1, $2)", user_id, token_digest(key)
            )
        finally:
            await conn.close()
        client = httpx.AsyncClient(
            base_url=api_server.url, headers={"Authorization": f"Token {key}"}, timeout=60
        )
        clients.append(client)
        return client

    yield new
    for client in clients:
        await client.aclose()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "api_settings(**fields): override annotation API settings")


@pytest.fixture
def api_settings(api_settings: ApiSettings, request: pytest.FixtureRequest) -> ApiSettings:
    """A fast delivery loop (it also re-rings deliveries a dead backend left pending); a test can
    change more with ``@pytest.mark.api_settings(field=value)``."""
    update: dict[str, Any] = {"sweep_interval_s": 0.2, "backend_check_interval_s": 3600.0}
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


RunBurst = Callable[[], Awaitable[None]]


@pytest.fixture
def run_burst(gateway_settings: GatewaySettings) -> RunBurst:
    """Run an in-process gateway worker (the real job functions) until the queue is empty."""

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
        )
        try:
            await worker.main()
        finally:
            await worker.close()

    return run


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``check`` until it holds, failing after a bounded deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
