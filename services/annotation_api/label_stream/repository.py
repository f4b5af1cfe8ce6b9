"""SQL of the label stream: pick one free task by a sampling strategy and reserve it, never scanning a
project's tasks or predictions for it.

Every pick runs ``FOR UPDATE SKIP LOCKED`` on the task row, so two annotators asking at the same moment
walk past each other's candidate instead of waiting for it; the reservation itself is a ``task_lock`` row
that only an expired or own lock may be replaced by, which closes the gap left when the other annotator
committed between our snapshot and our row lock.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# A task is free for :user when nobody labeled it, nobody else holds a live reservation, and this user
# did not already annotate or skip it (a skipped task must not come straight back).
_FREE = """
    t.project_id = :project AND NOT t.is_labeled
    AND NOT EXISTS (
        SELECT 1 FROM task_lock l
        WHERE l.task_id = t.id AND l.user_id <> :user AND l.expires_at > now())
    AND NOT EXISTS (
        SELECT 1 FROM annotation a WHERE a.task_id = t.id AND a.completed_by_id = :user)
"""

_SEQUENTIAL = text(
    f"SELECT t.id FROM task t WHERE {_FREE} AND t.id >= :from_id "
    "ORDER BY t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED"
)

# Uniform sampling probes a random id in the project's id range and takes the first free task from
# there (wrapping around): two index lookups instead of ORDER BY random() over every task.
_ID_RANGE = text("SELECT min(id), max(id) FROM task WHERE project_id = :project")

_BEFORE = text(
    f"SELECT t.id FROM task t WHERE {_FREE} AND t.id < :before_id "
    "ORDER BY t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED"
)

# ORDER BY score alone follows ix_prediction_project_id_model_version_score (ASC puts NULL scores last,
# as the index does); adding a tie-breaker would force a sort of every prediction of the version.
_LEAST_CERTAIN = text(
    f"""
    SELECT t.id FROM prediction p JOIN task t ON t.id = p.task_id
    WHERE p.project_id = :project AND p.model_version = :model_version AND {_FREE}
    ORDER BY p.score LIMIT 1 FOR UPDATE OF t SKIP LOCKED
    """
)

_RESERVE = text(
    """
    INSERT INTO task_lock (task_id, user_id, expires_at)
    VALUES (:task, :user, now() + make_interval(secs => :ttl))
    ON CONFLICT (task_id) DO UPDATE
        SET user_id = excluded.user_id, expires_at = excluded.expires_at
        WHERE task_lock.expires_at <= now() OR task_lock.user_id = excluded.user_id
    RETURNING task_id
    """
)

_RELEASE_OWN = text(
    """
    DELETE FROM task_lock l USING task t
    WHERE l.task_id = t.id AND t.project_id = :project AND l.user_id = :user
    """
)

_DROP_EXPIRED = text("DELETE FROM task_lock WHERE expires_at <= now() - interval '1 minute'")

_RELEASE_TASK = text("DELETE FROM task_lock WHERE task_id = :task AND user_id = :user")


def _params(project_id: int, user_id: int) -> dict[str, int]:
    return {"project": project_id, "user": user_id}


async def release_own_locks(session: AsyncSession, project_id: int, user_id: int) -> None:
    """Free what this user reserved in the project (asking again means they moved on)."""
    await session.execute(_RELEASE_OWN, _params(project_id, user_id))
    await session.execute(_DROP_EXPIRED)


async def release_task_lock(session: AsyncSession, task_id: int, user_id: int) -> None:
    await session.execute(_RELEASE_TASK, {"task": task_id, "user": user_id})


async def first_free(session: AsyncSession, project_id: int, user_id: int, from_id: int = 0) -> int | None:
    params = {**_params(project_id, user_id), "from_id": from_id}
    result: int | None = (await session.execute(_SEQUENTIAL, params)).scalar_one_or_none()
    return result


async def random_free(session: AsyncSession, project_id: int, user_id: int, probe: float) -> int | None:
    """The first free task at or after a random point of the id range (``probe`` in [0, 1))."""
    row = (await session.execute(_ID_RANGE, {"project": project_id})).one()
    low, high = row[0], row[1]
    if low is None:
        return None
    start = low + int(probe * (high - low + 1))
    found = await first_free(session, project_id, user_id, from_id=start)
    if found is not None:
        return found
    params = {**_params(project_id, user_id), "before_id": start}
    result: int | None = (await session.execute(_BEFORE, params)).scalar_one_or_none()
    return result


async def least_certain_free(
    session: AsyncSession, project_id: int, user_id: int, model_version: str
) -> int | None:
    params = {**_params(project_id, user_id), "model_version": model_version}
    result: int | None = (await session.execute(_LEAST_CERTAIN, params)).scalar_one_or_none()
    return result


async def reserve(session: AsyncSession, task_id: int, user_id: int, ttl_s: float) -> bool:
    """Take the task's reservation; False when another annotator's live reservation holds it."""
    params = {"task": task_id, "user": user_id, "ttl": ttl_s}
    return (await session.execute(_RESERVE, params)).scalar_one_or_none() is not None
