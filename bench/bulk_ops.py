"""Bulk operations on the ``make run``-style stack: time to answer and time to finish each bulk delete and
data manager action, and a concurrent reader's latency while bulk prediction, a large import and the large
deletes run (during the import and the deletes, the reader works on another, small project).

The same real processes (``bench.harness.stack``) as ``bench.bulk_predict`` (annotation API, gateway API,
gateway workers, an instant fake backend), its own database. For each size: import (timed), then
``retrieve_tasks_predictions`` with a reader polling the task page, the project and the job twice a second
(p50/p99/max), then deleting the imported predictions' model version, ``predictions_to_annotations``,
deleting the backend (its predictions stay), ``delete_tasks_predictions``, ``delete_tasks`` and deleting a
second project of the same size. ``--with-history`` first creates, predicts, re-predicts (a new version),
deletes the old version's predictions and deletes ``--history-projects`` projects of each size, the
afternoon of ordinary use that left tables bloated before delete jobs vacuumed.

    python -m devstack.exec -- python -m bench.bulk_ops --sizes 10000 [--with-history]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable

import httpx

from bench.harness import API_TOKEN, bench_database, stack
from bench.history import Stopwatch, action, check, history, project_with_predictions, timed, wait_job

_ONE_MILLION = 1_000_000


@contextlib.asynccontextmanager
async def reader(
    api: httpx.AsyncClient, project_id: int, job: list[int], by_url: dict[str, list[float]] | None = None
) -> AsyncIterator[list[float]]:
    """A user reading the task page, the project and the current job twice a second; yields the latencies
    (seconds, one per request) collected until the block ends (also per URL into ``by_url``).

    The reader has a thread, an event loop and a client of its own: the benchmark's own work (building a
    million-task body, say) would otherwise hold up the reader's loop and be counted as the API's latency."""
    latencies: list[float] = []
    stop = threading.Event()

    async def read() -> None:
        async with httpx.AsyncClient(base_url=api.base_url, headers=api.headers, timeout=600) as client:
            while not stop.is_set():
                tick = time.perf_counter()
                urls = [f"/api/tasks?project={project_id}&page_size=30", f"/api/projects/{project_id}"]
                if job:
                    urls.append(f"/api/jobs/{job[0]}")
                for url in urls:
                    started = time.perf_counter()
                    check(await client.get(url))
                    latencies.append(time.perf_counter() - started)
                    if by_url is not None:
                        by_url.setdefault(url.split("?")[0], []).append(latencies[-1])
                await asyncio.sleep(max(0.0, 0.5 - (time.perf_counter() - tick)))

    failures: list[Exception] = []

    def run() -> None:
        try:
            asyncio.run(read())
        except Exception as exc:  # a failed read fails the benchmark, once the block ends
            failures.append(exc)

    thread = threading.Thread(target=run, name="reader", daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    if failures:
        raise failures[0]


def quantiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return "too few reads"
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms ({len(latencies)} reads)"


async def reader_project(api: httpx.AsyncClient, backend_url: str) -> int:
    """A small project another user works on while the bulk work runs elsewhere."""
    project_id, _ = await project_with_predictions(api, backend_url, 100, "the reader's project")
    return project_id


async def delete_backend(api: httpx.AsyncClient, project_id: int) -> tuple[float, float, int]:
    """Delete the project's backend while its predictions exist: one request and no job, so it finishes
    when it answers; (seconds, seconds, 0) in ``timed``'s shape."""
    backends = check(await api.get("/api/ml", params={"project": project_id})).json()
    started = time.perf_counter()
    check(await api.delete(f"/api/ml/{backends[0]['id']}"))
    answered = time.perf_counter() - started
    return answered, answered, 0


async def measure(api: httpx.AsyncClient, backend_url: str, size: int, other: int) -> None:
    """``other``: the reader's project during the import and the deletes (the bulk work's own project
    during the prediction)."""
    async with reader(api, other, []) as during_import:
        project_id, imported_s = await project_with_predictions(api, backend_url, size, f"bench {size}")
    print(f"  import {size} tasks (+1 prediction each): {imported_s:.1f} s ({size / imported_s:.0f} tasks/s)")
    print(f"    reader (another project) during it: {quantiles(during_import)}")
    job: list[int] = []
    async with reader(api, project_id, job) as latencies:
        clock = Stopwatch()
        response = check(
            await api.post(
                "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
            )
        )
        answered = clock.elapsed()
        job.append(int(response.json()["job_id"]))
        finished = clock.until_finished(await wait_job(api, job[0]))
    print(
        f"  {'retrieve_tasks_predictions':<38} answer {answered * 1000:>7.0f} ms  finish {finished:>7.1f} s  ({size / finished:.0f} tasks/s)"
    )
    print(f"    reader during it: {quantiles(latencies)}")
    async with reader(api, project_id, []) as idle:
        await asyncio.sleep(3)
    print(f"    reader idle:      {quantiles(idle)}")
    version = (await api.get(f"/api/projects/{project_id}/model-versions")).json()
    current = next(name for name in version if name != "old")
    models_url = f"/api/projects/{project_id}/model-versions"
    steps: list[tuple[str, Awaitable[tuple[float, float, int]]]] = [
        ("DELETE model-versions (old)", timed(api, "DELETE", models_url, json={"model_version": "old"})),
        (
            "predictions_to_annotations",
            action(api, "predictions_to_annotations", project_id, {"model_version": current}),
        ),
        ("DELETE ml backend (predictions stay)", delete_backend(api, project_id)),
        ("delete_tasks_predictions (all)", action(api, "delete_tasks_predictions", project_id)),
        ("delete_tasks (all)", action(api, "delete_tasks", project_id)),
    ]
    for label, step in steps:
        async with reader(api, other, []) as during:
            answered, finished, _ = await step
        print(f"  {label:<38} answer {answered * 1000:>7.0f} ms  finish {finished:>7.1f} s")
        print(f"    reader (another project) during it: {quantiles(during)}")
    other_id, _ = await project_with_predictions(api, backend_url, size, f"bench {size} to delete")
    await action(api, "retrieve_tasks_predictions", other_id)
    async with reader(api, other, []) as during_delete:
        answered, finished, _ = await timed(api, "DELETE", f"/api/projects/{other_id}")
    print(
        f"  {'DELETE project (2 predictions/task)':<38} answer {answered * 1000:>7.0f} ms  finish {finished:>7.1f} s"
    )
    print(f"    reader (another project) during it: {quantiles(during_delete)}")


async def main_async(args: argparse.Namespace) -> None:
    if any(size >= _ONE_MILLION for size in args.sizes) and not args.allow_1m:
        raise SystemExit("1M tasks only with --allow-1m (a long run: not on a shared machine)")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    async with bench_database("bench_ops") as database_url:
        with stack(database_url, redis_url, args.workers, internal_apis=1) as (api_url, backend_url):
            headers = {"Authorization": f"Token {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=600) as api:
                mode = "with history" if args.with_history else "fresh"
                print(
                    f"bulk operations ({mode}), {args.workers} gateway workers, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
                )
                other = await reader_project(api, backend_url)
                for size in args.sizes:
                    if args.with_history:
                        started = time.perf_counter()
                        await history(api, backend_url, size, args.history_projects)
                        print(
                            f"  history: {args.history_projects} projects of {size} made, predicted twice, deleted in {time.perf_counter() - started:.0f} s"
                        )
                    print(f"{size} tasks:")
                    await measure(api, backend_url, size, other)
                print(f"load at the end {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    parser.add_argument("--with-history", action="store_true", help="create and delete large projects first")
    parser.add_argument("--history-projects", type=int, default=2, help="projects per size in the history")
    parser.add_argument("--allow-1m", action="store_true", help="allow sizes of a million tasks")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
