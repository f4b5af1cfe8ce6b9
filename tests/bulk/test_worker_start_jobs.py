"""Which queued jobs a gateway worker starts: none that runs already, here or elsewhere, and no more than
its slots, without waiting for one to free up (``ReconnectingWorker.start_jobs``, on a real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import func

from services.model_gateway.api_gate import ApiGate
from services.model_gateway.worker import ReconnectingWorker
from tests.support.waiting import wait_for

QUEUE = "labelloop:test-start-jobs"


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    yield redis
    await redis.aclose()


def worker_of(pool: ArqRedis, hold: Callable[..., Awaitable[None]], max_jobs: int) -> ReconnectingWorker:
    """A worker running ``hold`` jobs from this module's queue, with no poll loop: the test drives it."""
    return ReconnectingWorker(
        functions=[func(hold, name="hold")],
        redis_pool=pool,
        queue_name=QUEUE,
        max_jobs=max_jobs,
        handle_signals=False,
        keep_result=0,
    )


async def test_a_worker_starts_queued_jobs_no_one_runs_up_to_its_slots(pool: ArqRedis) -> None:
    release = asyncio.Event()

    async def hold(ctx: dict[str, Any]) -> None:
        await release.wait()

    worker = worker_of(pool, hold, max_jobs=2)
    for job_id in "abcd":
        await pool.enqueue_job("hold", _job_id=job_id, _queue_name=QUEUE)
    await pool.psetex(in_progress_key_prefix + "a", 60_000, b"1")  # another worker runs it

    await asyncio.wait_for(worker.start_jobs([b"a", b"b", b"c", b"d"]), 5)
    assert sorted(worker.tasks) == ["b", "c"], "a runs elsewhere; no slot is left for d"
    await asyncio.wait_for(worker.start_jobs([b"b", b"c", b"d"]), 5)
    assert sorted(worker.tasks) == ["b", "c"], "its own jobs are not started twice, and it is still full"

    release.set()
    await asyncio.gather(*worker.tasks.values())
    worker.tasks.clear()
    await asyncio.wait_for(worker.start_jobs([b"a", b"d"]), 5)
    assert sorted(worker.tasks) == ["d"]
    await asyncio.gather(*worker.tasks.values())


async def exists_calls(pool: ArqRedis) -> int:
    return int((await pool.info("commandstats")).get("cmdstat_exists", {}).get("calls", 0))


async def test_a_worker_asks_about_the_queue_head_first_and_further_only_while_it_has_a_slot(
    pool: ArqRedis,
) -> None:
    """Jobs other workers run are the oldest; asking about all the ids arq read (up to 100) for one free
    slot cost ~35 EXISTS per chunk at a million tasks."""
    release = asyncio.Event()

    async def hold(ctx: dict[str, Any]) -> None:
        await release.wait()

    job_ids = [f"job-{number:02}" for number in range(40)]
    for job_id in job_ids:
        await pool.enqueue_job("hold", _job_id=job_id, _queue_name=QUEUE)
    for job_id in job_ids[:20]:  # run elsewhere: more than one round trip's worth
        await pool.psetex(in_progress_key_prefix + job_id, 60_000, b"1")
    worker = worker_of(pool, hold, max_jobs=2)

    before = await exists_calls(pool)
    await asyncio.wait_for(worker.start_jobs([job_id.encode() for job_id in job_ids]), 5)
    assert sorted(worker.tasks) == ["job-20", "job-21"]
    checked = await exists_calls(pool) - before
    assert checked < len(job_ids), "the ids past the job that filled the last slot were asked about too"

    release.set()
    await asyncio.gather(*worker.tasks.values())


async def test_a_full_worker_starts_the_next_queued_job_when_one_finishes_not_at_its_next_poll(
    pool: ArqRedis, api: httpx.AsyncClient
) -> None:
    """No poll loop runs here at all: only ``_refill_as_jobs_finish`` can start b and c."""
    started = {job_id: asyncio.Event() for job_id in "abc"}
    release = {job_id: asyncio.Event() for job_id in "abc"}

    async def hold(ctx: dict[str, Any], name: str) -> None:
        started[name].set()
        await release[name].wait()

    worker = worker_of(pool, hold, max_jobs=1)
    for job_id in "abc":
        await pool.enqueue_job("hold", job_id, _job_id=job_id, _queue_name=QUEUE)
    gate = ApiGate(str(api.base_url))
    assert await gate.check(api), gate.reason  # the real API answers ready: the gate opens
    await asyncio.wait_for(worker.start_jobs([b"a", b"b", b"c"]), 5)
    await asyncio.wait_for(started["a"].wait(), 5)

    refilling = asyncio.create_task(worker._refill_as_jobs_finish(gate))
    for finishing, following in (("a", "b"), ("b", "c")):
        assert not started[following].is_set()
        release[finishing].set()
        await asyncio.wait_for(started[following].wait(), 5)
    release["c"].set()
    await asyncio.wait_for(refilling, 5)  # the queue is empty: a free slot ends the refill
    assert worker.job_counter == 0

    for job_id in "de":
        await pool.enqueue_job("hold", "a", _job_id=job_id, _queue_name=QUEUE)
    release["a"].clear()
    await asyncio.wait_for(worker.start_jobs([b"d", b"e"]), 5)
    gate.close("the API went away")
    await asyncio.wait_for(worker._refill_as_jobs_finish(gate), 5)  # a closed gate starts nothing more
    release["a"].set()
    await asyncio.gather(*worker.tasks.values())
    assert sorted(worker.tasks) == ["d"], "e waits on the queue for the gate to open"


async def test_a_job_whose_worker_died_before_its_lease_is_started_by_another_within_its_mark(
    pool: ArqRedis,
) -> None:
    """arq marks a started job as running for minutes; a worker killed before it leased the chunk left it
    there that long. The mark is short and renewed while its worker lives: a live worker's job stays its
    own, a dead worker's is started elsewhere once the mark lapses."""
    release = asyncio.Event()
    ran: list[str] = []

    async def hold(ctx: dict[str, Any], name: str) -> None:
        ran.append(name)
        await release.wait()

    alive, dead, other = (worker_of(pool, hold, max_jobs=1) for _ in range(3))
    assert all(worker.in_progress_timeout_s <= 30 for worker in (alive, dead, other)), (
        "arq's own mark: the longest job's timeout + 10 s"
    )
    dead.in_progress_timeout_s = 0.3  # scaled down, so the test need not wait 30 s for it to lapse
    for job_id in ("renewed", "orphaned"):
        await pool.enqueue_job("hold", job_id, _job_id=job_id, _queue_name=QUEUE)
    await asyncio.wait_for(alive.start_jobs([b"renewed"]), 5)
    await asyncio.wait_for(dead.start_jobs([b"orphaned"]), 5)

    renewed_key = in_progress_key_prefix + "renewed"
    await pool.pexpire(renewed_key, 100)  # as if most of the mark had passed
    await alive._renew_running_marks()
    assert await pool.pttl(renewed_key) > 20_000, "renewed to the whole mark"
    await alive._renew_running_marks()  # within a third of the mark: no round trip, nothing changes

    # ``dead`` stands for a killed worker: it never renews its job's mark (and its job never ends).
    orphaned_key = in_progress_key_prefix + "orphaned"
    await wait_for(lambda: _gone(pool, orphaned_key), timeout_s=5, what="the dead worker's mark to lapse")
    await asyncio.wait_for(other.start_jobs([b"renewed", b"orphaned"]), 5)
    assert sorted(other.tasks) == ["orphaned"], "the renewed job stays the live worker's"

    async def orphan_ran_again() -> bool:
        return ran.count("orphaned") == 2

    await wait_for(orphan_ran_again, timeout_s=5, what="the orphaned job to run on the other worker")
    assert ran.count("renewed") == 1

    release.set()
    await asyncio.gather(*alive.tasks.values(), *dead.tasks.values(), *other.tasks.values())


async def _gone(pool: ArqRedis, key: str) -> bool:
    return not await pool.exists(key)
