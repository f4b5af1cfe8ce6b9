"""Bounded polling: tests wait for a condition (or a job) with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``check`` until true, failing after a bounded deadline."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_job(
    api: httpx.AsyncClient,
    job_id: int,
    statuses: frozenset[str] = frozenset({"completed", "failed"}),
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Poll ``/api/jobs/{job_id}`` until its status is one of ``statuses``; the job as last read."""
    job: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal job
        response = await api.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        return job["status"] in statuses

    try:
        await wait_for(finished, timeout_s, f"job {job_id} to reach {sorted(statuses)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last read: {job}") from None
    return job


async def wait_for_lock_wait(
    database_url: str, what: str, timeout_s: float = 20.0, sessions: int = 1
) -> None:
    """Until ``sessions`` sessions of the database wait on a lock: the race a test set up is on.

    Polls from a connection of its own: inside a transaction pg_stat_activity would not change.
    """
    conn = await asyncpg.connect(database_url)

    async def waiting() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) >= $1 FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'",
                sessions,
            )
        )

    try:
        await wait_for(waiting, timeout_s, what)
    finally:
        await conn.close()


async def wait_job_result(api: httpx.AsyncClient, job_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Wait for a background job (a delete, auto-labeling…) to complete; its ``result`` summary."""
    job = await wait_job(api, job_id, frozenset({"completed", "failed", "cancelled"}), timeout_s)
    assert job["status"] == "completed", job
    result: dict[str, Any] = job["result"]
    return result


async def wait_planned(db: asyncpg.Connection, job_id: int, timeout_s: float = 30.0) -> None:
    """Until the API's job runner has written every chunk row of a bulk prediction job."""

    async def planned() -> bool:
        return bool(await db.fetchval("SELECT step IS NULL FROM job WHERE id = $1", job_id))

    await wait_for(planned, timeout_s, f"job {job_id} to be planned")
