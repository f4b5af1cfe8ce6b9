"""Task rules: pages that read one page of rows (not the project), data that fits the label config,
counters kept in step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.auth.access import hidden
from services.annotation_api.counters import add_to_project_counters, refresh_project_counters
from services.annotation_api.db import driver_connection
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.projects.service import (
    get_project,
    get_project_counted,
    missing_key_message,
    parse_config,
)
from services.annotation_api.tasks import repository
from services.annotation_api.tasks.repository import ScoreCursor, TaskFilter
from services.annotation_api.tasks.schemas import BIGINT_MAX, Fields, Ordering, TaskCreate, TaskUpdate


@dataclass(frozen=True)
class PageRequest:
    page: int
    page_size: int
    after: str | None
    ordering: Ordering
    fields: Fields
    only_selected_version: bool


def _task_id(raw: str) -> int:
    if not raw.isdigit() or int(raw) > BIGINT_MAX:
        raise ValueError(raw)
    return int(raw)


def id_cursor(raw: str) -> int:
    try:
        return _task_id(raw)
    except ValueError:
        raise BadRequest("after: a task id (0 or more) in id order.", field="after") from None


def score_cursor(raw: str) -> ScoreCursor:
    """``SCORE,ID`` (``null,ID`` past the scored tasks), as ``next_after`` gives it."""
    score_text, _, id_text = raw.partition(",")
    try:
        score = None if score_text == "null" else float(score_text)
        if score is not None and not math.isfinite(score):
            raise ValueError(score_text)
        return ScoreCursor(score, _task_id(id_text))
    except ValueError:
        raise BadRequest(
            "after: `SCORE,ID` in score order (the previous page's next_after; SCORE is null for "
            "tasks without a score).",
            field="after",
        ) from None


def next_after(tasks: list[dict[str, Any]], request: PageRequest) -> str | None:
    """The cursor after this page's last task, in the page's ordering; None on a short (last) page."""
    if len(tasks) < request.page_size:
        return None
    last = tasks[-1]
    if not request.ordering.endswith("prediction_score"):
        return str(last["id"])
    score = last["predictions_score"]
    return f"{'null' if score is None else repr(float(score))},{last['id']}"


async def _check_data(project_label_config: str, data: dict[str, Any]) -> None:
    config = await parse_config(project_label_config)
    missing = config.missing_data_keys(data)
    if missing:
        raise BadRequest(f"data: {missing_key_message(config, missing[0])}", field="data")


async def list_tasks(session: AsyncSession, task_filter: TaskFilter, request: PageRequest) -> dict[str, Any]:
    """Label Studio's ``{tasks, total, total_annotations, total_predictions}``; a page past the end is
    empty. Totals come from the project's counters unless a filter narrows the set; then they are
    counted, except on keyset (``after=``) requests, where they are null."""
    by_score = request.ordering.endswith("prediction_score")
    after = request.after
    cursor = None if after is None else score_cursor(after) if by_score else id_cursor(after)
    project, unfolded = await get_project_counted(session, task_filter.project_id)
    conn = await driver_connection(session)
    offset = 0 if after is not None else (request.page - 1) * request.page_size
    if by_score:
        tasks = await repository.page_by_score(
            conn,
            task_filter,
            version=project.model_version or None,
            descending=request.ordering.startswith("-"),
            offset=offset,
            limit=request.page_size,
            after=cursor if isinstance(cursor, ScoreCursor) else None,
        )
    else:
        tasks = await repository.page_by_id(
            conn,
            task_filter,
            descending=request.ordering.startswith("-"),
            offset=offset,
            limit=request.page_size,
            after=cursor if isinstance(cursor, int) else None,
        )
    await repository.embed_prediction_scores(conn, tasks, project.model_version or None)
    if request.fields == "all":
        version = project.model_version if request.only_selected_version and project.model_version else None
        await repository.embed_annotations_and_predictions(conn, tasks, model_version=version)
    total: int | None
    annotations: int | None
    predictions: int | None
    if task_filter.narrows and request.after is not None:
        # A keyset walk must cost one page per request; counting a filtered set scans it.
        total = annotations = predictions = None
    elif task_filter.narrows:
        total, annotations, predictions = await repository.totals(conn, task_filter)
    else:
        total = project.task_number
        annotations = project.total_annotations_number
        predictions = project.total_predictions_number + unfolded
    return {
        "tasks": tasks,
        "total": total,
        "total_annotations": annotations,
        "total_predictions": predictions,
        "next_after": next_after(tasks, request),
    }


async def get_task(session: AsyncSession, task_id: int) -> dict[str, Any]:
    """One task with all its annotations and predictions."""
    conn = await driver_connection(session)
    task = await repository.fetch_task(conn, task_id)
    if task is None:
        raise NotFound(f"Task {task_id} not found.")
    project = await get_project(session, task["project"])
    await repository.embed_prediction_scores(conn, [task], project.model_version or None)
    await repository.embed_annotations_and_predictions(conn, [task])
    return task


async def create_task(session: AsyncSession, body: TaskCreate) -> dict[str, Any]:
    if await hidden(session, "project_id", body.project):
        raise NotFound(f"Project {body.project} not found.")
    project = await get_project(session, body.project, key_share=True)
    await _check_data(project.label_config, body.data)
    task_id = (
        await session.execute(
            text(
                "INSERT INTO task (project_id, data, meta) "
                "VALUES (:project, CAST(:data AS jsonb), CAST(:meta AS jsonb)) RETURNING id"
            ),
            {
                "project": project.id,
                "data": orjson.dumps(body.data).decode(),
                "meta": orjson.dumps(body.meta).decode(),
            },
        )
    ).scalar_one()
    await add_to_project_counters(session, project.id, tasks=1)
    return await get_task(session, task_id)


async def update_task(session: AsyncSession, task_id: int, body: TaskUpdate) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    row = (
        await session.execute(
            text(
                "SELECT p.label_config FROM task t JOIN project p ON p.id = t.project_id "
                "WHERE t.id = :id FOR UPDATE OF t FOR KEY SHARE OF p"
            ),
            {"id": task_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"Task {task_id} not found.")
    if "data" in changes:
        await _check_data(row.label_config, changes["data"])
    if changes:
        await session.execute(
            text(
                "UPDATE task SET data = COALESCE(CAST(:data AS jsonb), data), "
                "meta = COALESCE(CAST(:meta AS jsonb), meta), updated_at = now() WHERE id = :id"
            ),
            {
                "id": task_id,
                "data": orjson.dumps(changes["data"]).decode() if "data" in changes else None,
                "meta": orjson.dumps(changes["meta"]).decode() if "meta" in changes else None,
            },
        )
    return await get_task(session, task_id)


async def delete_tasks(session: AsyncSession, project_id: int, task_ids: Sequence[int] | None) -> int:
    """Delete the given tasks of a project (all of them when ``task_ids`` is None); returns how many.

    One DELETE, then the project's counters move by what the deleted rows carried. The tasks are locked
    first, in id order: the DELETE's snapshot then shows every prediction stored for them before (it
    counts them; a chunk storing predictions holds its tasks until it commits).
    """
    if task_ids is None:
        result = await session.execute(
            text("DELETE FROM task WHERE project_id = :project"), {"project": project_id}
        )
        await refresh_project_counters(session, project_id)
        return int(getattr(result, "rowcount", 0))
    await session.execute(
        text(
            "SELECT id FROM task WHERE project_id = :project AND id = ANY(CAST(:ids AS bigint[])) "
            "ORDER BY id FOR UPDATE"
        ),
        {"project": project_id, "ids": list(task_ids)},
    )
    row = (
        await session.execute(
            text(
                "WITH gone AS (DELETE FROM task WHERE project_id = :project AND id = ANY(CAST(:ids AS bigint[])) "
                "RETURNING id, total_annotations, is_labeled) "
                "SELECT count(*), COALESCE(sum(total_annotations), 0), "
                "(SELECT count(*) FROM prediction p WHERE p.task_id IN (SELECT id FROM gone)), "
                "count(*) FILTER (WHERE is_labeled) FROM gone"
            ),
            {"project": project_id, "ids": list(task_ids)},
        )
    ).one()
    deleted = int(row[0])
    if deleted:
        await add_to_project_counters(
            session,
            project_id,
            tasks=-deleted,
            annotations=-int(row[1]),
            predictions=-int(row[2]),
            labeled=-int(row[3]),
        )
    return deleted


async def delete_task(session: AsyncSession, task_id: int) -> None:
    project_id = (
        await session.execute(text("SELECT project_id FROM task WHERE id = :id"), {"id": task_id})
    ).scalar_one_or_none()
    if project_id is None or not await delete_tasks(session, project_id, [task_id]):
        raise NotFound(f"Task {task_id} not found.")
