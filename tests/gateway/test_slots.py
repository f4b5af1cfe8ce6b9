"""Cross-process backend slots on a real Redis: the limit holds, and a dead holder's slot comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.model_gateway.slots import BackendSlots
from tests.support.waiting import wait_for


@pytest.fixture
async def redis(redis_url: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


class CountingRedis(aioredis.Redis):
    """A real client that counts the commands it sends, by name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: Counter[str] = Counter()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent[str(args[0]).upper()] += 1
        return await super().execute_command(*args, **options)


@pytest.fixture
async def counting(redis_url: str) -> CountingRedis:
    client = CountingRedis.from_url(redis_url)
    yield client
    await client.aclose()


async def members(redis: aioredis.Redis, backend: str = "http://b") -> list[bytes]:
    return list(await redis.zrange(BackendSlots.key(backend), 0, -1))


async def waiting_calls(slots: BackendSlots, count: int) -> None:
    async def queued() -> bool:
        return slots.waiting("http://b") == count

    await wait_for(queued, 5, f"{count} calls waiting for a slot")


async def given_back(redis: aioredis.Redis) -> None:
    async def none_held() -> bool:
        return not await members(redis)

    await wait_for(none_held, 10, "every slot to go back to Redis")


async def test_the_limit_holds_and_a_released_slot_is_free_again(redis: aioredis.Redis) -> None:
    slots = BackendSlots(redis, keep_s=0.2)
    async with slots.hold("http://b", 1, 1.0):
        with pytest.raises(TimeoutError):
            async with slots.hold("http://b", 1, 0.1):
                pass
        async with slots.hold("http://other", 1, 0.1):  # other backends have their own slots
            pass
    async with slots.hold("http://b", 1, 0.1):
        assert len(await members(redis)) == 1

    other_process = BackendSlots(redis, poll_max_s=0.01)
    with pytest.raises(TimeoutError):  # kept for this process's next call a moment longer
        async with other_process.hold("http://b", 1, 0.05):
            pass

    await given_back(redis)
    async with other_process.hold("http://b", 1, 0.1):
        assert len(await members(redis)) == 1
    await other_process.aclose()
    await slots.aclose()


async def test_back_to_back_calls_of_a_process_reuse_its_slot(redis: aioredis.Redis) -> None:
    """What a chunk's batches do: the slot is taken from Redis once, not once per call."""
    slots = BackendSlots(redis, keep_s=10.0, reuse_s=10.0)
    async with slots.hold("http://b", 2, 1.0):
        first = await members(redis)
    for _ in range(5):
        async with slots.hold("http://b", 2, 1.0):
            assert await members(redis) == first
    await slots.aclose()
    assert await members(redis) == [], "closing gives back what the process kept"


async def test_a_waiting_call_gets_the_slot_of_a_call_that_finishes(redis: aioredis.Redis) -> None:
    """Handed over at once: with a 5 s poll, only the hand-over can let the second call in within 2 s."""
    slots = BackendSlots(redis, poll_s=5.0)
    second_in = asyncio.Event()

    async def second_call() -> None:
        async with slots.hold("http://b", 1, 10.0):
            second_in.set()
            await asyncio.sleep(0.1)

    async with slots.hold("http://b", 1, 1.0):
        first = await members(redis)
        waiting = asyncio.create_task(second_call())
        await waiting_calls(slots, 1)
        assert not second_in.is_set()
    await asyncio.wait_for(second_in.wait(), 2)
    assert await members(redis) == first, "the same slot, not a second one"
    await waiting
    await slots.aclose()


async def test_calls_waiting_in_a_process_get_slots_first_come_first_served(redis: aioredis.Redis) -> None:
    """They queue behind one poller: not each polling Redis with its own backoff, where a late caller
    polling at the right moment overtakes those waiting longer."""
    slots, entered = BackendSlots(redis), []

    async def call(n: int) -> None:
        async with slots.hold("http://b", 1, 10.0):
            entered.append(n)
            await asyncio.sleep(0.02)

    other_process = BackendSlots(redis)
    async with other_process.hold("http://b", 1, 1.0):
        calls = []
        for n in range(6):
            calls.append(asyncio.create_task(call(n)))
            await waiting_calls(slots, n + 1)
    await other_process.aclose()
    await asyncio.gather(*calls)
    await slots.aclose()
    assert entered == list(range(6))
    assert await members(redis) == []


async def test_a_slot_goes_back_to_redis_after_reuse_s_so_other_processes_get_their_turn(
    redis: aioredis.Redis,
) -> None:
    busy = BackendSlots(redis, reuse_s=0.3, keep_s=10.0)
    stop = asyncio.Event()

    async def back_to_back_calls() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with busy.hold("http://b", 1, 1.0):
                    await asyncio.sleep(0.01)

    calls = asyncio.create_task(back_to_back_calls())
    other_process = BackendSlots(redis)
    try:
        async with other_process.hold("http://b", 1, 10.0):
            other_turn = await members(redis)
        await other_process.aclose()
    finally:
        stop.set()
        await calls
        await busy.aclose()
    assert len(other_turn) == 1


async def test_a_slot_whose_holder_died_expires_with_its_lease(redis: aioredis.Redis) -> None:
    """A worker killed mid-call never releases nor renews: its slot is free once the lease runs out."""
    dead = BackendSlots(redis, lease_s=0.3)
    assert await dead._take_script(keys=[BackendSlots.key("http://b")], args=[1, 300, "dead-worker"])
    async with BackendSlots(redis).hold("http://b", 1, 10.0):
        taken = await members(redis)
        assert b"dead-worker" not in taken and len(taken) == 1


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


async def test_a_process_that_keeps_no_slot_still_serves_its_waiting_calls(redis: aioredis.Redis) -> None:
    """``reuse_s=0``: every slot goes back after its call, but one the poller takes goes to a waiting call."""
    slots, other_process = BackendSlots(redis, reuse_s=0.0), BackendSlots(redis)
    async with other_process.hold("http://b", 1, 1.0):
        waiting = asyncio.create_task(_hold_once(slots))
        await waiting_calls(slots, 1)
    await other_process.aclose()
    await asyncio.wait_for(waiting, 5)
    await slots.aclose()
    await given_back(redis)


async def _hold_once(slots: BackendSlots) -> None:
    async with slots.hold("http://b", 1, 10.0):
        pass


async def calls_together(slots: BackendSlots, count: int) -> None:
    """``count`` calls with ``count`` slots allowed, each holding its slot until all are in."""
    inside, all_in = 0, asyncio.Event()

    async def call() -> None:
        nonlocal inside
        async with slots.hold("http://b", count, 5.0):
            inside += 1
            if inside == count:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), 5)

    await asyncio.gather(*(call() for _ in range(count)))


async def test_calls_starting_together_take_their_slots_in_one_round_trip(counting: CountingRedis) -> None:
    """A chunk's batches start at once: one poll takes a slot for each (here all four fit the limit)."""
    slots = BackendSlots(counting)
    await calls_together(slots, 4)
    assert counting.sent["EVALSHA"] + counting.sent["EVAL"] == 1, counting.sent
    await slots.aclose()


async def test_slots_kept_by_one_burst_go_back_in_one_command(counting: CountingRedis) -> None:
    slots = BackendSlots(counting, keep_s=1.0)
    await calls_together(slots, 3)
    assert len(await members(counting)) == 3, "kept for the next calls a moment"
    await given_back(counting)
    assert counting.sent["ZREM"] == 1, counting.sent
    await slots.aclose()
