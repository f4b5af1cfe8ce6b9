"""What each index of the prediction table, and each way of checking its task, costs per stored prediction.

Every bulk-predicted task stores one prediction, so each index and check of the table is paid once per task
(models.py, ``Prediction``). This runs a chunk report's own statements (``jobs/repository.py``:
``lock_tasks``, then ``insert_predictions``) over ``--tasks`` tasks in chunks of ``--chunk``, and prints the
CPU the Postgres server spent per stored prediction (its process tree in ``/proc``), for the schema as
migrated and for each variant beside it, alternated ``--rounds`` times so that the machine's drift hits
every variant alike. Nothing else runs; the database is the benchmark's own and is dropped afterwards.

    python -m devstack.exec -- python -m bench.prediction_insert
"""

from __future__ import annotations

import argparse
import asyncio
import os

import asyncpg
import orjson

from bench.harness import bench_database, cpu_seconds_of_tree, postgres_pid
from services.annotation_api.jobs.repository import insert_predictions, lock_tasks
from services.annotation_api.jobs.schemas import ReportedRows
from shared.settings import plain_postgres_url
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import choice

Variant = tuple[str, str, str]
"""(name, the statement that makes it from the migrated schema, the statement that undoes it)."""


async def variants(conn: asyncpg.Connection) -> list[Variant]:
    # The statement trigger, as migrated, to drop and make again around the per-row key's variant.
    trigger = await conn.fetchval(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'prediction_task_inserted'"
    )
    return [
        ("as migrated", "", ""),
        (
            "+ an index on ml_backend_id (before 0010)",
            "CREATE INDEX bench_prediction_backend ON prediction (ml_backend_id)",
            "DROP INDEX bench_prediction_backend",
        ),
        (
            "+ the per-row key to task (before 0012)",
            "DROP TRIGGER prediction_task_inserted ON prediction; "
            "ALTER TABLE prediction ADD CONSTRAINT fk_prediction_task_id_task "
            "FOREIGN KEY (task_id) REFERENCES task (id) ON DELETE CASCADE",
            f"ALTER TABLE prediction DROP CONSTRAINT fk_prediction_task_id_task; {trigger}",
        ),
        (
            "- any check of the task (no key or trigger)",
            "DROP TRIGGER prediction_task_inserted ON prediction",
            trigger,
        ),
    ]


async def store_all(
    conn: asyncpg.Connection, server_pid: int, project_id: int, task_ids: list[int], chunk: int
) -> float:
    """Postgres CPU µs per prediction to store one for every task, chunk by chunk as reports do: the whole
    server's process tree, so the WAL writer, checkpointer and any parallel workers the statements keep busy
    count too (in these runs the backend's own was within 0.2 µs of it)."""
    await conn.execute("TRUNCATE prediction")
    result = orjson.dumps(choice("Positive")).decode()
    reports = [
        ReportedRows(ids, [result] * len(ids), [0.5] * len(ids), ["v1"] * len(ids))
        for ids in (task_ids[start : start + chunk] for start in range(0, len(task_ids), chunk))
    ]
    started = cpu_seconds_of_tree(server_pid)
    for report in reports:
        ids = report.task_ids
        async with conn.transaction():
            await lock_tasks(conn, ids)
            await insert_predictions(
                conn, project_id=project_id, backend_id=1, job_id=1, chunk_task_ids=ids, predictions=report
            )
    return (cpu_seconds_of_tree(server_pid) - started) / len(task_ids) * 1e6


async def main_async(args: argparse.Namespace) -> None:
    async with bench_database("bench_prediction_insert") as url:
        conn = await asyncpg.connect(plain_postgres_url(url))
        try:
            server_pid = await postgres_pid(url)
            organization = await conn.fetchval(
                "INSERT INTO organization (title) VALUES ('bench') RETURNING id"
            )
            project_id = await conn.fetchval(
                "INSERT INTO project (title, label_config, organization_id) VALUES ('bench', $1, $2) RETURNING id",
                SENTIMENT_CONFIG,
                organization,
            )
            task_ids = [
                row[0]
                for row in await conn.fetch(
                    "INSERT INTO task (project_id, data) SELECT $1, jsonb_build_object('text', 'text ' || n) "
                    "FROM generate_series(1, $2) AS n RETURNING id",
                    project_id,
                    args.tasks,
                )
            ]
            await conn.execute("VACUUM ANALYZE task")
            await store_all(conn, server_pid, project_id, task_ids, args.chunk)  # warm the caches
            print(
                f"{args.tasks} predictions in chunks of {args.chunk}, {args.rounds} rounds alternated, "
                f"load {os.getloadavg()[0]:.1f}; Postgres CPU µs per stored prediction:"
            )
            figures: dict[str, list[float]] = {}
            all_variants = await variants(conn)
            for _ in range(args.rounds):
                for name, make, undo in all_variants:
                    if make:
                        await conn.execute(make)
                    figures.setdefault(name, []).append(
                        await store_all(conn, server_pid, project_id, task_ids, args.chunk)
                    )
                    await conn.execute("TRUNCATE prediction")
                    if undo:
                        await conn.execute(undo)
            baseline = figures["as migrated"]
            for name, values in figures.items():
                change = sum(v - b for v, b in zip(values, baseline, strict=True)) / len(values)
                print(
                    f"  {name:<44} "
                    + " ".join(f"{v:5.1f}" for v in values)
                    + f"   ({change:+.1f} on average)"
                )
        finally:
            await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000, help="tasks per report, as LABELLOOP_CHUNK_SIZE")
    parser.add_argument("--rounds", type=int, default=4)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
