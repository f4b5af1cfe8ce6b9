"""The platform every feature stands on: readiness, migrations, request ids, limits, the OpenAPI files."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from devstack.openapi import render_specs
from devstack.settings_doc import readme_with_table, render_table
from services.annotation_api.main import create_app as create_api_app
from services.annotation_api.settings import ApiSettings
from services.model_gateway.settings import GatewaySettings
from tests.support.databases import alembic, recreate_database, unique_name
from tests.support.servers import ServerThread

REPO_ROOT = Path(__file__).resolve().parents[1]


async def test_api_health_and_ready(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "UP"}
    ready = await api.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_api_not_ready_on_unmigrated_database(stack_env: dict[str, str], redis_url: str) -> None:
    url = await recreate_database(stack_env["DATABASE_URL"], unique_name("lltest_empty"))
    settings = ApiSettings(DATABASE_URL=url, REDIS_URL=redis_url)
    with ServerThread(create_api_app(settings)) as server:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.url}/ready")
    assert response.status_code == 503
    assert "alembic_version" in response.json()["reason"] or "migrat" in response.json()["reason"]


async def test_api_not_ready_when_database_unreachable(redis_url: str) -> None:
    settings = ApiSettings(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none", REDIS_URL=redis_url)
    with ServerThread(create_api_app(settings)) as server:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.url}/ready")
    assert response.status_code == 503
    assert "database" in response.json()["reason"]


async def test_gateway_health_and_ready(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.get("/health")).json() == {"status": "UP"}
    assert (await gateway.get("/ready")).status_code == 200


async def test_request_id_is_echoed_or_generated(api: httpx.AsyncClient) -> None:
    given = await api.get("/health", headers={"X-Request-ID": "trace-me-42"})
    assert given.headers["x-request-id"] == "trace-me-42"
    generated = await api.get("/health")
    assert len(generated.headers["x-request-id"]) == 32


async def test_api_routes_need_a_token(api: httpx.AsyncClient) -> None:
    me = await api.get("/api/current-user/whoami")
    assert me.status_code == 200
    assert me.json()["email"] == "admin@labelloop.local"
    anonymous = await api.get("/api/current-user/whoami", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    wrong = await api.get("/api/current-user/whoami", headers={"Authorization": "Token not-a-real-token"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "Invalid token."


async def test_oversized_body_is_413_naming_the_limit_of_its_route(api_settings: ApiSettings) -> None:
    """Ordinary routes get the small cap; only the bulk routes (import) get the large one."""
    settings = api_settings.model_copy(update={"max_json_request_bytes": 1000, "max_request_bytes": 20_000})
    headers = {"Authorization": f"Token {settings.api_token}", "Content-Type": "application/json"}
    with ServerThread(create_api_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            project = await client.post(
                "/api/projects", json={"title": "p", "label_config": "<View/>", "description": "x" * 2000}
            )
            assert project.status_code == 413
            assert "1000 bytes" in project.json()["detail"]
            assert "LABELLOOP_MAX_JSON_REQUEST_BYTES" in project.json()["detail"]
            project_id = (await client.post("/api/projects", json={"title": "p"})).json()["id"]
            tasks = [{"text": f"task {i}"} for i in range(500)]  # ~9 KB: over the small cap
            imported = await client.post(f"/api/projects/{project_id}/import", json=tasks)
            assert imported.status_code == 201, imported.text

            async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
                yield b"["
                for i in range(3000):
                    yield b'{"text": "task %d"},' % i
                yield b'{"text": "last"}]'

            too_big = await client.post(f"/api/projects/{project_id}/import", content=streamed())
            assert too_big.status_code == 413
            assert "LABELLOOP_MAX_REQUEST_BYTES" in too_big.json()["detail"]
            listed = await client.get("/api/tasks", params={"project": project_id})
            assert listed.json()["total"] == 500


async def test_migrations_round_trip_and_match_models(stack_env: dict[str, str]) -> None:
    url = await recreate_database(stack_env["DATABASE_URL"], unique_name("lltest_migrate"))
    alembic(url, "upgrade", "head")
    alembic(url, "downgrade", "base")
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
    finally:
        await conn.close()
    assert tables == []
    alembic(url, "upgrade", "head")
    check = alembic(url, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr


@pytest.mark.parametrize(
    "service", ["annotation_api", "annotation_api.internal", "model_gateway", "model_gateway.internal"]
)
def test_committed_openapi_spec_is_current(service: str) -> None:
    committed = json.loads((REPO_ROOT / "docs" / "openapi" / f"{service}.json").read_text())
    assert committed == render_specs()[service], "stale spec: run `make openapi` and commit the result"


def test_readme_configuration_table_is_current() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme == readme_with_table(readme), "stale settings table: run `make docs` and commit README.md"


def test_every_setting_is_documented() -> None:
    table = render_table()
    for settings_class in (ApiSettings, GatewaySettings):
        for name, field in settings_class.model_fields.items():
            assert field.description, f"{settings_class.__name__}.{name} needs a description"
    assert "`LABELLOOP_SERVICE_TOKEN` | API, gateway, worker" in table
    assert "`DATABASE_URL` | API |" in table


async def test_cli_creates_a_user_whose_token_works(api: httpx.AsyncClient, database_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.annotation_api.cli",
        "create-user",
        "--email",
        "ann@example.com",
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    token = stdout.decode().strip()
    me = await api.get("/api/current-user/whoami", headers={"Authorization": f"Token {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == "ann@example.com"
