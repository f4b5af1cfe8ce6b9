"""Which tasks a data manager request is about: Label Studio's ``selectedItems`` turned into SQL.

``{"selectedItems": {"all": false, "included": [ids]}}`` is those tasks, ``{"all": true, "excluded":
[ids]}`` is every task but those, and a missing body or ``selectedItems`` is every task. Ids of other
projects' tasks are ignored: the selection is always inside the project. The result is a SQL condition
(never a materialised list unless asked), so selecting a million tasks costs nothing up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, all_, any_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.db import scanning_in_index_order
from services.annotation_api.errors import BadRequest
from services.annotation_api.ids import BIGINT_MAX, id_array
from services.annotation_api.models import Task


@dataclass(frozen=True)
class TaskSelection:
    """Selected tasks of one project, bound to the request's session."""

    session: AsyncSession
    project_id: int
    all: bool
    included: tuple[int, ...] = ()
    excluded: tuple[int, ...] = ()

    def condition(self) -> ColumnElement[bool]:
        """A WHERE condition on ``Task`` selecting exactly these tasks."""
        return self._condition(Task.project_id == self.project_id)

    def _condition(self, in_project: ColumnElement[bool]) -> ColumnElement[bool]:
        if not self.all:
            return in_project & (Task.id == any_(id_array(self.included)))
        if self.excluded:
            return in_project & (Task.id != all_(id_array(self.excluded)))
        return in_project

    def task_ids(self) -> Select[int]:
        """``SELECT task.id`` of the selection, for ``column.in_(selection.task_ids())``."""
        return select(Task.id).where(self.condition())

    async def ids(self) -> list[int]:
        """The selected task ids in ascending order."""
        return list((await self.session.scalars(self.task_ids().order_by(Task.id))).all())

    async def lock_ids(self) -> list[int]:
        """Like ``ids`` but locks the tasks (``FOR UPDATE``, in id order) so that counters recomputed
        later in the transaction cannot miss a concurrent writer's rows."""
        stmt = self.task_ids().order_by(Task.id).with_for_update()
        return list((await self.session.scalars(stmt)).all())

    async def count(self) -> int:
        stmt = select(func.count()).select_from(Task).where(self.condition())
        return int((await self.session.execute(stmt)).scalar_one())

    async def size(self, task_number: int) -> int:
        """How many tasks are selected, at a cost bounded by the request (not by the project):
        the project's ``task_number`` counter minus the excluded ids that are in it."""
        if not self.all:
            return await self.count()
        if not self.excluded:
            return task_number
        stmt = (
            select(func.count())
            .select_from(Task)
            .where(Task.project_id == self.project_id, Task.id == any_(id_array(self.excluded)))
        )
        return task_number - int((await self.session.execute(stmt)).scalar_one())

    def window_ids(self, after: int, limit: int) -> Select[int]:
        """``SELECT task.id`` of the next ``limit`` selected ids above ``after``, ascending: one batch of a
        background job, for a statement that keeps the ids in Postgres."""
        return self.ids_above(after).limit(limit)

    def ids_above(self, after: int) -> Select[int]:
        """The selected ids above ``after`` in id order, read along the task index on ``(project_id, id)``.

        The project is bounded as a range (``BETWEEN p AND p``) and the rows ordered by ``(project_id, id)``:
        with ``project_id = p``, that order is the same as ``id`` alone to the planner, which could then walk
        the primary key from ``after`` filtering on the project, assuming its tasks spread over all ids. A
        job's first window in a project newer than others read every older project's task that way (a
        window of 5,000 behind 100,000 older tasks: 105,000 rows), whenever the rows were to be locked or
        the visibility map lagged recent writes. Run it under ``db.scanning_in_index_order`` (``window``
        does): with statistics older than the project's tasks, it was read by a bitmap scan and a sort.
        """
        in_project = Task.project_id.between(self.project_id, self.project_id)
        stmt = select(Task.id).where(self._condition(in_project), Task.id > after)
        return stmt.order_by(Task.project_id, Task.id)

    async def window(self, after: int, limit: int, *, lock: bool = False) -> list[int]:
        """The ids of ``window_ids``. ``lock`` takes them ``FOR UPDATE`` (in id order, so batches and
        writers cannot deadlock). Fewer than ``limit`` ids means the selection's end, which jobs rely on:
        a task deleted while the window waits for its lock gives its place to the next one."""
        stmt = self.window_ids(after, limit)
        if lock:
            stmt = stmt.with_for_update()
        async with scanning_in_index_order(self.session):
            return list((await self.session.scalars(stmt)).all())

    def to_params(self) -> dict[str, Any]:
        """The selection as a job stores it (the runner rebuilds it with ``from_params``)."""
        return {"all": self.all, "included": list(self.included), "excluded": list(self.excluded)}

    @classmethod
    def from_params(cls, session: AsyncSession, project_id: int, params: Mapping[str, Any]) -> TaskSelection:
        return cls(
            session,
            project_id,
            all=bool(params.get("all", True)),
            included=tuple(params.get("included", ())),
            excluded=tuple(params.get("excluded", ())),
        )

    def summary(self, source: str) -> dict[str, Any]:
        """What a job shows of its selection: sizes, not id lists, so a job row stays small."""
        return {
            "source": source,
            "all": self.all,
            "included": len(self.included),
            "excluded": len(self.excluded),
        }


def _id_list(value: Any, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= BIGINT_MAX for item in value
    ):
        raise BadRequest(f"{field} must be a list of task ids (positive integers).", field=field)
    return tuple(value)


def _has_filter_items(filters: Any) -> bool:
    if filters is None:
        return False
    if not isinstance(filters, Mapping):
        raise BadRequest("filters must be an object like {conjunction, items}.", field="filters")
    return bool(filters.get("items"))


async def resolve_selection(
    session: AsyncSession, project_id: int, body: Mapping[str, Any] | None
) -> TaskSelection:
    """Parse a data manager request body into the project's selected tasks; 400 naming the field.

    ``ordering`` is accepted and ignored. Data manager ``filters`` are not evaluated: with an explicit
    ``included`` list they are ignored (the ids were picked from the filtered view), but "all tasks"
    plus non-empty filters is refused, since acting on every task would exceed what the user sees.
    """
    raw = None if body is None else body.get("selectedItems")
    if raw is None:
        selection = TaskSelection(session, project_id, all=True)
    elif not isinstance(raw, Mapping):
        raise BadRequest(
            'selectedItems must be {"all": false, "included": [ids]} or {"all": true, "excluded": [ids]}.',
            field="selectedItems",
        )
    elif not isinstance(raw.get("all"), bool):
        raise BadRequest("selectedItems.all must be true or false.", field="selectedItems.all")
    elif raw["all"]:
        excluded = _id_list(raw.get("excluded", []), "selectedItems.excluded")
        selection = TaskSelection(session, project_id, all=True, excluded=excluded)
    else:
        if "included" not in raw:
            raise BadRequest(
                'selectedItems.included is required when "all" is false.', field="selectedItems.included"
            )
        included = _id_list(raw["included"], "selectedItems.included")
        selection = TaskSelection(session, project_id, all=False, included=included)
    if selection.all and body is not None and _has_filter_items(body.get("filters")):
        raise BadRequest(
            "Data manager filters are not supported with an all-tasks selection; "
            "select the tasks by id (selectedItems.included) instead.",
            field="filters.items",
        )
    return selection
