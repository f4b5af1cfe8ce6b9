"""The API's statements are planned for the table as it is when they run, not as it was when first run.

Postgres keeps a prepared statement's generic plan once five executions found it no worse than a custom
one. Planned on an empty table (a new database, or one a delete job emptied and vacuumed), that plan is a
sequential scan that costs nothing then, and it stays while the table grows to a million rows. The
transactions that write rows by the thousand let foreign keys keep their per-row plans
(``db.keep_index_plans``), which must then be index lookups whatever the table held when they were made.
"""

from __future__ import annotations

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.data_manager.jobs import delete_task_batch
from services.annotation_api.db import make_engine
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import create_project
from tests.support.databases import insert_tasks

_BY_IDS = text("SELECT id FROM task WHERE id = ANY(CAST(:ids AS bigint[]))")
ROWS = 20_000


async def test_a_statement_run_while_its_table_was_empty_is_planned_again_once_it_holds_rows(
    database_url: str, db: asyncpg.Connection, api: httpx.AsyncClient
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    await db.execute("ALTER TABLE task SET (autovacuum_enabled = false)")
    await db.execute("VACUUM ANALYZE task")  # no rows, no pages: a sequential scan costs nothing
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            for _ in range(10):  # past the five executions after which a generic plan may be kept
                await conn.execute(_BY_IDS, {"ids": [1, 2, 3]})
            await conn.rollback()

            await db.execute(
                "INSERT INTO task (project_id, data) SELECT $1, '{}' FROM generate_series(1, $2)",
                project["id"],
                ROWS,
            )
            wanted = [int(row[0]) for row in await db.fetch("SELECT id FROM task ORDER BY id LIMIT 3")]

            found = (await conn.execute(_BY_IDS, {"ids": wanted})).scalars().all()
            read = await conn.execute(
                text("SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'task'")
            )
            assert sorted(found) == wanted
            assert read.scalar_one() == 0, "the statement scanned the whole table with its old plan"
            await conn.rollback()
    finally:
        await engine.dispose()


async def test_task_deletes_planned_while_predictions_were_empty_find_them_by_index_once_they_exist(
    database_url: str, db: asyncpg.Connection, api: httpx.AsyncClient
) -> None:
    """Each deleted task's predictions go by a cascade, one query per task, whose plan a bulk delete keeps.
    Made while ``prediction`` was empty, it must still look them up by the task index, not scan the table
    once per task deleted."""
    project = await create_project(api, SENTIMENT_CONFIG)
    await db.execute("ALTER TABLE prediction SET (autovacuum_enabled = false)")
    await db.execute("VACUUM ANALYZE prediction")  # no rows, no pages: a sequential scan costs nothing
    task_ids = await insert_tasks(db, project["id"], ROWS)
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            for task_id in task_ids[:10]:  # past the five executions after which a generic plan may be kept
                await delete_task_batch(AsyncSession(bind=conn), project["id"], [task_id])
                await conn.rollback()

            await db.execute(
                "INSERT INTO prediction (task_id, project_id, result, model_version)"
                " SELECT id, $2, '[]', 'v1' FROM unnest($1::bigint[]) AS id",
                task_ids,
                project["id"],
            )
            batch = task_ids[:10]

            deleted = await delete_task_batch(AsyncSession(bind=conn), project["id"], batch)
            read = await conn.execute(
                text("SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'prediction'")
            )
            left = await conn.execute(
                text("SELECT count(*) FROM prediction WHERE task_id = ANY(CAST(:ids AS bigint[]))"),
                {"ids": batch},
            )
            assert deleted == len(batch)
            assert left.scalar_one() == 0
            assert read.scalar_one() == 0, (
                "the cascade scanned the whole table with a plan made when it was empty"
            )
            await conn.rollback()
    finally:
        await engine.dispose()
