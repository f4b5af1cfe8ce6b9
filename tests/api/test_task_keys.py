"""The references to ``task`` hold as the foreign keys held them (migration 0012's statement triggers).

``prediction``, ``annotation`` and ``task_lock`` rows need an existing task and go with it; the triggers
that do this once per statement must refuse, cascade and wait exactly where the per-row keys did,
including against a concurrent transaction, so that no row ever outlives its task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests.support.waiting import wait_for_lock_wait

MISSING = 987_654_321


@dataclass(frozen=True)
class Scene:
    project: int
    user: int
    tasks: list[int]


@pytest.fixture
async def scene(db: asyncpg.Connection) -> Scene:
    organization = await db.fetchval("INSERT INTO organization (title) VALUES ('o') RETURNING id")
    user = await db.fetchval(
        "INSERT INTO \"user\" (email, organization_id) VALUES ('a@example.com', $1) RETURNING id",
        organization,
    )
    project = await db.fetchval(
        "INSERT INTO project (title, label_config, organization_id) VALUES ('p', '<View/>', $1) RETURNING id",
        organization,
    )
    tasks = await db.fetchval(
        "WITH made AS (INSERT INTO task (project_id, data) SELECT $1, '{}' FROM generate_series(1, 3)"
        " RETURNING id) SELECT array_agg(id ORDER BY id) FROM made",
        project,
    )
    return Scene(project, user, list(tasks))


@pytest.fixture
async def other(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A second session, for the races."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def add_prediction(conn: asyncpg.Connection, scene: Scene, task_id: int) -> None:
    await conn.execute(
        "INSERT INTO prediction (task_id, project_id, result, model_version) VALUES ($1, $2, '[]', 'v1')",
        task_id,
        scene.project,
    )


async def add_annotation(conn: asyncpg.Connection, scene: Scene, task_id: int) -> None:
    await conn.execute(
        "INSERT INTO annotation (task_id, project_id, result) VALUES ($1, $2, '[]')", task_id, scene.project
    )


async def add_lock(conn: asyncpg.Connection, scene: Scene, task_id: int) -> None:
    await conn.execute(
        "INSERT INTO task_lock (task_id, user_id, expires_at) VALUES ($1, $2, now() + interval '1 hour')",
        task_id,
        scene.user,
    )


ADDERS = {"prediction": add_prediction, "annotation": add_annotation, "task_lock": add_lock}


async def rows_of(conn: asyncpg.Connection, table: str, task_id: int) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE task_id = $1", task_id))


@pytest.mark.parametrize("table", sorted(ADDERS))
async def test_a_row_for_a_missing_task_is_refused_with_the_keys_error(
    db: asyncpg.Connection, scene: Scene, table: str
) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await ADDERS[table](db, scene, MISSING)
    assert refused.value.constraint_name == f"fk_{table}_task_id_task"
    assert refused.value.table_name == table
    assert f"Key (task_id)=({MISSING}) is not present" in str(refused.value.detail)
    assert await rows_of(db, table, MISSING) == 0


async def test_one_missing_task_fails_the_whole_statement(db: asyncpg.Connection, scene: Scene) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute(
            "INSERT INTO prediction (task_id, project_id, result) SELECT t, $2, '[]' FROM unnest($1::bigint[]) t",
            [*scene.tasks, MISSING],
            scene.project,
        )
    assert await db.fetchval("SELECT count(*) FROM prediction") == 0


@pytest.mark.parametrize("table", ["prediction", "annotation"])
async def test_moving_a_row_to_a_missing_task_is_refused(
    db: asyncpg.Connection, scene: Scene, table: str
) -> None:
    await ADDERS[table](db, scene, scene.tasks[0])
    await db.execute(f"UPDATE {table} SET result = '[{{}}]' WHERE task_id = $1", scene.tasks[0])  # stays
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute(f"UPDATE {table} SET task_id = $2 WHERE task_id = $1", scene.tasks[0], MISSING)
    await db.execute(f"UPDATE {table} SET task_id = $2 WHERE task_id = $1", scene.tasks[0], scene.tasks[1])
    assert (await rows_of(db, table, scene.tasks[0]), await rows_of(db, table, scene.tasks[1])) == (0, 1)


async def test_deleting_tasks_takes_their_rows_and_only_theirs(db: asyncpg.Connection, scene: Scene) -> None:
    for task_id in scene.tasks:
        for add in ADDERS.values():
            await add(db, scene, task_id)
    await db.execute("DELETE FROM task WHERE id = ANY($1::bigint[])", scene.tasks[:2])
    for table in ADDERS:
        assert [await rows_of(db, table, task_id) for task_id in scene.tasks] == [0, 0, 1], table
    await db.execute("DELETE FROM project WHERE id = $1", scene.project)  # its tasks go by the project's key
    for table in ADDERS:
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_truncating_tasks_empties_what_referenced_them(db: asyncpg.Connection, scene: Scene) -> None:
    for add in ADDERS.values():
        await add(db, scene, scene.tasks[0])
    await db.execute("TRUNCATE task")
    for table in ADDERS:
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


@pytest.mark.parametrize("table", sorted(ADDERS))
async def test_a_delete_waits_for_an_insert_of_its_task_and_takes_the_row(
    db: asyncpg.Connection, other: asyncpg.Connection, database_url: str, scene: Scene, table: str
) -> None:
    task_id = scene.tasks[0]
    inserting = db.transaction()
    await inserting.start()
    await ADDERS[table](db, scene, task_id)
    deleting = asyncio.create_task(other.execute("DELETE FROM task WHERE id = $1", task_id))
    await wait_for_lock_wait(database_url, "the delete to wait for the insert's task lock")
    assert not deleting.done()
    await inserting.commit()
    assert await deleting == "DELETE 1"
    assert await rows_of(db, table, task_id) == 0


@pytest.mark.parametrize("table", sorted(ADDERS))
async def test_an_insert_waits_for_a_delete_of_its_task_and_fails(
    db: asyncpg.Connection, other: asyncpg.Connection, database_url: str, scene: Scene, table: str
) -> None:
    task_id = scene.tasks[0]
    deleting = other.transaction()
    await deleting.start()
    await other.execute("DELETE FROM task WHERE id = $1", task_id)
    inserting = asyncio.create_task(ADDERS[table](db, scene, task_id))
    await wait_for_lock_wait(database_url, "the insert to wait for the deleted task")
    assert not inserting.done()
    await deleting.commit()
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await inserting
    assert await rows_of(db, table, task_id) == 0


async def test_an_insert_after_a_rolled_back_delete_is_kept(
    db: asyncpg.Connection, other: asyncpg.Connection, database_url: str, scene: Scene
) -> None:
    task_id = scene.tasks[0]
    deleting = other.transaction()
    await deleting.start()
    await other.execute("DELETE FROM task WHERE id = $1", task_id)
    inserting = asyncio.create_task(add_prediction(db, scene, task_id))
    await wait_for_lock_wait(database_url, "the insert to wait for the deleted task")
    await deleting.rollback()
    await inserting
    assert await rows_of(db, "prediction", task_id) == 1
