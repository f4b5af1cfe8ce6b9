"""Scale-out: bulk prediction with 1, 2 and 4 gateway workers, the CPU each process kind spent, and what a
user reading at the same time waited.

Each run is the ``make run``-style process tree (``bench.harness.bench_stack``: the users' annotation API,
``--internal-apis`` more API processes the workers call, gateway API, N gateway workers, an instant fake
backend) on a database of its own: import ``--tasks`` tasks (each with an older prediction), connect the
backend (its ``max_concurrency`` set to ``--max-concurrency``), then
``retrieve_tasks_predictions`` until the job completes, while a reader fetches a task page, the project
and the job twice a second (``bench.bulk_ops.reader``). CPU seconds come from psutil: the bench's child
processes by kind, and the Postgres server's processes (the postmaster of the bench's connection and all
its children), each counted from its first sighting to the end of the job.

``--diagnose`` adds where a read waits: ``/health`` (the event loop alone), the API's CPU, Postgres
connections in use and lock waits. ``--internal-apis 0`` is the layout before issue 9 (one API for all).

    make bench-scale          # or: python -m devstack.exec -- python -m bench.scale_out --tasks 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import psutil

from bench.bulk_ops import quantiles, reader
from bench.harness import bench_stack
from bench.history import Stopwatch, check, project_with_predictions, wait_job

KINDS = ("API", "gateway", "workers", "Postgres")


def _kind(process: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error):
        command = " ".join(process.cmdline())
        if "services.annotation_api" in command:
            return "API"
        if "services.model_gateway.worker" in command:
            return "workers"
        if "services.model_gateway.main" in command:
            return "gateway"
    return None


def _cpu_seconds(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


@dataclass
class CpuMeter:
    """CPU seconds per process kind between ``start`` and ``stop``, sampled so that processes that appear
    later (uvicorn workers) or leave early still count from their first to their last sighting."""

    postmaster: psutil.Process
    first: dict[int, tuple[str, float]] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def _processes(self) -> Iterator[tuple[int, str, psutil.Process]]:
        for child in psutil.Process().children(recursive=True):
            kind = _kind(child)
            if kind is not None:
                yield child.pid, kind, child
        with contextlib.suppress(psutil.Error):
            yield self.postmaster.pid, "Postgres", self.postmaster
            for backend in self.postmaster.children(recursive=True):
                yield backend.pid, "Postgres", backend

    def sample(self) -> None:
        for pid, kind, process in self._processes():
            seconds = _cpu_seconds(process)
            if seconds is None:
                continue
            self.first.setdefault(pid, (kind, seconds))
            self.last[pid] = seconds

    async def run(self, interval_s: float = 0.5) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval_s)

    def by_kind(self) -> dict[str, float]:
        totals = dict.fromkeys(KINDS, 0.0)
        for pid, (kind, first) in self.first.items():
            totals[kind] += self.last[pid] - first
        return totals


@dataclass
class Diagnosis:
    """Where a slow read waits: ``/health`` (no database) measures the API's event loop; Postgres'
    activity on the bench database shows connections in use and lock waits."""

    health: list[float] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    lock_waits: list[int] = field(default_factory=list)
    api_cpu: list[float] = field(default_factory=list)

    async def run(self, api: httpx.AsyncClient, database_url: str, interval_s: float = 0.2) -> None:
        conn = await asyncpg.connect(database_url)
        api_processes = [p for p in psutil.Process().children(recursive=True) if _kind(p) == "API"]
        for process in api_processes:
            process.cpu_percent()
        try:
            while True:
                started = time.perf_counter()
                check(await api.get("/health"))
                self.health.append(time.perf_counter() - started)
                row = await conn.fetchrow(_ACTIVITY)
                assert row is not None
                self.connections.append(int(row[0]))
                self.active.append(int(row[1]))
                self.lock_waits.append(int(row[2]))
                self.api_cpu.append(sum(p.cpu_percent() for p in api_processes))
                await asyncio.sleep(interval_s)
        finally:
            await conn.close()

    def report(self) -> str:
        def spread(values: list[int] | list[float]) -> str:
            ordered = sorted(values)
            return f"p50 {ordered[len(ordered) // 2]:.0f}, max {ordered[-1]:.0f}" if ordered else "-"

        waiting = sum(1 for count in self.lock_waits if count) / max(1, len(self.lock_waits))
        return (
            f"{'':>10}/health (event loop only): {quantiles(self.health)}\n"
            f"{'':>10}API CPU %: {spread(self.api_cpu)}; DB connections: {spread(self.connections)}, "
            f"active: {spread(self.active)}, waiting on a lock: {spread(self.lock_waits)} "
            f"({waiting:.0%} of samples)"
        )


_ACTIVITY = """
    SELECT count(*), count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE wait_event_type = 'Lock')
    FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


async def _postmaster(database_url: str) -> psutil.Process:
    conn = await asyncpg.connect(database_url)
    try:  # the backend exits with its connection: ask for its parent while it is open
        parent = psutil.Process(int(await conn.fetchval("SELECT pg_backend_pid()"))).parent()
    finally:
        await conn.close()
    if parent is None:
        raise RuntimeError("the Postgres backend has no parent process")
    return parent


async def one_run(workers: int, args: argparse.Namespace) -> str:
    """One stack with ``workers`` gateway workers; the table row."""
    extra_env = {"LABELLOOP_LOG_LEVEL": "WARNING"}
    stack = bench_stack("bench_scale", workers, extra_env, internal_apis=args.internal_apis)
    async with stack as (bench, backend_url):
        api = bench.client
        project_id, _ = await project_with_predictions(api, backend_url, args.tasks, f"scale {workers}")
        backends = check(await api.get("/api/ml", params={"project": project_id})).json()
        check(await api.patch(f"/api/ml/{backends[0]['id']}", json={"max_concurrency": args.max_concurrency}))
        meter = CpuMeter(await _postmaster(bench.database_url))
        job: list[int] = []
        by_url: dict[str, list[float]] = {}
        async with reader(api, project_id, job, by_url) as latencies:
            meter.sample()
            sampling = asyncio.create_task(meter.run())
            diagnosis = Diagnosis()
            diagnosing = (
                asyncio.create_task(diagnosis.run(api, bench.database_url)) if args.diagnose else None
            )
            clock = Stopwatch()
            response = check(
                await api.post(
                    "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
                )
            )
            job.append(int(response.json()["job_id"]))
            elapsed = clock.until_finished(await wait_job(api, job[0]))
            for running in (sampling, diagnosing):
                if running is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            meter.sample()
        cpu = meter.by_kind()
        cells = " ".join(f"{cpu[kind]:>9.1f}" for kind in KINDS)
        per_task = sum(cpu.values()) / args.tasks * 1e6
        row = (
            f"{workers:>7} {args.tasks / elapsed:>9.0f} {cells} {per_task:>9.0f}   "
            f"{quantiles(latencies)} (load {os.getloadavg()[0]:.1f})"
        )
        if args.per_url:
            row += "".join(f"\n{'':>10}{url}: {quantiles(samples)}" for url, samples in by_url.items())
        if args.diagnose:
            row += "\n" + diagnosis.report()
        return row


async def main_async(args: argparse.Namespace) -> None:
    apis = f"a user API and {args.internal_apis} /internal API process(es)"
    apis = apis if args.internal_apis else "one API process for users and workers"
    print(
        f"scale-out: {args.tasks} tasks, {apis}, backend max_concurrency {args.max_concurrency}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    header = " ".join(f"{kind + ' s':>9}" for kind in KINDS)
    print(f"{'workers':>7} {'tasks/s':>9} {header} {'µs/task':>9}   reader during the job")
    for workers in args.workers:
        print(await one_run(workers, args), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="gateway worker counts")
    parser.add_argument("--max-concurrency", type=int, default=4, help="the ML backend's max_concurrency")
    parser.add_argument(
        "--diagnose", action="store_true", help="where reads wait: event loop, connections, lock waits"
    )
    parser.add_argument(
        "--internal-apis",
        type=int,
        default=1,
        help="API processes serving the workers' /internal calls besides the users' one (0: one API for "
        "all, as before issue 9; 1: as make run)",
    )
    parser.add_argument("--per-url", action="store_true", help="the reader's latency per URL too")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
