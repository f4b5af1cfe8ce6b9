"""Prediction SQL. Results travel as JSON text (``orjson.Fragment``), never decoded and re-encoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

PREDICTION_COLUMNS = (
    "p.id, p.task_id, p.project_id, p.result::text, p.score, p.model_version, "
    "(SELECT b.id FROM ml_backend b WHERE b.id = p.ml_backend_id), p.job_id, p.created_at, p.updated_at"
)
"""The backend shows only while it exists: deleting one writes none of its (maybe millions of) predictions."""


def prediction_json(row: Sequence[Any]) -> dict[str, Any]:
    """Label Studio's prediction fields from a row of ``PREDICTION_COLUMNS``."""
    return {
        "id": row[0],
        "task": row[1],
        "project": row[2],
        "result": orjson.Fragment(row[3]),
        "score": row[4],
        "model_version": row[5],
        "ml_backend": row[6],
        "job": row[7],
        "created_at": row[8],
        "updated_at": row[9],
    }


def _filters(task: int | None, project: int | None, organization: int | None) -> tuple[str, dict[str, Any]]:
    clauses, params = ["TRUE"], {}
    if organization is not None:
        clauses.append("p.project_id IN (SELECT id FROM project WHERE organization_id = :organization)")
        params["organization"] = organization
    if task is not None:
        clauses.append("p.task_id = :task")
        params["task"] = task
    if project is not None:
        clauses.append("p.project_id = :project")
        params["project"] = project
    return " AND ".join(clauses), params


async def count_up_to(
    session: AsyncSession, task: int | None, project: int | None, organization: int | None, limit: int
) -> int:
    """How many predictions match, counting no further than ``limit`` (cheap on huge projects)."""
    where, params = _filters(task, project, organization)
    sql = f"SELECT count(*) FROM (SELECT 1 FROM prediction p WHERE {where} LIMIT :limit) AS s"
    return int((await session.execute(text(sql), {**params, "limit": limit})).scalar_one())


async def list_predictions(
    session: AsyncSession,
    task: int | None,
    project: int | None,
    organization: int | None,
    offset: int,
    limit: int,
) -> list[dict[str, Any]]:
    where, params = _filters(task, project, organization)
    sql = f"SELECT {PREDICTION_COLUMNS} FROM prediction p WHERE {where} ORDER BY p.id OFFSET :offset LIMIT :limit"
    rows = await session.execute(text(sql), {**params, "offset": offset, "limit": limit})
    return [prediction_json(row) for row in rows]


async def get_prediction(session: AsyncSession, prediction_id: int) -> dict[str, Any] | None:
    sql = f"SELECT {PREDICTION_COLUMNS} FROM prediction p WHERE p.id = :id"
    row = (await session.execute(text(sql), {"id": prediction_id})).one_or_none()
    return None if row is None else prediction_json(row)


@dataclass
class NewPredictions:
    """Column arrays of predictions to insert; ``results`` are JSON texts."""

    task_ids: list[int] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    def add(self, task_id: int, result: Any, score: float | None, version: str) -> None:
        self.task_ids.append(task_id)
        self.results.append(orjson.dumps(result).decode())
        self.scores.append(score)
        self.versions.append(version)


# One INSERT … SELECT FROM unnest for any number of rows; the caller picks what to read back from `p`.
_INSERT = """
    WITH p AS (
        INSERT INTO prediction (task_id, project_id, result, score, model_version)
        SELECT u.task_id, :project, CAST(u.result AS jsonb), u.score, u.model_version
        FROM unnest(CAST(:tasks AS bigint[]), CAST(:results AS text[]),
                    CAST(:scores AS double precision[]), CAST(:versions AS text[]))
             AS u(task_id, result, score, model_version)
        RETURNING {returning}
    )
"""


def _insert_params(project_id: int, rows: NewPredictions) -> dict[str, Any]:
    return {
        "project": project_id,
        "tasks": rows.task_ids,
        "results": rows.results,
        "scores": rows.scores,
        "versions": rows.versions,
    }


async def insert_predictions(
    session: AsyncSession, project_id: int, rows: NewPredictions
) -> list[dict[str, Any]]:
    sql = _INSERT.format(returning="*") + f"SELECT {PREDICTION_COLUMNS} FROM p ORDER BY p.id"
    return [
        prediction_json(row) for row in await session.execute(text(sql), _insert_params(project_id, rows))
    ]
