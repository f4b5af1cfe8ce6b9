"""Import throughput: tasks/s through ``POST /api/projects/{id}/import`` against a raw asyncpg COPY.

One request per size (default 10k and 100k small text tasks), timed at the client, body pre-encoded.
The ceiling writes the same rows with ``copy_records_to_table`` straight into the same database (data
already serialised, no validation, no HTTP), so the ratio shows what the API adds on top of the disk.

``--with-history`` measures fresh, builds history (``bench.history``, on the full stack of
``bench.bulk_predict``) on the same database, measures again and compares.

    make bench-import                      # or: python -m bench.import_tasks --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import asyncpg
import orjson

from bench.harness import LABEL_CONFIG, BenchApi, bench_api, bench_stack
from bench.history import Figure, add_history_arguments, build_history, print_comparison


def make_tasks(count: int, predictions: bool) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for i in range(count):
        data = {"text": f"review number {i}: the product arrived on time and works as described"}
        if predictions:
            result = [
                {
                    "from_name": "sentiment",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["positive" if i % 2 else "negative"]},
                }
            ]
            tasks.append(
                {
                    "data": data,
                    "predictions": [{"result": result, "score": (i % 100) / 100, "model_version": "v1"}],
                }
            )
        else:
            tasks.append(data)
    return tasks


async def through_api(api: BenchApi, tasks: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(client wall seconds, server-reported seconds, project id) for one import request."""
    project = (
        await api.client.post("/api/projects", json={"title": "bench", "label_config": LABEL_CONFIG})
    ).json()
    body = orjson.dumps(tasks)
    started = time.perf_counter()
    response = await api.client.post(
        f"/api/projects/{project['id']}/import", content=body, headers={"Content-Type": "application/json"}
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    assert response.json()["task_count"] == len(tasks)
    return elapsed, float(response.json()["duration"]), int(project["id"])


async def raw_copy(api: BenchApi, tasks: list[dict[str, Any]]) -> tuple[float, int]:
    """(seconds to COPY the same task (and prediction) rows, pre-serialised, in one transaction, project id)."""
    project = (
        await api.client.post("/api/projects", json={"title": "ceiling", "label_config": LABEL_CONFIG})
    ).json()
    pid = project["id"]
    conn = await asyncpg.connect(api.database_url)
    try:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda s: b"\x01" + s.encode(),
            decoder=bytes,
            schema="pg_catalog",
            format="binary",
        )
        ids = await conn.fetchval(
            "SELECT array_agg(nextval('task_id_seq')) FROM generate_series(1, $1)", len(tasks)
        )
        task_rows = [
            (task_id, pid, orjson.dumps(task.get("data", task)).decode())
            for task_id, task in zip(ids, tasks, strict=True)
        ]
        prediction_rows = [
            (
                task_id,
                pid,
                orjson.dumps(p["result"]).decode(),
                p.get("score"),
                p.get("model_version", "undefined"),
            )
            for task_id, task in zip(ids, tasks, strict=True)
            for p in task.get("predictions", [])
        ]
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("task", columns=("id", "project_id", "data"), records=task_rows)
            if prediction_rows:
                await conn.copy_records_to_table(
                    "prediction",
                    columns=("task_id", "project_id", "result", "score", "model_version"),
                    records=prediction_rows,
                )
        return time.perf_counter() - started, int(pid)
    finally:
        await conn.close()


async def measure(
    api: BenchApi, args: argparse.Namespace
) -> tuple[dict[int, tuple[float, float]], list[int]]:
    """One pass over ``args.sizes``, each ``args.repeat`` times, printed as it goes: ((API, COPY) tasks/s per
    size, the fastest of the repeats of each, the projects made)."""
    print(
        f"{'tasks':>8} {'body MB':>8} {'API s':>8} {'API tasks/s':>12} {'server s':>9} {'COPY s':>8} "
        f"{'COPY tasks/s':>13} {'API/COPY':>9}"
    )
    rates: dict[int, tuple[float, float]] = {}
    projects: list[int] = []
    for size in args.sizes:
        tasks = make_tasks(size, args.predictions)
        megabytes = len(orjson.dumps(tasks)) / 1e6
        for _ in range(args.repeat):
            api_s, server_s, api_project = await through_api(api, tasks)
            copy_s, copy_project = await raw_copy(api, tasks)
            projects += [api_project, copy_project]
            best_api, best_copy = rates.get(size, (0.0, 0.0))
            rates[size] = (max(best_api, size / api_s), max(best_copy, size / copy_s))
            print(
                f"{size:>8} {megabytes:>8.1f} {api_s:>8.2f} {size / api_s:>12,.0f} {server_s:>9.2f} "
                f"{copy_s:>8.2f} {size / copy_s:>13,.0f} {api_s / copy_s:>8.1f}x",
                flush=True,
            )
    return rates, projects


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--predictions", action="store_true", help="one inline prediction per task")
    parser.add_argument("--repeat", type=int, default=1, help="imports per size and pass; the fastest counts")
    add_history_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (--with-history only)")
    args = parser.parse_args()
    kind = "with" if args.predictions else "without"
    if not args.with_history:
        async with bench_api("llbench_import") as api:
            print(f"import benchmark ({kind} inline predictions)")
            await measure(api, args)
        return
    # History predicts through the gateway: the whole stack, for both passes alike.
    async with bench_stack("llbench_import", args.workers) as (api, backend_url):
        print(f"import benchmark ({kind} inline predictions), fresh database (load {os.getloadavg()[0]:.1f})")
        fresh, projects = await measure(api, args)
        history_tasks = args.history_tasks or max(args.sizes)
        await build_history(api.client, backend_url, history_tasks, args.history_projects, projects)
        print(f"import benchmark ({kind} inline predictions), with history (load {os.getloadavg()[0]:.1f})")
        with_history, _ = await measure(api, args)
        figures = [
            Figure(f"{size:,} tasks, {label}", fresh[size][i], with_history[size][i])
            for size in args.sizes
            for i, label in enumerate(("API", "COPY ceiling"))
        ]
        print_comparison(f"import ({kind} inline predictions)", "tasks/s", figures, higher_is_better=True)


if __name__ == "__main__":
    asyncio.run(main())
