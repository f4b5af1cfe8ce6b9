"""Backend passwords never reach Redis: the queued jobs carry ids, and workers fetch the credentials from
the API (where they are encrypted at rest) when they call the backend."""

from __future__ import annotations

import asyncio
import secrets
import threading

import httpx
import pytest
from redis.asyncio import Redis

from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts
from tests.support.waiting import wait_job
from tests.support.workers import RunBurst

pytestmark = pytest.mark.usefixtures("gateway_server")


async def _everything(redis: Redis) -> list[bytes]:
    """Every key and every value in the test's Redis database, whatever their type."""
    found: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        found.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            found.append(await redis.get(key) or b"")
        elif kind == "zset":
            found.extend(await redis.zrange(key, 0, -1))
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                found += [field, value]
        elif kind == "list":
            found.extend(await redis.lrange(key, 0, -1))
        elif kind == "set":
            found.extend(await redis.smembers(key))
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                for field, value in fields.items():
                    found += [field, value]
    return found


async def test_queued_and_running_deliveries_and_training_keep_the_password_out_of_redis(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend, redis_url: str
) -> None:
    password = "pw-" + secrets.token_hex(12)
    fake.configure(require_basic_auth=("ml", password))
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 2)
    backend = await connect_backend(
        api, project_id, fake.url, auth_method="BASIC_AUTH", basic_auth_user="ml", basic_auth_pass=password
    )
    redis = Redis.from_url(redis_url)
    secret = password.encode()
    try:
        for task_id in task_ids:
            created = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice("Positive")})
            assert created.status_code == 201, created.text
        training = (await api.post(f"/api/ml/{backend['id']}/train")).json()["id"]
        predicting = (await api.post(f"/api/ml/{backend['id']}/predict")).json()["job_id"]
        queued = await _everything(redis)
        assert any(b"arq:job:" in key for key in queued), "jobs are queued"
        assert not [value for value in queued if secret in value]

        released = threading.Event()
        fake.configure(hold_webhook=released)
        worker = asyncio.create_task(run_burst())
        try:
            await fake.wait_for_calls("/webhook", 1, timeout_s=30)
            running = await _everything(redis)
            assert any(b"in-progress" in key for key in running), "a job is running"
            assert not [value for value in running if secret in value]
        finally:
            released.set()
            await worker
        assert (await wait_job(api, training))["status"] == "completed"
        assert (await wait_job(api, predicting))["status"] == "completed"
        assert not [value for value in await _everything(redis) if secret in value]
    finally:
        await redis.aclose()
    calls = fake.calls("/webhook")
    assert len(calls) >= 3 and all("authorization" in call.headers for call in calls), "it was used"
