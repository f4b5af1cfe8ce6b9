"""Set-based maintenance of the counters pages show, so no listing ever counts millions of rows.

Task counters: ``total_annotations`` (not cancelled), ``cancelled_annotations`` and ``is_labeled`` (at
least one non-cancelled annotation, Label Studio's rule with overlap 1); a task's ``total_predictions`` is
counted when read (models.py). Project counters: ``task_number``, ``total_annotations_number``,
``total_predictions_number`` and ``num_tasks_with_annotations``, always the sums over their tasks; writers
of predictions move ``total_predictions_number`` by what they stored or deleted.

Every function here runs a fixed number of set-based statements (one, or two for
``refresh_task_counters``) whatever the number of tasks: call it once per batch, after writing the
batch, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Lock first, in id order, in its own statement. In id order: two refreshes over overlapping tasks
# cannot deadlock. FOR NO KEY UPDATE: it does not conflict with the KEY SHARE locks that foreign-key
# checks take when annotations/predictions are inserted, so writers of the same tasks do not deadlock
# with it either. Its own statement: under READ COMMITTED the recount that follows takes a snapshot
# after the lock was granted, so it sees what a concurrent writer committed while we waited (one
# statement would count from a snapshot taken before waiting, and lose that writer's rows).
_LOCK_TASKS = text(
    """
    SELECT count(*) FROM (
        SELECT 1 FROM task WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR NO KEY UPDATE
    ) AS locked
    """
)

# Recount the tasks' annotations, write the task rows that changed, and move each affected project's
# counters by the difference. Deltas (not a project-wide recount) keep this cheap on a project with a
# million tasks; refresh_project_counters recomputes from scratch.
_REFRESH_TASKS = text(
    """
    WITH old AS (
        SELECT id, project_id, total_annotations, cancelled_annotations, is_labeled
        FROM task WHERE id = ANY(CAST(:ids AS bigint[]))
    ),
    fresh AS (
        SELECT old.id,
               COALESCE(a.done, 0) AS total_annotations,
               COALESCE(a.cancelled, 0) AS cancelled_annotations
        FROM old
        LEFT JOIN (
            SELECT task_id,
                   count(*) FILTER (WHERE NOT was_cancelled) AS done,
                   count(*) FILTER (WHERE was_cancelled) AS cancelled
            FROM annotation WHERE task_id = ANY(CAST(:ids AS bigint[])) GROUP BY task_id
        ) a ON a.task_id = old.id
    ),
    changed AS (
        UPDATE task AS t
        SET total_annotations = fresh.total_annotations,
            cancelled_annotations = fresh.cancelled_annotations,
            is_labeled = fresh.total_annotations > 0
        FROM fresh
        WHERE t.id = fresh.id
          AND (t.total_annotations, t.cancelled_annotations, t.is_labeled)
              IS DISTINCT FROM (fresh.total_annotations, fresh.cancelled_annotations,
                                fresh.total_annotations > 0)
        RETURNING t.id
    ),
    delta AS (
        SELECT old.project_id,
               sum(fresh.total_annotations - old.total_annotations) AS annotations,
               sum((fresh.total_annotations > 0)::int - old.is_labeled::int) AS labeled
        FROM old JOIN fresh ON fresh.id = old.id JOIN changed ON changed.id = old.id
        GROUP BY old.project_id
    )
    UPDATE project AS p
    SET total_annotations_number = p.total_annotations_number + delta.annotations,
        num_tasks_with_annotations = p.num_tasks_with_annotations + delta.labeled
    FROM delta
    WHERE p.id = delta.project_id AND (delta.annotations, delta.labeled) IS DISTINCT FROM (0, 0)
    """
)

_REFRESH_PROJECT = text(
    """
    UPDATE project AS p
    SET task_number = s.tasks,
        total_annotations_number = s.annotations,
        -- the prediction table already holds predictions of chunk reports not folded into the project yet
        total_predictions_number = (SELECT count(*) FROM prediction WHERE project_id = :project) - (
            SELECT COALESCE(sum(c.predictions), 0) FROM job_chunk c JOIN job j ON j.id = c.job_id
            WHERE j.project_id = :project AND NOT c.folded
        ),
        num_tasks_with_annotations = s.labeled
    FROM (
        SELECT count(*) AS tasks,
               COALESCE(sum(total_annotations), 0) AS annotations,
               count(*) FILTER (WHERE is_labeled) AS labeled
        FROM task WHERE project_id = :project
    ) AS s
    WHERE p.id = :project
    """
)

_ADD_TO_PROJECT = text(
    """
    UPDATE project
    SET task_number = task_number + :tasks,
        total_annotations_number = total_annotations_number + :annotations,
        total_predictions_number = total_predictions_number + :predictions,
        num_tasks_with_annotations = num_tasks_with_annotations + :labeled
    WHERE id = :project
    """
)


async def refresh_task_counters(session: AsyncSession, task_ids: Sequence[int]) -> None:
    """Recount annotations of these tasks and move their projects' counters to match.

    Call after creating, updating or deleting annotations of existing tasks. Tasks that were deleted are
    not seen here: after deleting tasks call ``refresh_project_counters``. Writers of predictions move
    the project's count themselves (``add_to_project_counters``).
    """
    if task_ids:
        ids = sorted(set(task_ids))
        await session.execute(_LOCK_TASKS, {"ids": ids})
        await session.execute(_REFRESH_TASKS, {"ids": ids})


async def refresh_project_counters(session: AsyncSession, project_id: int) -> None:
    """Recompute a project's counters from its task rows (one scan of the project's tasks).

    Use after deleting tasks, or to repair counters; task counters must be current first.
    """
    await session.execute(_REFRESH_PROJECT, {"project": project_id})


async def add_to_project_counters(
    session: AsyncSession,
    project_id: int,
    *,
    tasks: int = 0,
    annotations: int = 0,
    predictions: int = 0,
    labeled: int = 0,
) -> None:
    """Shift a project's counters by known amounts, for writers that computed task counters themselves
    (the importer inserts tasks with their counters already set)."""
    await session.execute(
        _ADD_TO_PROJECT,
        {
            "project": project_id,
            "tasks": tasks,
            "annotations": annotations,
            "predictions": predictions,
            "labeled": labeled,
        },
    )
