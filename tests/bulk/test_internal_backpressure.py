"""Bulk traffic is isolated from users: ``/internal`` has a pool of its own and bounded concurrency, a busy
API answers 503 + ``Retry-After``, and the gateway worker waits as asked without failing the chunk.

The API side runs with one ``/internal`` slot, held by a lease this test keeps waiting on a row lock; the
worker side posts through ``worker._post_retrying`` to a real HTTP server that is busy a few times first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Response

from services.model_gateway import worker
from tests.bulk.test_chunk_counters import SERVICE, _start
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for_lock_wait


@pytest.mark.usefixtures("gateway_server")
@pytest.mark.api_settings(internal_db_pool_size=1, internal_wait_s=0.2, internal_retry_after_s=3)
async def test_a_busy_internal_pool_answers_503_with_retry_after_and_users_are_not_affected(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    await import_texts(api, project["id"], 30)
    await connect_backend(api, project["id"], fake.url)
    _, chunk_ids = await _start(api, project["id"], db)
    holder = db.transaction()
    await holder.start()
    await db.execute("SELECT id FROM job_chunk WHERE id = $1 FOR UPDATE", chunk_ids[0])
    held = asyncio.create_task(api.post(f"/internal/chunks/{chunk_ids[0]}/lease", headers=SERVICE))
    try:
        await wait_for_lock_wait(database_url, "the lease to hold the only /internal slot")
        busy = await api.post(f"/internal/chunks/{chunk_ids[1]}/lease", headers=SERVICE)
        assert busy.status_code == 503, busy.text
        assert busy.headers["Retry-After"] == "3"
        assert "busy" in busy.json()["detail"]
        for url in (f"/api/projects/{project['id']}", f"/api/tasks?project={project['id']}"):
            read = await api.get(url)
            assert read.status_code == 200, (url, read.text)
    finally:
        await holder.rollback()
    assert (await held).status_code == 200
    again = await api.post(f"/internal/chunks/{chunk_ids[1]}/lease", headers=SERVICE)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "leased"


def _busy_server(busy_answers: int, retry_after: str | None) -> tuple[FastAPI, list[int]]:
    """An app whose ``POST /call`` is busy ``busy_answers`` times (503, ``Retry-After``), then 200."""
    app = FastAPI()
    calls: list[int] = []

    @app.post("/call")
    async def call() -> Response:
        calls.append(1)
        if len(calls) <= busy_answers:
            headers = {} if retry_after is None else {"Retry-After": retry_after}
            return Response(b'{"detail": "busy"}', status_code=503, headers=headers)
        return Response(b'{"ok": true}', media_type="application/json")

    return app, calls


async def test_the_worker_waits_out_busy_answers_without_spending_its_attempts() -> None:
    busy = worker._API_ATTEMPTS + 2
    app, calls = _busy_server(busy, retry_after="0")
    with ServerThread(app) as server:
        client = worker.ChunkApi(server.url, "token")
        try:
            assert await worker._post_retrying(client, "/call") == b'{"ok": true}'
        finally:
            await client.aclose()
    assert len(calls) == busy + 1


async def test_a_503_without_retry_after_is_an_ordinary_failure() -> None:
    app, calls = _busy_server(worker._API_ATTEMPTS, retry_after=None)
    with ServerThread(app) as server:
        client = worker.ChunkApi(server.url, "token")
        try:
            with pytest.raises(worker.ApiCallFailed) as failed:
                await worker._post_retrying(client, "/call")
        finally:
            await client.aclose()
    assert failed.value.status_code == 503
    assert len(calls) == worker._API_ATTEMPTS


@pytest.mark.usefixtures("gateway_server")
@pytest.mark.api_settings(internal_db_pool_size=1)
async def test_an_internal_call_on_a_connection_postgres_dropped_is_a_503_to_retry(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    """The ``/internal`` pool does not ping its connections before each call: one that Postgres dropped
    (a restart, a failover) fails the call that finds it, as a 503 the workers retry, never a 500."""
    await import_texts(api, project["id"], 30)
    await connect_backend(api, project["id"], fake.url)
    _, chunk_ids = await _start(api, project["id"], db)
    first = await api.post(f"/internal/chunks/{chunk_ids[0]}/lease", headers=SERVICE)
    assert first.status_code == 200, first.text
    dropped = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    assert dropped >= 1

    lost = await api.post(f"/internal/chunks/{chunk_ids[1]}/lease", headers=SERVICE)
    assert lost.status_code == 503, lost.text
    assert lost.headers["Retry-After"] == "1"
    assert "database" in lost.json()["detail"]
    again = await api.post(f"/internal/chunks/{chunk_ids[1]}/lease", headers=SERVICE)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "leased"
