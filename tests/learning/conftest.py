"""Fixtures of the learning-loop tests: annotators with their own tokens and a fast delivery loop."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest

from services.annotation_api.auth.service import token_digest
from services.annotation_api.settings import ApiSettings
from tests.support.servers import ServerThread
from tests.support.settings import narrowed_api_settings

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
                'INSERT INTO "user" (email, organization_id) '
                "SELECT $1, organization_id FROM \"user\" WHERE email = 'admin@labelloop.local' RETURNING id",
                f"annotator{next(numbers)}@x.test",
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


@pytest.fixture
def api_settings(api_settings: ApiSettings, request: pytest.FixtureRequest) -> ApiSettings:
    """A fast delivery loop (it also re-rings deliveries a dead backend left pending)."""
    return narrowed_api_settings(api_settings, request, sweep_interval_s=0.2, backend_check_interval_s=3600.0)
