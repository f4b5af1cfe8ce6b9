"""Which queued jobs a gateway worker starts: none that runs already, here or elsewhere, and no more than
its slots, without waiting for one to free up (``ReconnectingWorker.start_jobs``, on a real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import func

from services.model_gateway.worker import ReconnectingWorker

QUEUE = "labelloop:test-start-jobs"


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    yield redis
    await redis.aclose()


async def test_a_worker_starts_queued_jobs_no_one_runs_up_to_its_slots(pool: ArqRedis) -> None:
    release = asyncio.Event()

    async def hold(ctx: dict[str, Any]) -> None:
        await release.wait()

    worker = ReconnectingWorker(
        functions=[func(hold, name="hold")],
        redis_pool=pool,
        queue_name=QUEUE,
        max_jobs=2,
        handle_signals=False,
        keep_result=0,
    )
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
