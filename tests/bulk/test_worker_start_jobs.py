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
    for worker in (alive, dead, other):
        assert worker.in_progress_timeout_s <= 30, "arq's own: the longest job's timeout + 10 s"
        worker.in_progress_timeout_s = 0.6  # scaled down for the test
    await pool.enqueue_job("hold", "renewed", _job_id="renewed", _queue_name=QUEUE)
    await pool.enqueue_job("hold", "orphaned", _job_id="orphaned", _queue_name=QUEUE)
    await asyncio.wait_for(alive.start_jobs([b"renewed"]), 5)
    await asyncio.wait_for(dead.start_jobs([b"orphaned"]), 5)
    ttl_ms = await pool.pttl(in_progress_key_prefix + "renewed")
    assert 0 < ttl_ms <= 600
    # ``dead`` stands for a killed worker: it never renews its job's mark (and its job never ends).

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5  # over twice the mark
    while loop.time() < deadline:
        await alive._renew_running_marks()
        await asyncio.wait_for(other.start_jobs([b"renewed", b"orphaned"]), 5)
        await asyncio.sleep(0.1)
    assert sorted(other.tasks) == ["orphaned"], "the renewed job stays the live worker's"
    assert ran.count("renewed") == 1 and ran.count("orphaned") == 2

    release.set()
    await asyncio.gather(*alive.tasks.values(), *dead.tasks.values(), *other.tasks.values())
