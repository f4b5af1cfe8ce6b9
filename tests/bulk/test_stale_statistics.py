"""Chunk statements read only their chunk's rows, whatever the planner's statistics say (issue 12).

After big deletes, the statistics describe projects and backends that are gone: a new backend's
predictions look like one row. With the backend or project next to the task ids in one scan, the planner
then read every prediction of the backend for each task of each chunk (quadratic in the job's size). The
statistics here are taken before the measured project and backend existed, as after a history of deletes;
each chunk statement's plan (EXPLAIN ANALYZE, rolled back) must read no more rows than the chunk has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from services.annotation_api.data_manager.jobs import _DELETE_TASKS, delete_prediction_batch
from services.annotation_api.data_manager.selection import TaskSelection
from services.annotation_api.db import (
    PLAN_EACH_EXECUTION,
    make_engine,
    raw_connection,
)
from services.annotation_api.jobs import repository as repo
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts
from tests.support.databases import insert_tasks
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 2000
CHUNK = 10


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    yield engine
    await engine.dispose()


async def _predict_all(db: asyncpg.Connection, task_ids: list[int], project_id: int, backend_id: int) -> None:
    """One prediction of version v1 from this backend on every task, straight into the table."""
    await db.execute(
        """
        INSERT INTO prediction (task_id, project_id, result, score, model_version, ml_backend_id)
        SELECT id, $2, '[]', 0.5, 'v1', $3 FROM unnest($1::bigint[]) AS id
        """,
        task_ids,
        project_id,
        backend_id,
    )


def _scanned(node: dict[str, Any], relation: str) -> float:
    """Rows the plan read from ``relation``: returned plus filtered out, over every loop."""
    total = 0.0
    if node.get("Relation Name") == relation and node["Node Type"] != "ModifyTable":
        loops = node["Actual Loops"]
        total += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
    for child in node.get("Plans", ()):
        total += _scanned(child, relation)
    return total


async def _rows_read(conn: AsyncConnection, table: str) -> tuple[int, int]:
    """Rows this transaction read from ``table``: by sequential scans, and fetched by index scans."""
    read = await conn.execute(
        text("SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = :table"),
        {"table": table},
    )
    seq_read, fetched = read.one()
    return int(seq_read), int(fetched)


async def _plan(engine: AsyncEngine, statement: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """The statement's executed plan, in a transaction rolled back afterwards."""
    async with engine.connect() as conn:
        raw = await raw_connection(conn)
        transaction = raw.transaction()
        await transaction.start()
        try:
            explained = await raw.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *args)
        finally:
            await transaction.rollback()
    plan: dict[str, Any] = explained[0]["Plan"]  # SQLAlchemy's connections decode json
    return plan


def _chunk_statements(
    chunk: list[int], project_id: int, backend_id: int
) -> Iterator[tuple[str, str, tuple[Any, ...]]]:
    ids = repo.number_list(chunk)
    yield "tasks_to_predict", repo._TASKS_TO_PREDICT, (ids, backend_id, "v2")
    yield "count_skipped", repo._COUNT_SKIPPED, (chunk, [], backend_id, "v2")
    yield "lock_tasks", repo._LOCK_TASKS, (ids,)
    (region,) = choice("Positive")
    yield (
        "insert_predictions",
        repo._INSERT_PREDICTIONS,
        (
            ids,
            project_id,
            backend_id,
            None,
            ids,
            repo.RESULT_SEPARATOR.join([orjson.dumps([region]).decode()] * len(chunk)),
            repo.number_list([0.5] * len(chunk)),
            None,  # the chunk's one version, as the next argument
            "v2",
        ),
    )


async def test_chunk_statements_read_only_the_chunk_when_statistics_predate_the_project(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
    engine: AsyncEngine,
) -> None:
    # Autovacuum must not refresh the statistics behind the test's back.
    for table in ("task", "prediction"):
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    earlier = await create_project(api, SENTIMENT_CONFIG, title="earlier")
    earlier_backend = await connect_backend(api, earlier["id"], fake.url)
    await _predict_all(
        db, await import_texts(api, earlier["id"], TASKS), earlier["id"], earlier_backend["id"]
    )
    await db.execute("ANALYZE task, prediction")

    backend = await connect_backend(api, project["id"], fake.url)
    task_ids = await import_texts(api, project["id"], TASKS)
    await _predict_all(db, task_ids, project["id"], backend["id"])
    chunk = task_ids[-CHUNK:]

    for name, statement, args in _chunk_statements(chunk, project["id"], backend["id"]):
        plan = await _plan(engine, statement, args)
        # Each chunk task has one prediction of this backend; a plan driven by the backend reads all 2000.
        assert _scanned(plan, "prediction") <= CHUNK, (name, plan)
        assert _scanned(plan, "task") <= CHUNK, (name, plan)


async def test_chunk_statements_planned_on_an_empty_table_still_use_its_indexes_once_it_grows(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
    engine: AsyncEngine,
) -> None:
    """A delete job empties and vacuums ``prediction``: a plan made then sees a table of no pages, where a
    sequential scan costs nothing. A cached (generic) plan is kept as the table grows, so each chunk read the
    whole table. The chunk transaction's settings must keep index lookups even in such a plan."""
    for table in ("task", "prediction"):
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await db.execute("VACUUM ANALYZE prediction")  # empty: no pages, as after a delete job
    backend = await connect_backend(api, project["id"], fake.url)
    task_ids = await import_texts(api, project["id"], TASKS)
    chunk = task_ids[-CHUNK:]

    async with engine.connect() as conn:
        transaction = await conn.begin()
        raw = await repo.begin_chunk_transaction(AsyncSession(bind=conn))
        # The worst case on purpose: each statement's plan is the one made at its first execution.
        await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for _, statement, args in _chunk_statements(chunk, project["id"], backend["id"]):
            await raw.execute(statement, *args)  # planned while ``prediction`` is empty
        await transaction.rollback()

        await _predict_all(db, task_ids, project["id"], backend["id"])  # committed: the table grows

        transaction = await conn.begin()
        raw = await repo.begin_chunk_transaction(AsyncSession(bind=conn))
        await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for name, statement, args in _chunk_statements(chunk, project["id"], backend["id"]):
            await raw.execute(statement, *args)  # the cached plans, on a table of TASKS rows
            read = await raw.fetchval(
                "SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'prediction'"
            )
            assert read <= CHUNK, name
        await transaction.rollback()


async def test_chunk_statements_keep_their_plans_on_connections_that_plan_each_execution(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, database_url: str
) -> None:
    """The API's connections plan every statement at each execution (``db.PLAN_EACH_EXECUTION``); the
    chunk transactions, run for every chunk of every job, let Postgres keep a generic plan instead."""
    backend = await connect_backend(api, project["id"], fake.url)
    chunk = (await import_texts(api, project["id"], TASKS))[-CHUNK:]
    engine = make_engine(database_url, pool_size=1, max_overflow=0, ping_after_idle_s=None)
    try:
        async with engine.connect() as conn:
            statements = list(_chunk_statements(chunk, project["id"], backend["id"]))
            for _ in range(8):
                transaction = await conn.begin()
                raw = await repo.begin_chunk_transaction(AsyncSession(bind=conn))
                for _, statement, args in statements:
                    await raw.execute(statement, *args)
                await transaction.rollback()
            raw = await raw_connection(conn)
            for name, statement, _ in statements:
                generic, custom = await raw.fetchrow(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
                    statement,
                )
                assert generic >= 3 and custom <= 5, (name, generic, custom)
            outside = await raw.fetchval("SHOW plan_cache_mode")
            assert outside == PLAN_EACH_EXECUTION["plan_cache_mode"]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("model_version", [None, "old"])
async def test_a_prediction_delete_batch_reads_only_its_tasks_predictions(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
    engine: AsyncEngine,
    model_version: str | None,
) -> None:
    """A delete job's batch (all predictions, or a model version's) finds its tasks' predictions through
    the task index. Joined to the batch by ``IN``, the planner hash-joined a scan of all the project's
    predictions, and with the project and version in the condition it read all the project's predictions of
    the version by that index: once per batch, so a big project's delete was quadratic."""
    backend = await connect_backend(api, project["id"], fake.url)
    task_ids = await insert_tasks(db, project["id"], 50 * TASKS)
    await _predict_all(db, task_ids, project["id"], backend["id"])
    await db.execute("UPDATE prediction SET model_version = 'old'")  # an older version on every task
    await _predict_all(db, task_ids, project["id"], backend["id"])
    await db.execute("VACUUM ANALYZE task, prediction")
    batch = 5 * TASKS // 2

    async with engine.connect() as conn:
        transaction = await conn.begin()
        session = AsyncSession(bind=conn)
        selection = TaskSelection.from_params(session, project["id"], {"all": True})
        tasks, _, deleted = await delete_prediction_batch(session, selection, 0, batch, model_version)
        expected = batch if model_version else 2 * batch
        assert (tasks, deleted) == (batch, expected)
        assert await _rows_read(conn, "prediction") == (0, expected)
        await transaction.rollback()


async def test_a_task_delete_batch_counts_its_predictions_by_the_task_index(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
    engine: AsyncEngine,
) -> None:
    """A task delete batch counts the predictions it removes (for the project's counter) by probing the
    task index with the batch's ids. Counted with ``IN (SELECT …)``, the planner hash-joined a scan of the
    whole prediction index, every project's, once per batch of every delete."""
    backend = await connect_backend(api, project["id"], fake.url)
    task_ids = await insert_tasks(db, project["id"], 50 * TASKS)
    await _predict_all(db, task_ids, project["id"], backend["id"])
    await db.execute("VACUUM ANALYZE task, prediction")
    batch = task_ids[: 5 * TASKS // 2]

    async with engine.connect() as conn:
        explained = await conn.execute(
            text(f"EXPLAIN (ANALYZE, FORMAT JSON) {_DELETE_TASKS.text}"), {"ids": batch}
        )
        plan = explained.scalar_one()[0]["Plan"]
        await conn.rollback()
    assert _scanned(plan, "prediction") <= len(batch), plan


async def test_a_locked_window_reads_only_its_own_tasks_whatever_came_before_it(
    api: httpx.AsyncClient, project: dict[str, Any], db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    """A job's first window in a project newer than others starts at the project's first task. The
    planner walked the primary key from id 0 for rows it must lock, filtering on the project: every older
    project's task was read."""
    older = await create_project(api, SENTIMENT_CONFIG)
    await insert_tasks(db, older["id"], 50 * TASKS)
    task_ids = await insert_tasks(db, project["id"], 10 * TASKS)
    await db.execute("VACUUM ANALYZE task")
    batch = 5 * TASKS // 2

    async with engine.connect() as conn:
        transaction = await conn.begin()
        selection = TaskSelection.from_params(AsyncSession(bind=conn), project["id"], {"all": True})
        assert await selection.window(0, batch, lock=True) == task_ids[:batch]
        seq_read, fetched = await _rows_read(conn, "task")
        assert seq_read == 0 and fetched < 2 * batch, fetched
        with pytest.raises(asyncpg.LockNotAvailableError):
            await db.execute("SELECT id FROM task WHERE id = $1 FOR UPDATE NOWAIT", task_ids[batch - 1])
        await transaction.rollback()


async def test_windows_read_only_their_tasks_when_statistics_predate_the_tasks(
    project: dict[str, Any], db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    """Statistics of an empty table, as right after a big import before autovacuum analyzed it: the planner
    expected a few rows above the cursor and read all of them with a bitmap scan, then sorted (bulk
    prediction's planning was quadratic in the project). A job's window and a planning step read a window."""
    await db.execute("VACUUM ANALYZE task")
    task_ids = await insert_tasks(db, project["id"], 20 * TASKS)
    job_id = await db.fetchval(
        "INSERT INTO job (kind, project_id, selection, params, status, total)"
        " VALUES ('predict', $1, '{}', '{}', 'running', 0) RETURNING id",
        project["id"],
    )
    batch, cursor = TASKS // 2, task_ids[len(task_ids) // 4]
    above = [task_id for task_id in task_ids if task_id > cursor]

    async with engine.connect() as conn:
        transaction = await conn.begin()
        session = AsyncSession(bind=conn)
        selection = TaskSelection.from_params(session, project["id"], {"all": True})
        assert await selection.window(cursor, batch) == above[:batch]
        seq_read, fetched = await _rows_read(conn, "task")
        assert seq_read == 0 and fetched < 2 * batch, fetched
        scans = await conn.execute(
            text("SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan')")
        )
        assert tuple(scans.one()) == ("on", "on"), "the settings outlived the window"

        planned = await repo.plan_chunks(session, job_id, selection.ids_above(cursor).limit(batch), 100, 0)
        assert (planned.tasks, planned.last_task_id, len(planned.chunk_ids)) == (batch, above[batch - 1], 10)
        seq_read, fetched = await _rows_read(conn, "task")
        assert seq_read == 0 and fetched < 4 * batch, fetched
        await transaction.rollback()


async def test_a_locked_window_with_a_task_deleted_meanwhile_is_not_taken_for_the_last(
    project: dict[str, Any], db: asyncpg.Connection, engine: AsyncEngine, database_url: str
) -> None:
    """Jobs stop at a window shorter than asked: one whose task another transaction deleted while the
    window waited for its lock still answers its full length, the next task in its place."""
    task_ids = await insert_tasks(db, project["id"], 30)
    deleter = await asyncpg.connect(database_url)
    try:
        deleting = deleter.transaction()
        await deleting.start()
        await deleter.execute("DELETE FROM task WHERE id = $1", task_ids[5])
        async with engine.connect() as conn:
            transaction = await conn.begin()
            selection = TaskSelection.from_params(AsyncSession(bind=conn), project["id"], {"all": True})
            window = asyncio.create_task(selection.window(0, 10, lock=True))

            async def waiting_for_the_lock() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                )

            await wait_for(waiting_for_the_lock, 10, "the window to wait for the deleted task's lock")
            await deleting.commit()
            assert await window == task_ids[:5] + task_ids[6:11]
            await transaction.rollback()
    finally:
        await deleter.close()
