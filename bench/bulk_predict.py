"""Bulk prediction throughput: tasks/s from the data manager action to a finished job, against the same
backend called directly with the same batches.

Everything is a real process: the annotation API and the gateway API (uvicorn), N gateway workers
(``python -m services.model_gateway.worker``) and an instant fake ML backend
(``python -m tests.fakes.fake_backend``), on the Postgres/Redis of ``devstack.exec`` (embedded unless
DATABASE_URL / REDIS_URL are set). The benchmark uses its own database and drops it afterwards.

End to end = ``POST /api/dm/actions?id=retrieve_tasks_predictions`` until the job's ``finished_at`` (the job
followed on its event stream, as the console does: ``bench.history.wait_job``): chunking, queueing, leasing,
the gateway's batching/validation/version tagging, and every prediction stored in Postgres with counters.
Direct = the bench process posting the same ``/predict`` batches to the backend with the same concurrency
(the backend's ``max_concurrency``, which holds for all workers together) and decoding the answers, nothing
stored, right before the job and again right after it, each once the stack is quiet. The ceiling is the mean
of the two rates: this VM's speed moves by tens of percent within a minute, and a ceiling that brackets the
job follows it better than one pass (each pass's own ratio is printed too). The ratio says how close to
"limited by the backend" we are. The CPU of importing the tasks before the run and of deleting them after
it (``delete_tasks``, its VACUUM included) is printed too: import + predict + delete per task is the whole
life of a predicted task, printed for all processes and for labelloop's and Postgres only (without the
backend, which is the user's model: the measure issue 9 sets a goal for).

The stack is ``make run``'s layout: the users' API, ``--internal-apis`` API processes serving the workers'
``/internal`` calls, the gateway API and the workers. During each end-to-end run a reader fetches a task
page, the project and the job twice a second through the users' API (p50/p99/max), and the ``/internal``
lease and complete calls are timed by the API processes' own request histograms (``GET /metrics``, the
difference over the run; quantiles interpolated within a bucket, as Prometheus' ``histogram_quantile``).

``--with-history`` measures fresh, builds history (``bench.history``) on the same database, measures again
and compares.

    make bench-bulk          # or: python -m devstack.exec -- python -m bench.bulk_predict --sizes 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.bulk_ops import quantiles, reader
from bench.harness import (
    API_TOKEN,
    Memory,
    bench_database,
    cpu_seconds_by_tree,
    full_stack,
    make_texts,
    memory_by_tree,
    postgres_pid,
    reset_peaks_by_tree,
)
from bench.history import (
    Figure,
    Stopwatch,
    action,
    add_history_arguments,
    build_history,
    print_comparison,
    wait_job,
)
from tests.fakes.fake_backend import SENTIMENT_CONFIG

_NOT_OURS = ("backend", "Postgres")
"""Process kinds whose memory is not labelloop's: the fake backend, and Postgres (shared buffers sized
by its configuration, counted again in each backend's RSS)."""


def _check(response: httpx.Response) -> None:
    if response.status_code >= 300:
        request = response.request
        raise RuntimeError(f"{request.method} {request.url}: {response.status_code} {response.text[:500]}")


_INTERNAL_ROUTES = {
    "lease": "/internal/chunks/{chunk_id}/lease",
    "complete": "/internal/chunks/{chunk_id}/complete",
}
Buckets = dict[str, dict[float, float]]
"""Cumulative request counts per ``le`` bound, by route."""


async def internal_buckets(internal_urls: list[str]) -> Buckets:
    """The request-duration histogram of the ``/internal`` chunk routes, summed over the API processes."""
    summed: Buckets = {route: {} for route in _INTERNAL_ROUTES.values()}
    async with httpx.AsyncClient(timeout=30) as client:
        for url in internal_urls:
            text = (await client.get(f"{url}/metrics")).text
            for family in text_string_to_metric_families(text):
                if family.name != "labelloop_http_request_duration_seconds":
                    continue
                for sample in family.samples:
                    route = sample.labels.get("route", "")
                    if sample.name.endswith("_bucket") and route in summed:
                        bound = float(sample.labels["le"])
                        summed[route][bound] = summed[route].get(bound, 0.0) + sample.value
    return summed


def bucket_quantile(before: dict[float, float], after: dict[float, float], fraction: float) -> float | None:
    """The ``fraction`` quantile (seconds) of the requests counted between two scrapes, interpolated
    linearly within its bucket; None without requests."""
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = fraction * counts[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return lower_bound


def internal_latencies(before: Buckets, after: Buckets) -> str:
    parts = []
    for name, route in _INTERNAL_ROUTES.items():
        p50 = bucket_quantile(before[route], after[route], 0.5)
        p99 = bucket_quantile(before[route], after[route], 0.99)
        calls = after[route].get(float("inf"), 0.0) - before[route].get(float("inf"), 0.0)
        if p50 is None or p99 is None:
            parts.append(f"{name}: no calls")
        else:
            parts.append(f"{name} p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms ({calls:.0f} calls)")
    return "; ".join(parts)


@dataclass(frozen=True)
class Direct:
    """One pass of the direct calls: its rate, and the CPU the backend and the rest of the stack spent."""

    rate: float
    backend_us: float
    """The backend's CPU µs per task: the same answers as during the job, so a gauge of the machine's speed
    in each pass and in the job (where it also pays for sharing the cores with the busy stack)."""
    others_s: dict[str, float]
    """CPU seconds of labelloop's processes and Postgres meanwhile, by kind (not the bench's): their background
    work (autovacuum, sweeps) competes with the direct calls."""
    waited_s: float
    """How long the stack took to go quiet before the pass (before each, if there were several)."""
    passes: int
    """Passes made: the last one counts."""


@dataclass(frozen=True)
class EndToEnd:
    """One action-to-completed-job run as the users and the operators see it."""

    seconds: float
    cpu_s: dict[str, float]
    """CPU seconds per kind of process over the run."""
    import_cpu_s: dict[str, float]
    delete_cpu_s: dict[str, float]
    """CPU seconds per kind of process to import the tasks before the run, and to delete them after it."""
    memory: dict[str, tuple[Memory, Memory, Memory]]
    """RSS per kind of labelloop process: before the import, after the job (peak since the import's
    start), after the delete (peak since the import's start)."""
    direct: tuple[Direct, Direct]
    """The same batches sent straight to the backend right before the job, and right after it."""
    project: dict[str, Any]
    reader: str
    internal: str


async def end_to_end(
    api: httpx.AsyncClient,
    backend_url: str,
    size: int,
    batch_size: int,
    max_concurrency: int,
    pids: dict[str, list[int]],
    internal_urls: list[str],
) -> EndToEnd:
    created = await api.post(
        "/api/projects", json={"title": f"bulk {size}", "label_config": SENTIMENT_CONFIG}
    )
    _check(created)
    project: dict[str, Any] = created.json()
    texts = make_texts(size)
    ours = {kind: kind_pids for kind, kind_pids in pids.items() if kind not in _NOT_OURS}
    memory_start = memory_by_tree(ours)
    reset_peaks_by_tree(ours)
    cpu_start = cpu_seconds_by_tree(pids)
    imported = await api.post(
        f"/api/projects/{project['id']}/import",
        content=orjson.dumps(texts),
        params={"return_task_ids": "true"},
        headers={"Content-Type": "application/json"},
    )
    _check(imported)
    task_ids: list[int] = imported.json()["task_ids"]
    bodies = direct_bodies(
        project,
        [
            {"id": task_id, "data": text, "meta": {}, "project": project["id"]}
            for task_id, text in zip(task_ids, texts, strict=True)
        ],
        batch_size,
    )
    backend = await api.post(
        "/api/ml",
        json={
            "url": backend_url,
            "project": project["id"],
            "batch_size": batch_size,
            "max_concurrency": max_concurrency,
        },
    )
    _check(backend)
    cpu_imported = cpu_seconds_by_tree(pids)
    direct_before = await direct(backend_url, bodies, size, max_concurrency, pids)

    buckets_before = await internal_buckets(internal_urls)
    cpu_before = cpu_seconds_by_tree(pids)
    job_ids: list[int] = []
    async with reader(api, project["id"], job_ids) as read_latencies:
        clock = Stopwatch()
        response = await api.post(
            "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project["id"]}
        )
        _check(response)
        job_id = response.json()["job_id"]
        job_ids.append(job_id)
        job = await wait_job(api, job_id)
        elapsed = clock.until_finished(job)
    cpu_after = cpu_seconds_by_tree(pids)
    memory_after = memory_by_tree(ours)
    direct_after = await direct(backend_url, bodies, size, max_concurrency, pids)
    buckets_after = await internal_buckets(internal_urls)
    cpu = {kind: cpu_after[kind] - cpu_before[kind] for kind in pids}
    if job["status"] != "completed" or job["done"] != size:
        raise RuntimeError(f"job did not complete cleanly: {job}")
    stored = (await api.get(f"/api/projects/{project['id']}")).json()["total_predictions_number"]
    if stored != size:
        raise RuntimeError(f"{stored} predictions stored for {size} tasks")
    cpu_delete_start = cpu_seconds_by_tree(pids)
    await action(api, "delete_tasks", project["id"])
    cpu_deleted = cpu_seconds_by_tree(pids)
    memory_deleted = memory_by_tree(ours)
    return EndToEnd(
        elapsed,
        cpu,
        {kind: cpu_imported[kind] - cpu_start[kind] for kind in pids},
        {kind: cpu_deleted[kind] - cpu_delete_start[kind] for kind in pids},
        {kind: (memory_start[kind], memory_after[kind], memory_deleted[kind]) for kind in ours},
        (direct_before, direct_after),
        project,
        quantiles(read_latencies),
        internal_latencies(buckets_before, buckets_after),
    )


_DIRECT_ATTEMPTS = 3
_BACKGROUND_SHARE = 0.04
"""A direct pass counts once the stack's own work used less than this share of the cores meanwhile."""


def direct_bodies(project: dict[str, Any], tasks: list[dict[str, Any]], batch_size: int) -> list[bytes]:
    """The ``/predict`` bodies of the job's batches, as the backend gets them, encoded once for every pass."""
    created = int(time.time())
    batches = [tasks[start : start + batch_size] for start in range(0, len(tasks), batch_size)]
    return [
        orjson.dumps(
            {
                "tasks": batch,
                "project": f"{project['id']}.{created}",
                "label_config": SENTIMENT_CONFIG,
                "params": {"login": None, "password": None, "context": None},
            }
        )
        for batch in batches
    ]


async def direct(
    backend_url: str, bodies: list[bytes], size: int, concurrency: int, pids: dict[str, list[int]]
) -> Direct:
    """Send the batches straight to the backend and decode every answer, once the stack is quiet; again
    (``_DIRECT_ATTEMPTS`` passes at most) while the stack's background work competed with the pass."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=backend_url, limits=limits, timeout=100) as client:

        async def drain(queue: asyncio.Queue[bytes]) -> None:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post(
                    "/predict", content=body, headers={"Content-Type": "application/json"}
                )
                response.raise_for_status()
                orjson.loads(response.content)

        waited, passes, competed = 0.0, 0, True
        while competed and passes < _DIRECT_ATTEMPTS:
            passes += 1
            waited += await quiet(pids)
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for body in bodies:
                queue.put_nowait(body)
            cpu_before = cpu_seconds_by_tree(pids)
            started = time.perf_counter()
            await asyncio.gather(*(drain(queue) for _ in range(concurrency)))
            seconds = time.perf_counter() - started
            cpu = cpu_seconds_by_tree(pids)
            spent = {kind: cpu[kind] - cpu_before[kind] for kind in pids}
            backend_s = spent.pop("backend")
            # Autovacuum of a job's new rows may start during the pass: measure it again, not a lower ceiling.
            competed = sum(spent.values()) >= _BACKGROUND_SHARE * seconds * (os.cpu_count() or 1)
    return Direct(size / seconds, backend_s / size * 1e6, spent, waited, passes)


def busiest(cpu_s: dict[str, float]) -> str:
    """CPU seconds in all, and the kind of process that spent most of them."""
    kind = max(cpu_s, key=cpu_s.__getitem__)
    return f"{sum(cpu_s.values()):.2f} s ({kind} {cpu_s[kind]:.2f})"


async def quiet(pids: dict[str, list[int]], busy_share: float = 0.05, limit_s: float = 120.0) -> float:
    """Wait until the stack's processes use less than ``busy_share`` of one core over half a second (after a
    job, Postgres' autovacuum of the new rows would compete with the direct calls and lower the ceiling);
    returns the seconds waited, ``limit_s`` at most."""
    started = time.perf_counter()
    window = 0.5
    while time.perf_counter() - started < limit_s:
        before = sum(cpu_seconds_by_tree(pids).values())
        await asyncio.sleep(window)
        if sum(cpu_seconds_by_tree(pids).values()) - before < busy_share * window:
            break
    return time.perf_counter() - started


@dataclass(frozen=True)
class Run:
    """One end-to-end run: tasks/s, the same run's ratio to the direct calls, CPU µs per task by kind."""

    rate: float
    ratio: float
    cpu_us: dict[str, float]


async def measure(
    api: httpx.AsyncClient,
    backend_url: str,
    args: argparse.Namespace,
    pids: dict[str, list[int]],
    internal_urls: list[str],
) -> tuple[dict[int, Run], list[int]]:
    """One pass over ``args.sizes``, each ``args.repeat`` times, printed as it goes: (the fastest run per
    size, the projects made). The fastest, because on a shared machine the others measure the neighbours."""
    kinds = list(pids)
    print(
        f"{'tasks':>8} {'end to end':>14} {'direct':>14} {'ratio':>7}   CPU µs per task: "
        + " ".join(f"{kind:>8}" for kind in [*kinds, "all"])
    )
    best: dict[int, Run] = {}
    projects: list[int] = []
    for size in args.sizes:
        for _ in range(args.repeat):
            run_e2e = await end_to_end(
                api, backend_url, size, args.batch_size, args.max_concurrency, pids, internal_urls
            )
            projects.append(int(run_e2e.project["id"]))
            before, after = run_e2e.direct
            # The ceiling brackets the job: the mean of the direct rates right before and right after it.
            e2e_rate, direct_rate = size / run_e2e.seconds, (before.rate + after.rate) / 2
            per_task = {kind: run_e2e.cpu_s[kind] / size * 1e6 for kind in kinds}
            per_task["all"] = sum(per_task.values())
            run = Run(e2e_rate, e2e_rate / direct_rate, per_task)
            if size not in best or run.rate > best[size].rate:
                best[size] = run
            print(
                f"{size:>8} {e2e_rate:>10.0f} t/s {direct_rate:>10.0f} t/s {run.ratio:>7.2f}   "
                f"{'':>17}" + " ".join(f"{value:>8.0f}" for value in per_task.values()),
                flush=True,
            )
            for phase, phase_cpu in (("import", run_e2e.import_cpu_s), ("delete", run_e2e.delete_cpu_s)):
                phase_us = {kind: seconds / size * 1e6 for kind, seconds in phase_cpu.items()}
                print(
                    f"{'':>9}{phase:<7} CPU µs per task: all {sum(phase_us.values()):.0f} ("
                    + ", ".join(f"{kind} {value:.0f}" for kind, value in phase_us.items())
                    + ")",
                    flush=True,
                )
            lifecycle = (sum(run_e2e.import_cpu_s.values()) + sum(run_e2e.delete_cpu_s.values())) / size * 1e6
            backend_us = (
                (run_e2e.cpu_s["backend"] + run_e2e.import_cpu_s["backend"] + run_e2e.delete_cpu_s["backend"])
                / size
                * 1e6
            )
            print(
                f"{'':>9}import + predict + delete, all processes: {lifecycle + per_task['all']:.0f} µs per task; "
                f"labelloop and Postgres (issue 9's row, the backend's {backend_us:.0f} apart): "
                f"{lifecycle + per_task['all'] - backend_us:.0f}",
                flush=True,
            )
            print(
                f"{'':>9}RSS MB before / after the job / after the delete (peak since the import): "
                + ", ".join(
                    f"{kind} {start.now:.0f} / {job.now:.0f} ({job.peak:.0f}) / {deleted.now:.0f} ({deleted.peak:.0f})"
                    for kind, (start, job, deleted) in run_e2e.memory.items()
                ),
                flush=True,
            )
            # The same answers cost the backend the same work: a gap between the passes is the machine's
            # speed moving, which moves the ratio with it.
            print(
                f"{'':>9}direct calls before / after the job: {before.rate:.0f} / {after.rate:.0f} t/s "
                f"(ratio to each: {e2e_rate / before.rate:.2f} / {e2e_rate / after.rate:.2f}); "
                f"the backend's CPU µs per task: {before.backend_us:.1f} / {after.backend_us:.1f}, "
                f"{per_task['backend']:.1f} during the job; the stack's CPU meanwhile: "
                f"{busiest(before.others_s)} / {busiest(after.others_s)} (quiet after {before.waited_s:.1f} / "
                f"{after.waited_s:.1f} s; passes {before.passes} / {after.passes})",
                flush=True,
            )
            print(f"{'':>9}reader during the job: {run_e2e.reader}", flush=True)
            print(f"{'':>9}/internal calls: {run_e2e.internal}", flush=True)
    return best, projects


async def main_async(args: argparse.Namespace) -> None:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    async with bench_database("bench_bulk") as database_url:
        with full_stack(database_url, redis_url, args.workers, internal_apis=args.internal_apis) as running:
            backend_url = running.backend_url
            pids = {**running.pids, "Postgres": [await postgres_pid(database_url)]}
            headers = {"Authorization": f"Token {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=running.api_url, headers=headers, timeout=600) as api:
                print(
                    f"bulk prediction: {args.workers} gateway workers, batch {args.batch_size}, "
                    f"{args.max_concurrency} concurrent calls to the backend (its max_concurrency, shared by "
                    "the workers; the direct calls use as many), "
                    f"{args.internal_apis} /internal API process(es), {os.cpu_count()} CPUs, "
                    f"load {os.getloadavg()[0]:.1f}"
                )
                if not args.with_history:
                    await measure(api, backend_url, args, pids, running.internal_urls)
                    return
                print(f"fresh database (load {os.getloadavg()[0]:.1f})")
                fresh, projects = await measure(api, backend_url, args, pids, running.internal_urls)
                history_tasks = args.history_tasks or max(args.sizes)
                await build_history(api, backend_url, history_tasks, args.history_projects, projects)
                print(f"with history (load {os.getloadavg()[0]:.1f})")
                with_history, _ = await measure(api, backend_url, args, pids, running.internal_urls)
                print_comparison(
                    "bulk prediction, fastest run",
                    "t/s",
                    [
                        Figure(f"{size:,} tasks, end to end", fresh[size].rate, with_history[size].rate)
                        for size in args.sizes
                    ],
                    higher_is_better=True,
                )
                print_comparison(
                    "bulk prediction, the same run's end to end / direct (the load hits both alike)",
                    "% of direct",
                    [
                        Figure(
                            f"{size:,} tasks, end to end / direct",
                            fresh[size].ratio * 100,
                            with_history[size].ratio * 100,
                        )
                        for size in args.sizes
                    ],
                    higher_is_better=True,
                )
                print_comparison(
                    "bulk prediction, CPU per task",
                    "µs",
                    [
                        Figure(
                            f"{size:,} tasks, {kind}",
                            fresh[size].cpu_us[kind],
                            with_history[size].cpu_us[kind],
                        )
                        for size in args.sizes
                        for kind in ("Postgres", "all")
                    ],
                    higher_is_better=False,
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    parser.add_argument("--batch-size", type=int, default=100, help="tasks per /predict call")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=4,
        help="the backend's max_concurrency: concurrent calls of all workers together, and of the direct calls",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per size and pass; the fastest counts")
    parser.add_argument(
        "--internal-apis",
        type=int,
        default=1,
        help="API processes serving the workers' /internal calls (make run: 1; 0 = the users' API serves them)",
    )
    add_history_arguments(parser)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
