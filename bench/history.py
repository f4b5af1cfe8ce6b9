"""A database with history, for the benchmarks' ``--with-history`` mode (issue 12).

``history`` is the afternoon of ordinary use that once left the tables bloated: projects of a given size
imported with one prediction per task (version ``old``), predicted again through the gateway (a new
version), the ``old`` version's predictions deleted, then the project deleted — every delete through the
API's delete jobs (which end with a VACUUM of the tables they touched), each awaited until its job
completed. ``bench.bulk_ops`` and the API benchmarks (``bulk_predict``, ``import_tasks``, ``list_tasks``)
share it; the latter run their measurement fresh, build the history on the same database, run it again and
print both with ``print_comparison``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson

from bench.harness import make_texts
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import choice

_TERMINAL = ("completed", "failed", "cancelled")
TOLERANCE = 0.10
"""With history, a figure must stay within this fraction of the fresh one (issue 12)."""


def check(response: httpx.Response) -> httpx.Response:
    """The response, or RuntimeError with the request and the start of the body."""
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"
        )
    return response


async def wait_job(api: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    """Follow the job's event stream until it ends; the job, or RuntimeError unless it completed.

    The stream is how the console watches a job: one request, which the API answers by re-reading the job
    every ``LABELLOOP_JOB_EVENTS_POLL_S``. Polling ``GET /api/jobs/{id}`` twenty times a second instead
    (what this did before) was load of the benchmark's own, an HTTP request and a token check each, in
    the users' API's CPU and the reader's latency. The stream reports the end up to one re-read late:
    time the job with ``Stopwatch.until_finished``."""
    async with api.stream("GET", f"/api/jobs/{job_id}/events") as response:
        if response.status_code >= 300:
            await response.aread()
            check(response)
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            job: dict[str, Any] = orjson.loads(line[len("data: ") :])
            if job["status"] in _TERMINAL:
                if job["status"] != "completed":
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
                return job
    raise RuntimeError(f"job {job_id} was deleted before it ended")


@dataclass(frozen=True)
class Stopwatch:
    """When a request that starts a job was sent, on the benchmark's clock and on the wall clock."""

    perf: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)

    def elapsed(self) -> float:
        return time.perf_counter() - self.perf

    def until_finished(self, job: dict[str, Any]) -> float:
        """Seconds from the request to the job's ``finished_at``: Postgres's clock, this machine's when
        the stack is local. When that clock disagrees with ours (a remote DATABASE_URL), the time until
        the stream said so."""
        seen = self.elapsed()
        if job.get("finished_at") is None:
            return seen
        finished = datetime.fromisoformat(job["finished_at"]).timestamp() - self.wall
        return finished if 0 < finished <= seen else seen


async def timed(api: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> tuple[float, float, int]:
    """(seconds to answer, seconds to finish, job id) of a request that starts a job."""
    clock = Stopwatch()
    response = check(await api.request(method, url, **kwargs))
    answered = clock.elapsed()
    if "X-Job-Id" in response.headers:
        job_id = int(response.headers["X-Job-Id"])
    else:
        job_id = int(response.json()["job_id"])
    return answered, clock.until_finished(await wait_job(api, job_id)), job_id


async def action(
    api: httpx.AsyncClient, name: str, project_id: int, body: Any = None
) -> tuple[float, float, int]:
    """A data manager action on the whole project, timed as ``timed``."""
    return await timed(api, "POST", "/api/dm/actions", params={"id": name, "project": project_id}, json=body)


async def delete_project(api: httpx.AsyncClient, project_id: int) -> None:
    """Delete a project through the API and wait until its delete job (VACUUM included) completed."""
    await timed(api, "DELETE", f"/api/projects/{project_id}")


async def project_with_predictions(
    api: httpx.AsyncClient, backend_url: str, size: int, title: str
) -> tuple[int, float]:
    """A project of ``size`` tasks, each with an imported prediction of version ``old``, and a connected
    backend; (its id, seconds the import took)."""
    project_id: int = check(
        await api.post("/api/projects", json={"title": title, "label_config": SENTIMENT_CONFIG})
    ).json()["id"]
    result = choice("Positive")
    items = [
        {"data": text, "predictions": [{"result": result, "score": 0.5, "model_version": "old"}]}
        for text in make_texts(size)
    ]
    started = time.perf_counter()
    for start in range(0, size, 50_000):
        check(
            await api.post(
                f"/api/projects/{project_id}/import",
                content=orjson.dumps(items[start : start + 50_000]),
                headers={"Content-Type": "application/json"},
            )
        )
    imported_s = time.perf_counter() - started
    check(await api.post("/api/ml", json={"url": backend_url, "project": project_id, "batch_size": 100}))
    return project_id, imported_s


async def history(api: httpx.AsyncClient, backend_url: str, size: int, projects: int) -> None:
    """Create, predict, re-predict with a new version, delete the old version's predictions, delete."""
    for round_no in range(projects):
        project_id, _ = await project_with_predictions(api, backend_url, size, f"history {size} #{round_no}")
        await action(api, "retrieve_tasks_predictions", project_id)
        await timed(
            api, "DELETE", f"/api/projects/{project_id}/model-versions", json={"model_version": "old"}
        )
        await delete_project(api, project_id)


async def build_history(
    api: httpx.AsyncClient, backend_url: str, size: int, projects: int, measured: list[int]
) -> None:
    """Between the two passes: delete the fresh pass's projects (``measured``) through the API, then
    ``history``; prints what it did and how long it took."""
    started = time.perf_counter()
    for project_id in measured:
        await delete_project(api, project_id)
    await history(api, backend_url, size, projects)
    await settle()
    print(
        f"history: deleted the fresh pass's {len(measured)} project(s); {projects} project(s) of {size:,} tasks "
        f"imported, predicted twice, old version deleted, deleted ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )


async def settle(timeout_s: float = 120.0) -> None:
    """Let the server finish what the history left behind before measuring: a checkpoint writes the dirty
    pages of the deletes now (instead of during the measurement), and running autovacuum workers finish.

    Without it the second pass paid for the first's writes, whatever the tables looked like.
    """
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        await conn.execute("CHECKPOINT")
        query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        for _ in range(int(timeout_s / 0.5)):
            if not await conn.fetchval(query):
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def add_history_arguments(parser: argparse.ArgumentParser, default_projects: int = 3) -> None:
    """``--with-history``, ``--history-tasks`` (None: the measured size) and ``--history-projects``."""
    parser.add_argument(
        "--with-history",
        action="store_true",
        help="measure on a fresh database, build history on it (large projects made and deleted), measure again",
    )
    parser.add_argument(
        "--history-tasks",
        type=int,
        default=None,
        help="tasks per history project (default: the measured size)",
    )
    parser.add_argument(
        "--history-projects", type=int, default=default_projects, help="projects in the history"
    )


@dataclass(frozen=True)
class Figure:
    label: str
    fresh: float
    with_history: float


def print_comparison(title: str, unit: str, figures: list[Figure], higher_is_better: bool) -> bool:
    """A table of fresh vs with-history figures, their ratio (with history / fresh) and whether it is within
    ``TOLERANCE`` (else whether history made it slower or faster); True when every figure is within."""
    print(f"\n{title}: fresh vs with history (ratio = with history / fresh, within {TOLERANCE:.0%}?)")
    width = max([46, *(len(figure.label) for figure in figures)])
    print(f"{'':<{width}} {'fresh ' + unit:>14} {'history ' + unit:>14} {'ratio':>7}  within")
    all_within = True
    for figure in figures:
        ratio = figure.with_history / figure.fresh if figure.fresh else float("nan")
        within = abs(ratio - 1) <= TOLERANCE
        all_within &= within
        slower = ratio < 1 if higher_is_better else ratio > 1
        verdict = "yes" if within else f"NO ({'slower' if slower else 'faster'} with history)"
        print(
            f"{figure.label:<{width}} {figure.fresh:>14,.1f} {figure.with_history:>14,.1f} {ratio:>7.2f}  {verdict}"
        )
    return all_within
