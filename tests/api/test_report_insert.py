"""A chunk report's predictions reach Postgres as columns (``ReportedRows``), each with its own version.

The insert sends the versions as one value when the whole chunk shares it, else as one per prediction;
both must store exactly what the report said, and neither may store a version a task already has.
"""

from __future__ import annotations

import asyncpg
import orjson

from services.annotation_api.jobs import repository as repo
from services.annotation_api.jobs.schemas import parse_report
from tests.support.builders import chunk_report
from tests.support.databases import insert_tasks

BACKEND = 7


def report_of(*predictions: tuple[int, str, float | None]) -> bytes:
    return orjson.dumps(
        chunk_report(
            (task_id, f'[{{"n": {task_id}}}]', score, version) for task_id, version, score in predictions
        )
    )


async def store(db: asyncpg.Connection, project: int, tasks: list[int], raw: bytes) -> list[int]:
    async with db.transaction():
        return await repo.insert_predictions(
            db,
            project_id=project,
            backend_id=BACKEND,
            job_id=None,
            chunk_task_ids=tasks,
            predictions=parse_report(raw).predictions,
        )


async def test_a_chunk_stores_each_prediction_with_its_version_shared_or_not(db: asyncpg.Connection) -> None:
    organization = await db.fetchval("INSERT INTO organization (title) VALUES ('o') RETURNING id")
    project = await db.fetchval(
        "INSERT INTO project (title, label_config, organization_id) VALUES ('p', '<View/>', $1) RETURNING id",
        organization,
    )
    one, two, three = tasks = await insert_tasks(db, project, 3)

    mixed = await store(db, project, tasks, report_of((one, "v1", 0.5), (two, "v2", None), (three, "v1", 1)))
    assert sorted(mixed) == tasks
    shared = await store(
        db, project, tasks, report_of((one, "v2", 0.25), (two, "v2", 0.75), (three, "v2", None))
    )
    assert sorted(shared) == [one, three], "task two had v2 already"

    stored = await db.fetch(
        "SELECT task_id, model_version, score, result, ml_backend_id FROM prediction ORDER BY task_id, model_version"
    )
    assert [(r["task_id"], r["model_version"], r["score"], orjson.loads(r["result"])) for r in stored] == [
        (one, "v1", 0.5, [{"n": one}]),
        (one, "v2", 0.25, [{"n": one}]),
        (two, "v2", None, [{"n": two}]),
        (three, "v1", 1.0, [{"n": three}]),
        (three, "v2", None, [{"n": three}]),
    ]
    assert {r["ml_backend_id"] for r in stored} == {BACKEND}


async def test_results_and_scores_reach_postgres_whole_whatever_they_hold(db: asyncpg.Connection) -> None:
    """The insert sends a chunk's results as one text split at ``RESULT_SEPARATOR`` and its ids and scores
    as lists of numbers: commas, brackets, ``null`` and the separator's own escape inside a result, and
    scores no short decimal writes exactly, must all come back as sent."""
    organization = await db.fetchval("INSERT INTO organization (title) VALUES ('o') RETURNING id")
    project = await db.fetchval(
        "INSERT INTO project (title, label_config, organization_id) VALUES ('p', '<View/>', $1) RETURNING id",
        organization,
    )
    tasks = await insert_tasks(db, project, 4)
    texts = [
        '[{"t": "a,b {1,2} null", "n": [1, 2]}]',
        '[ {"t": "\\u001e and \\u001E, escaped", "u": "caf\\u00e9 \\ud83d\\ude00"} ]',
        "[]",
        '[{"t": "\\\\x1e is four characters here"}]',
    ]
    scores = [0.1, None, 1 / 3, 12345678901234567890.0]
    raw = orjson.dumps(chunk_report(zip(tasks, texts, scores, ["v1"] * len(tasks), strict=True)))
    assert sorted(await store(db, project, tasks, raw)) == tasks
    stored = await db.fetch("SELECT task_id, result, score FROM prediction ORDER BY task_id")
    assert [(r["task_id"], orjson.loads(r["result"]), r["score"]) for r in stored] == [
        (task, orjson.loads(text), score) for task, text, score in zip(tasks, texts, scores, strict=True)
    ]
