"""Fixtures: real PostgreSQL and Redis, and the services as real HTTP servers on 127.0.0.1.

Isolation: every test that asks for ``database_url`` gets a fresh database copied from a template the
real Alembic migrations built once per session; ``redis_url`` is an emptied Redis database of its own. When
``DATABASE_URL`` / ``REDIS_URL`` are set, those servers are used and nothing embedded starts.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from devstack.embedded import EmbeddedStack, free_port
from services.annotation_api.main import create_app as create_api_app
from services.annotation_api.settings import ApiSettings
from services.model_gateway.main import create_app as create_gateway_app
from services.model_gateway.settings import GatewaySettings
from tests.fakes.fake_backend import FakeBackend
from tests.support.databases import (
    alembic,
    drop_database,
    own_redis_database,
    recreate_database,
    unique_name,
)
from tests.support.servers import ServerThread
from tests.support.workers import RunBurst, drain

GATEWAY_HTTP = "services.model_gateway.http_protocol:HttpProtocol"
"""The gateway's HTTP protocol in production (devstack.run.GATEWAY_UVICORN_ARGS): head size capped."""
TEST_API_TOKEN = "0123456789abcdef0123456789abcdef01234567"
SERVICE_TOKEN = "service-token-for-tests"
SECRET_KEY = "secret-key-for-tests"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "api_settings(**fields): override annotation API settings")


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """DATABASE_URL and REDIS_URL: the configured servers, or embedded ones started for this session."""
    with tempfile.TemporaryDirectory(prefix="labelloop-test-") as data_dir:
        stack = EmbeddedStack(Path(data_dir), durable=False)
        added = stack.start(dict(os.environ))
        os.environ.update(added)
        try:
            yield {"DATABASE_URL": os.environ["DATABASE_URL"], "REDIS_URL": os.environ["REDIS_URL"]}
        finally:
            stack.stop()


@pytest.fixture(scope="session")
async def template_database(stack_env: dict[str, str]) -> AsyncIterator[str]:
    name = unique_name("lltest_template")
    url = await recreate_database(stack_env["DATABASE_URL"], name)
    alembic(url, "upgrade", "head")
    yield name
    await drop_database(stack_env["DATABASE_URL"], name)


@pytest.fixture
async def database_url(stack_env: dict[str, str], template_database: str) -> AsyncIterator[str]:
    name = unique_name("lltest")
    url = await recreate_database(stack_env["DATABASE_URL"], name, template=template_database)
    yield url
    await drop_database(stack_env["DATABASE_URL"], name)


@pytest.fixture
async def redis_url(stack_env: dict[str, str]) -> str:
    """An emptied Redis database of the test's own (arq queue, locks, breaker state): tests running in
    parallel, up to 15 at once (``tests.support.databases.own_redis_database``), never see each other's keys."""
    return await asyncio.to_thread(own_redis_database, stack_env["REDIS_URL"])


@dataclass
class Ports:
    api: int
    gateway: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway}"


@pytest.fixture
def ports() -> Ports:
    return Ports(api=free_port(), gateway=free_port())


@pytest.fixture
def api_settings(database_url: str, redis_url: str, ports: Ports) -> ApiSettings:
    return ApiSettings(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        api_token=TEST_API_TOKEN,
        service_token=SERVICE_TOKEN,
        secret_key=SECRET_KEY,
        public_url=ports.api_url,
        gateway_url=ports.gateway_url,
        sweep_interval_s=0.5,
    )


@pytest.fixture
def gateway_settings(redis_url: str, ports: Ports) -> GatewaySettings:
    return GatewaySettings(
        REDIS_URL=redis_url,
        api_url=ports.api_url,
        service_token=SERVICE_TOKEN,
        allowed_networks="127.0.0.0/8",
        retry_base_s=0.001,
        retry_max_s=0.01,
    )


@pytest.fixture
def api_server(api_settings: ApiSettings, ports: Ports) -> Iterator[ServerThread]:
    with ServerThread(create_api_app(api_settings), port=ports.api) as server:
        yield server


@pytest.fixture
def gateway_server(gateway_settings: GatewaySettings, ports: Ports) -> Iterator[ServerThread]:
    with ServerThread(create_gateway_app(gateway_settings), port=ports.gateway, http=GATEWAY_HTTP) as server:
        yield server


@pytest.fixture
async def api(api_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client of the annotation API (a real HTTP server)."""
    headers = {"Authorization": f"Token {TEST_API_TOKEN}"}
    async with httpx.AsyncClient(base_url=api_server.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture
async def gateway(gateway_server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the model gateway's HTTP API carrying the service credential."""
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    async with httpx.AsyncClient(base_url=gateway_server.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    """A programmable fake ML backend (a real HTTP server), stopped after the test."""
    with FakeBackend() as backend:
        yield backend


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, for reading what the services wrote."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def run_burst(gateway_settings: GatewaySettings) -> RunBurst:
    """``await run_burst()``: the real gateway job functions, in-process, until the queue is empty."""

    async def run() -> None:
        await drain(gateway_settings)

    return run
