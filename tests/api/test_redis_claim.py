"""A Redis database is one deployment's: an API whose Redis database another deployment claims is not ready
(its workers then take no jobs), and says why, until the other's claim lapses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from services.annotation_api.main import create_app
from services.annotation_api.redis_claim import CLAIM_KEY
from services.annotation_api.settings import ApiSettings
from tests.support.databases import drop_database, recreate_database, unique_name
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for

_TTL_S = 1.0


@pytest.fixture
async def other_deployment_database(stack_env: dict[str, str], template_database: str) -> AsyncIterator[str]:
    """A database of another deployment: a copy of the template with an id of its own."""
    url = await recreate_database(
        stack_env["DATABASE_URL"], unique_name("lltest"), template=template_database
    )
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute("UPDATE deployment SET id = gen_random_uuid()")
    finally:
        await conn.close()
    yield url
    await drop_database(stack_env["DATABASE_URL"], url.rsplit("/", 1)[1])


async def _ready(server: ServerThread) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.get("/ready")


async def test_an_api_on_a_redis_database_another_deployment_claims_is_not_ready_until_the_claim_lapses(
    api_settings: ApiSettings, other_deployment_database: str
) -> None:
    first = api_settings.model_copy(update={"redis_claim_ttl_s": _TTL_S})
    second = first.model_copy(update={"database_url": other_deployment_database})
    holder = ServerThread(create_app(first)).start()
    try:

        async def claimed() -> bool:
            client = aioredis.Redis.from_url(first.redis_url)
            try:
                return bool(await client.exists(CLAIM_KEY))
            finally:
                await client.aclose()

        await wait_for(claimed, 10, "the first deployment's claim")
        with ServerThread(create_app(second)) as newcomer:

            async def refused() -> bool:
                return (await _ready(newcomer)).status_code == 503

            await wait_for(refused, 10, "the second deployment to see the claim")
            reason = (await _ready(newcomer)).json()["reason"]
            assert "in use by another labelloop deployment" in reason, reason
            assert first.redis_url.rsplit("/", 1)[1] in reason, reason
            with ServerThread(create_app(first)) as replica:  # the same deployment: its claim, ready
                assert (await _ready(replica)).status_code == 200
            assert (await _ready(holder)).status_code == 200

            holder.stop()

            async def ready_again() -> bool:
                return (await _ready(newcomer)).status_code == 200

            await wait_for(ready_again, 10 * _TTL_S, "the second deployment to take the lapsed claim")
    finally:
        holder.stop()
