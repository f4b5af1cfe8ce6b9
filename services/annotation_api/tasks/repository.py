"""SQL for task pages and bulk writes, run on the session's asyncpg connection.

Hot paths (import, task pages, export) skip the ORM: rows come back as tuples, JSONB columns are read as
text and embedded into the response unparsed (``orjson.Fragment``), and bulk writes use COPY.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.annotation_api.predictions.repository import PREDICTION_COLUMNS, prediction_json

TASK_PREDICTIONS = "(SELECT count(*) FROM prediction tp WHERE tp.task_id = t.id)"
"""Task ``t``'s ``total_predictions``: counted when read, a few entries of the prediction index that
leads with task_id (models.py says why it is not a column)."""

PARENT_PREDICTION = "(SELECT pp.id FROM prediction pp WHERE pp.id = a.parent_prediction_id)"
"""Annotation ``a``'s ``parent_prediction``: the stored id while that prediction exists (models.py says why)."""

TASK_COLUMNS = (
    "t.id, t.project_id, t.data::text, t.meta::text, t.is_labeled, t.total_annotations, "
    f"t.cancelled_annotations, {TASK_PREDICTIONS}, t.created_at, t.updated_at"
)

_ANNOTATIONS = f"""
    SELECT id, task_id, project_id, result::text, was_cancelled, ground_truth, lead_time,
           completed_by_id, {PARENT_PREDICTION}, created_at, updated_at
    FROM annotation a WHERE a.task_id = ANY($1::bigint[]) ORDER BY a.task_id, a.id
"""

_PREDICTIONS = (
    f"SELECT {PREDICTION_COLUMNS} FROM prediction p "
    "WHERE p.task_id = ANY($1::bigint[]) {version_filter} ORDER BY p.task_id, p.id"
)


def task_json(row: Sequence[Any]) -> dict[str, Any]:
    """Label Studio's task fields from a TASK_COLUMNS row; JSON columns stay pre-serialised."""
    return {
        "id": row[0],
        "project": row[1],
        "data": orjson.Fragment(row[2]),
        "meta": orjson.Fragment(row[3]),
        "is_labeled": row[4],
        "total_annotations": row[5],
        "cancelled_annotations": row[6],
        "total_predictions": row[7],
        "created_at": row[8],
        "updated_at": row[9],
    }


def annotation_json(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "task": row[1],
        "project": row[2],
        "result": orjson.Fragment(row[3]),
        "was_cancelled": row[4],
        "ground_truth": row[5],
        "lead_time": row[6],
        "completed_by": row[7],
        "parent_prediction": row[8],
        "created_at": row[9],
        "updated_at": row[10],
    }


async def embed_annotations_and_predictions(
    conn: asyncpg.Connection, tasks: list[dict[str, Any]], *, model_version: str | None = None
) -> None:
    """Attach ``annotations`` and ``predictions`` to a page of tasks: one query each, never per task.

    ``model_version`` (when given) keeps only that version's predictions: what annotators see.
    """
    by_id: dict[int, dict[str, Any]] = {}
    for task in tasks:
        task["annotations"] = []
        task["predictions"] = []
        by_id[task["id"]] = task
    if not by_id:
        return
    ids = list(by_id)
    for row in await conn.fetch(_ANNOTATIONS, ids):
        by_id[row[1]]["annotations"].append(annotation_json(row))
    if model_version is None:
        rows = await conn.fetch(_PREDICTIONS.format(version_filter=""), ids)
    else:
        rows = await conn.fetch(
            _PREDICTIONS.format(version_filter="AND p.model_version = $2"), ids, model_version
        )
    for row in rows:
        by_id[row[1]]["predictions"].append(prediction_json(row))


_SCORES = (
    "SELECT p.task_id, max(p.score) FROM prediction p "
    "WHERE p.task_id = ANY($1::bigint[]) AND p.score IS NOT NULL {version_filter} GROUP BY p.task_id"
)


async def embed_prediction_scores(
    conn: asyncpg.Connection, tasks: list[dict[str, Any]], model_version: str | None
) -> None:
    """Attach ``predictions_score`` (Label Studio's data manager field) to a page of tasks, one query.

    The score is the one ``ordering=prediction_score`` sorts by: the highest of the task's predictions
    of ``model_version`` (the project's shown version; any version when None), null when none has one.
    Read by task id through ``ix_prediction_task_id_model_version_ml_backend_id``: a page's worth of
    index entries.
    """
    for task in tasks:
        task["predictions_score"] = None
    if not tasks:
        return
    by_id = {task["id"]: task for task in tasks}
    if model_version is None:
        rows = await conn.fetch(_SCORES.format(version_filter=""), list(by_id))
    else:
        sql = _SCORES.format(version_filter="AND p.model_version = $2")
        rows = await conn.fetch(sql, list(by_id), model_version)
    for task_id, score in rows:
        by_id[task_id]["predictions_score"] = score


@dataclass(frozen=True)
class TaskFilter:
    project_id: int
    is_labeled: bool | None = None
    has_predictions_of: str | None = None

    @property
    def narrows(self) -> bool:
        """True when the filter selects fewer than all of the project's tasks."""
        return self.is_labeled is not None or self.has_predictions_of is not None


class _Params:
    """Numbered asyncpg placeholders collected while a statement is built."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _where(task_filter: TaskFilter, params: _Params, *, id_bound: str = "", alias: str = "t") -> list[str]:
    """WHERE clauses for the filter on task ``alias``; ``id_bound`` (e.g. ``"> $3"``) is a keyset cursor."""
    clauses = [f"{alias}.project_id = {params(task_filter.project_id)}"]
    if id_bound:
        clauses.append(f"{alias}.id {id_bound}")
    if task_filter.is_labeled is not None:
        clauses.append(f"{alias}.is_labeled = {params(task_filter.is_labeled)}")
    if task_filter.has_predictions_of is not None:
        # The cursor is repeated on hp.task_id: Postgres does not carry a range across t.id = hp.task_id,
        # and without it a merge semi-join reads the version's predictions from the first task onwards.
        prediction_bound = f" AND hp.task_id {id_bound}" if id_bound else ""
        clauses.append(
            f"EXISTS (SELECT 1 FROM prediction hp WHERE hp.task_id = {alias}.id "
            f"AND hp.model_version = {params(task_filter.has_predictions_of)}{prediction_bound})"
        )
    return clauses


def _scored(alias: str, task: str, version: str | None) -> str:
    """Condition: prediction ``alias`` of ``task`` carries a score (of ``version`` when given)."""
    version_clause = f" AND {alias}.model_version = {version}" if version else ""
    return f"{alias}.task_id = {task} AND {alias}.score IS NOT NULL{version_clause}"


async def page_by_id(
    conn: asyncpg.Connection,
    task_filter: TaskFilter,
    *,
    descending: bool,
    offset: int,
    limit: int,
    after: int | None,
) -> list[dict[str, Any]]:
    """A page in id order: an index range scan on (project_id, id), keyset when ``after`` is given.

    ``page=N`` (an offset) first finds the id the page starts at, skipping rows in a subquery that
    reads only ids, then reads one page from there: about three times faster at a depth of 900k than
    an OFFSET that builds and throws away every skipped row.
    """
    params = _Params()
    direction = "DESC" if descending else "ASC"
    id_bound = f"{'<' if descending else '>'} {params(after)}" if after is not None else ""
    clauses = _where(task_filter, params, id_bound=id_bound)
    if after is None and offset > 0:
        skipped = _where(task_filter, params, alias="b")
        clauses.append(
            f"t.id {'<=' if descending else '>='} (SELECT b.id FROM task b WHERE {' AND '.join(skipped)} "
            f"ORDER BY b.project_id {direction}, b.id {direction} OFFSET {params(offset)} LIMIT 1)"
        )
    sql = (
        f"SELECT {TASK_COLUMNS} FROM task t WHERE {' AND '.join(clauses)} "
        f"ORDER BY t.project_id {direction}, t.id {direction} LIMIT {params(limit)}"
    )
    return [task_json(row) for row in await conn.fetch(sql, *params.values)]


@dataclass(frozen=True)
class ScoreCursor:
    """A keyset position in score order: after the task ``task_id`` whose score is ``score`` (None: a
    task without a score, in the id-ordered tail)."""

    score: float | None
    task_id: int


async def page_by_score(
    conn: asyncpg.Connection,
    task_filter: TaskFilter,
    *,
    version: str | None,
    descending: bool,
    offset: int,
    limit: int,
    after: ScoreCursor | None = None,
) -> list[dict[str, Any]]:
    """A page ordered by prediction score then task id, tasks without a scored prediction last (by id).

    A task's score is the highest of its predictions of ``version`` (any version when None). Scored
    tasks come from walking the (project_id, model_version, score) index and keeping each task's top
    prediction, so a first page, and a keyset page (``after``) at any depth, reads a page worth of index
    entries (plus the ties of the cursor's score before it), not every prediction.
    """
    tasks: list[dict[str, Any]] = []
    if after is None or after.score is not None:
        params = _Params()
        clauses = _where(task_filter, params)
        version_param = params(version) if version else None
        direction = "DESC" if descending else "ASC"
        clauses.append(f"p.project_id = {params(task_filter.project_id)}")
        if after is not None:
            # (score, task_id) past the cursor, with a plain bound on score the index can range-scan.
            score, task_id = params(after.score), params(after.task_id)
            beyond = "<" if descending else ">"
            clauses.append(
                f"p.score {beyond}= {score} AND (p.score {beyond} {score} OR p.task_id {beyond} {task_id})"
            )
        scored_sql = (
            f"SELECT {TASK_COLUMNS} FROM prediction p JOIN task t ON t.id = p.task_id "
            f"WHERE {_scored('p', 'p.task_id', version_param)} AND {' AND '.join(clauses)} "
            f"AND NOT EXISTS (SELECT 1 FROM prediction q WHERE {_scored('q', 'p.task_id', version_param)} "
            "AND (q.score > p.score OR (q.score = p.score AND q.id > p.id))) "
            f"ORDER BY p.score {direction}, p.task_id {direction} "
            f"OFFSET {params(offset)} LIMIT {params(limit)}"
        )
        tasks = [task_json(row) for row in await conn.fetch(scored_sql, *params.values)]
        if len(tasks) == limit:
            return tasks
    # Past the scored tasks: continue with the unscored ones in id order.
    params = _Params()
    id_bound = f"> {params(after.task_id)}" if after is not None and after.score is None else ""
    clauses = _where(task_filter, params, id_bound=id_bound)
    version_param = params(version) if version else None
    unscored = f"NOT EXISTS (SELECT 1 FROM prediction s WHERE {_scored('s', 't.id', version_param)})"
    if tasks or after is not None:
        unscored_offset = 0
    else:
        scored_count: int = await conn.fetchval(
            f"SELECT count(*) FROM task t WHERE {' AND '.join(clauses)} AND NOT {unscored}",
            *params.values,
        )
        unscored_offset = max(0, offset - scored_count)
    sql = (
        f"SELECT {TASK_COLUMNS} FROM task t WHERE {' AND '.join(clauses)} AND {unscored} "
        f"ORDER BY t.project_id, t.id OFFSET {params(unscored_offset)} LIMIT {params(limit - len(tasks))}"
    )
    tasks.extend(task_json(row) for row in await conn.fetch(sql, *params.values))
    return tasks


async def totals(conn: asyncpg.Connection, task_filter: TaskFilter) -> tuple[int, int, int]:
    """(tasks, annotations, predictions) over the filtered tasks: counters, and each task's predictions
    counted (one index probe per task)."""
    params = _Params()
    clauses = _where(task_filter, params)
    row = await conn.fetchrow(
        f"SELECT count(*), COALESCE(sum(t.total_annotations), 0), COALESCE(sum({TASK_PREDICTIONS}), 0) "
        f"FROM task t WHERE {' AND '.join(clauses)}",
        *params.values,
    )
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def fetch_task(conn: asyncpg.Connection, task_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM task t WHERE t.id = $1", task_id)
    return None if row is None else task_json(row)
