"""The label stream (active learning): which task an annotator labels next, and keeping it theirs.

Strategies follow the project's ``sampling``: sequential (lowest id), uniform (random probe of the id
range) and uncertainty (lowest prediction score of the project's selected model version first, tasks
without such a prediction after them). The served task is reserved for the caller for
``task_lock_ttl_s``; their reservations in the project end when they ask again or annotate.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.counters import add_to_project_counters
from services.annotation_api.db import driver_connection, release_transaction
from services.annotation_api.errors import ApiError, NotFound
from services.annotation_api.label_stream import repository
from services.annotation_api.ml_backends.gateway_client import GatewayClient
from services.annotation_api.ml_backends.service import backend_spec, follow_model_version, project_ref
from services.annotation_api.models import MlBackend, MlBackendState, Prediction, Project, Task
from services.annotation_api.projects.service import get_project
from services.annotation_api.tasks.repository import (
    TASK_COLUMNS,
    embed_annotations_and_predictions,
    task_json,
)
from shared.gateway_contract import PredictTasksRequest, TaskPrediction

log = logging.getLogger(__name__)

UNIFORM = "Uniform sampling"
UNCERTAINTY = "Uncertainty sampling"
# Losing the reservation race means another annotator just took our candidate; the next attempt sees
# their lock. A handful of attempts covers any realistic burst.
_RESERVE_ATTEMPTS = 5

_UNREACHABLE = frozenset({MlBackendState.DISCONNECTED, MlBackendState.ERROR})
_HAS_VERSION = text("SELECT 1 FROM prediction WHERE task_id = :task AND model_version = :version LIMIT 1")
# After the remote call: the task (still there, locked against a concurrent store) and its backend
# (still there; key-share so it cannot go before the prediction referencing it commits).
_LOCK_TASK_AND_BACKEND = text(
    """
    SELECT 1 FROM task t JOIN ml_backend b ON b.project_id = t.project_id AND b.id = :backend
    WHERE t.id = :task
    FOR NO KEY UPDATE OF t FOR KEY SHARE OF b
    """
)


async def _pick(session: AsyncSession, project: Project, user_id: int) -> int | None:
    if project.sampling == UNCERTAINTY and project.model_version:
        found = await repository.least_certain_free(session, project.id, user_id, project.model_version)
        if found is not None:
            return found
    if project.sampling == UNIFORM:
        return await repository.random_free(session, project.id, user_id, random.random())
    return await repository.first_free(session, project.id, user_id)


async def next_task(
    session: AsyncSession,
    gateway: GatewayClient,
    project_id: int,
    user_id: int,
    lock_ttl_s: float,
) -> dict[str, Any]:
    """The next task for ``user_id``, reserved for them; 404 "No more tasks" when none is free."""
    project = await get_project(session, project_id)
    await repository.release_own_locks(session, project_id, user_id)
    for _ in range(_RESERVE_ATTEMPTS):
        task_id = await _pick(session, project, user_id)
        if task_id is None:
            break
        if await repository.reserve(session, task_id, user_id, lock_ttl_s):
            await ensure_current_prediction(session, gateway, project, task_id)
            return await task_with_predictions(session, project, task_id)
    raise NotFound("No more tasks")


async def release_task_lock(session: AsyncSession, task_id: int, user_id: int) -> None:
    """End the caller's reservation of a task (called when they annotate it)."""
    await repository.release_task_lock(session, task_id, user_id)


async def task_with_predictions(session: AsyncSession, project: Project, task_id: int) -> dict[str, Any]:
    """The task JSON of the task endpoints, with the predictions annotators see."""
    conn = await driver_connection(session)
    row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM task t WHERE t.id = $1", task_id)
    if row is None:
        raise NotFound(f"Task {task_id} not found.")
    task = task_json(row)
    await embed_annotations_and_predictions(conn, [task], model_version=project.model_version or None)
    return task


async def _serving_backend(session: AsyncSession, project: Project) -> MlBackend | None:
    """The backend whose predictions annotators see: the one on the project's version, else the first."""
    stmt = (
        select(MlBackend)
        .where(MlBackend.project_id == project.id)
        .order_by(
            (MlBackend.model_version == project.model_version).desc(),
            (MlBackend.state == MlBackendState.CONNECTED).desc(),
            MlBackend.id,
        )
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def predict_if_missing(session: AsyncSession, gateway: GatewayClient, task_id: int) -> None:
    """The ``GET /api/tasks/{id}`` side of ``evaluate_predictions_automatically`` (see below)."""
    stmt = select(Project).join(Task, Task.project_id == Project.id).where(Task.id == task_id)
    project = (await session.execute(stmt)).scalar_one_or_none()
    if project is not None:
        await ensure_current_prediction(session, gateway, project, task_id)


async def ensure_current_prediction(
    session: AsyncSession, gateway: GatewayClient, project: Project, task_id: int
) -> None:
    """``evaluate_predictions_automatically``: give a task lacking a prediction of the current version
    one, through the gateway's tight interactive path, and store it.

    Best effort by design: an annotator waiting for a task must get it even when the backend is slow
    or down, so any gateway failure leaves the task as it is. The call runs with no transaction open
    (``release_transaction``): what the request did so far (a reservation) is committed, no row stays
    locked while the backend thinks, and the answer is stored only if the task and backend still exist.
    """
    if not project.evaluate_predictions_automatically:
        return
    backend = await _serving_backend(session, project)
    if backend is None or backend.state in _UNREACHABLE:
        return  # the periodic check found it down: do not make the annotator wait for a timeout
    version = project.model_version or backend.model_version
    if version and await session.scalar(_HAS_VERSION, {"task": task_id, "version": version}):
        return
    task = await session.get(Task, task_id)
    if task is None:
        return
    request = PredictTasksRequest(
        backend=backend_spec(backend),
        project=project_ref(project),
        tasks=[{"id": task.id, "data": task.data, "meta": task.meta, "project": task.project_id}],
        interactive=True,
    )
    await release_transaction(session)
    try:
        result = await gateway.predict(request)
    except ApiError as exc:
        log.warning("automatic prediction of task %s failed: %s", task_id, exc.detail)
        return
    if result.errors:
        log.warning("automatic prediction of task %s failed: %s", task_id, result.errors[0].message)
    predictions = [p for p in result.predictions if p.task_id == task_id]
    if predictions:
        await _store(session, project.id, backend.id, task_id, predictions)
        await session.refresh(project, ["model_version"])


async def _store(
    session: AsyncSession, project_id: int, backend_id: int, task_id: int, predictions: list[TaskPrediction]
) -> None:
    """Store the answer unless the task or backend went meanwhile, or another request stored the same
    version first (the task row lock orders concurrent requests)."""
    if not await session.scalar(_LOCK_TASK_AND_BACKEND, {"task": task_id, "backend": backend_id}):
        return
    fresh = [
        p
        for p in predictions
        if not await session.scalar(_HAS_VERSION, {"task": task_id, "version": p.model_version})
    ]
    if not fresh:
        return
    session.add_all(
        Prediction(
            task_id=task_id,
            project_id=project_id,
            result=p.result,
            score=p.score,
            model_version=p.model_version,
            ml_backend_id=backend_id,
        )
        for p in fresh
    )
    # A model learning online may answer with a version newer than the one the backend record shows:
    # record it (and move the project's shown version when it follows the backend), as a bulk job does,
    # so the task comes back with this prediction among the ones annotators see.
    backend = await session.get(MlBackend, backend_id, populate_existing=True)
    assert backend is not None  # locked above, with the task
    for version in {p.model_version for p in fresh if p.model_version}:
        await follow_model_version(session, backend, project_id, version)
    await session.flush()
    await add_to_project_counters(session, project_id, predictions=len(fresh))
