"""Task-page latency on a big project: median and p99 over N sequential requests per kind of page.

Builds one project with ``--tasks`` tasks (default 1M) and two predictions per task (model versions v1
and v2, random scores; the project shows v2) with set-based SQL, then times through the real API:
the first page, a deep page by keyset (``after=``) and by ``page=``, pages ordered by prediction score
(first pages, and a deep one by its keyset cursor),
``fields=all`` (annotations and predictions embedded) and a filtered page.

``--with-history`` measures fresh, builds history (``bench.history``, on the full stack of
``bench.bulk_predict``) on the same database, measures again (a new project) and compares.

    make bench-list                          # or: python -m bench.list_tasks --tasks 100000 --requests 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg

from bench.harness import LABEL_CONFIG, BenchApi, bench_api, bench_stack, cpu_seconds_by_tree, latencies
from bench.history import Figure, add_history_arguments, build_history, print_comparison

RESULT = (
    '[{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}]'
)


async def build(api: BenchApi, tasks: int) -> tuple[int, int, str]:
    """(project id, first task id, the score-order cursor at 90% depth): tasks, 2 predictions each and
    counters, in three statements."""
    response = await api.client.post(
        "/api/projects", json={"title": "list bench", "label_config": LABEL_CONFIG, "model_version": "v2"}
    )
    project_id = int(response.json()["id"])
    conn = await asyncpg.connect(api.database_url)
    try:
        await conn.execute(
            "INSERT INTO task (project_id, data, meta) "
            "SELECT $1, jsonb_build_object('text', 'review ' || g || ': arrived on time, works as described'), "
            "'{}' FROM generate_series(1, $2) AS g",
            project_id,
            tasks,
        )
        await conn.execute(
            "INSERT INTO prediction (task_id, project_id, result, score, model_version) "
            "SELECT t.id, $1, $2::jsonb, random(), m.version FROM task t "
            "CROSS JOIN (VALUES ('v1'), ('v2')) AS m(version) WHERE t.project_id = $1",
            project_id,
            RESULT,
        )
        await conn.execute(
            "UPDATE project SET task_number = $2, total_predictions_number = 2 * $2 WHERE id = $1",
            project_id,
            tasks,
        )
        await conn.execute("VACUUM ANALYZE task")
        await conn.execute("VACUUM ANALYZE prediction")
        first_id = int(await conn.fetchval("SELECT min(id) FROM task WHERE project_id = $1", project_id))
        # The score-order cursor of the task at 90% depth (one v2 prediction per task: its score is the key).
        deep = await conn.fetchrow(
            "SELECT score, task_id FROM prediction WHERE project_id = $1 AND model_version = 'v2' "
            "ORDER BY score, task_id OFFSET $2 LIMIT 1",
            project_id,
            int(tasks * 0.9) - 1,
        )
        assert deep is not None
        score_cursor = f"{float(deep[0])!r},{deep[1]}"
    finally:
        await conn.close()
    return project_id, first_id, score_cursor


async def measure(api: BenchApi, args: argparse.Namespace) -> tuple[dict[str, float], int]:
    """Build the project and time each kind of page, printed as it goes: (median ms per kind, project id)."""
    started = time.perf_counter()
    project_id, first_id, score_cursor = await build(api, args.tasks)
    print(
        f"built {args.tasks:,} tasks and {2 * args.tasks:,} predictions in {time.perf_counter() - started:.1f}s"
    )
    size = args.page_size
    deep = int(args.tasks * 0.9)
    base = {"project": project_id, "page_size": size}
    cases: dict[str, dict[str, str | int]] = {
        "first page": {},
        "first page, fields=all": {"fields": "all"},
        f"deep page, keyset after= (task #{deep:,})": {"after": first_id + deep - 1},
        f"deep page, page={deep // size + 1:,}": {"page": deep // size + 1},
        "by score, lowest first (uncertainty)": {"ordering": "prediction_score"},
        "by score, highest first": {"ordering": "-prediction_score"},
        "by score, page 10": {"ordering": "-prediction_score", "page": 10},
        f"by score, deep page, keyset after= (#{deep:,})": {
            "ordering": "prediction_score",
            "after": score_cursor,
        },
        "filtered: has_predictions_of=v1": {"has_predictions_of": "v1"},
        "filtered, keyset after= (no totals)": {"has_predictions_of": "v1", "after": first_id + deep - 1},
    }
    print(f"{args.requests} sequential requests each, page_size={size}")
    print(f"{'page':<46} {'median ms':>10} {'p99 ms':>10} {'API CPU ms':>11}")
    medians: dict[str, float] = {}
    for label, extra in cases.items():
        params = {**base, **extra}

        async def call(params: dict[str, str | int] = params) -> None:
            response = await api.client.get("/api/tasks", params=params)
            response.raise_for_status()
            assert len(response.json()["tasks"]) == size

        before = cpu_seconds_by_tree({"API": [api.pid]})["API"]
        median, p99 = await latencies(call, args.requests)
        cpu_ms = (cpu_seconds_by_tree({"API": [api.pid]})["API"] - before) * 1000 / (args.requests + 3)
        medians[label] = median
        print(f"{label:<46} {median:>10.1f} {p99:>10.1f} {cpu_ms:>11.1f}", flush=True)
    return medians, project_id


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per kind of page")
    parser.add_argument("--page-size", type=int, default=100)
    add_history_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (--with-history only)")
    args = parser.parse_args()
    if not args.with_history:
        async with bench_api("llbench_list") as api:
            await measure(api, args)
        return
    # History predicts through the gateway: the whole stack, for both passes alike (page size cap as bench_api).
    async with bench_stack("llbench_list", args.workers, {"LABELLOOP_MAX_PAGE_SIZE": "1000"}) as (
        api,
        backend,
    ):
        print(f"fresh database (load {os.getloadavg()[0]:.1f})")
        fresh, project_id = await measure(api, args)
        history_tasks = args.history_tasks or args.tasks
        await build_history(api.client, backend, history_tasks, args.history_projects, [project_id])
        print(f"with history (load {os.getloadavg()[0]:.1f})")
        with_history, _ = await measure(api, args)
        figures = [Figure(label, fresh[label], with_history[label]) for label in fresh]
        print_comparison("task page, median", "ms", figures, higher_is_better=False)


if __name__ == "__main__":
    asyncio.run(main())
