"""Cross-process backend slots on a real Redis: the limit holds, and a dead holder's slot comes back."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from services.model_gateway.slots import BackendSlots
from tests.support.waiting import wait_for


@pytest.fixture
async def redis(redis_url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_the_limit_holds_and_a_released_slot_is_free_again(redis: aioredis.Redis) -> None:
    slots = BackendSlots(redis)
    async with slots.hold("http://b", 1, 1.0):
        with pytest.raises(TimeoutError):
            async with slots.hold("http://b", 1, 0.1):
                pass
        async with slots.hold("http://other", 1, 0.1):  # other backends have their own slots
            pass
    async with slots.hold("http://b", 1, 0.1):
        assert await redis.zcard(BackendSlots.key("http://b")) == 1
    assert await redis.zcard(BackendSlots.key("http://b")) == 0


async def test_a_slot_whose_holder_died_expires_with_its_lease(redis: aioredis.Redis) -> None:
    """A worker killed mid-call never releases nor renews: its slot is free once the lease runs out."""
    dead = BackendSlots(redis, lease_s=0.3)
    holding = asyncio.create_task(dead._acquire(BackendSlots.key("http://b"), "dead-worker", 1, 1.0))
    assert await holding  # taken, and nobody will renew or release it
    async with BackendSlots(redis).hold("http://b", 1, 10.0):
        members = await redis.zrange(BackendSlots.key("http://b"), 0, -1)
        assert b"dead-worker" not in members and len(members) == 1


async def test_a_held_slot_is_renewed_while_the_call_runs(redis: aioredis.Redis) -> None:
    slots = BackendSlots(redis, lease_s=0.3)
    async with slots.hold("http://b", 1, 1.0):
        [(_, first)] = await redis.zrange(BackendSlots.key("http://b"), 0, -1, withscores=True)

        async def renewed_past_the_first_lease() -> bool:
            members = await redis.zrange(BackendSlots.key("http://b"), 0, -1, withscores=True)
            return len(members) == 1 and members[0][1] >= first + 300

        await wait_for(renewed_past_the_first_lease, 10, "the lease to be renewed beyond its first expiry")
        with pytest.raises(TimeoutError):
            async with slots.hold("http://b", 1, 0.05):
                pass
