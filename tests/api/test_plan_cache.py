"""The API's statements are planned for the table as it is when they run, not as it was when first run.

Postgres keeps a prepared statement's generic plan once five executions found it no worse than a custom
one. Planned on an empty table (a new database, or one a delete job emptied and vacuumed), that plan is a
sequential scan that costs nothing then, and it stays while the table grows to a million rows.
"""

from __future__ import annotations

import asyncpg
import httpx
from sqlalchemy import text

from services.annotation_api.db import make_engine
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import create_project

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
