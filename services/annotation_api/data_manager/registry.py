"""The action registry: ``GET /api/dm/actions`` lists it, ``POST`` dispatches by ``id``.

Add an action with one decorator in any module imported at start-up::

    @action("retrieve_tasks_predictions", title="Retrieve predictions", order=10)
    async def retrieve(ctx: ActionContext) -> dict[str, Any]:
        ids = await ctx.selection.ids()
        ...
        return {"processed_items": len(ids), "detail": "..."}

Handlers run inside the request's transaction (never commit; use ``after_commit`` for background work)
and return the response body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.data_manager.selection import TaskSelection
from services.annotation_api.models import Project, User


@dataclass(frozen=True)
class ActionContext:
    request: Request
    session: AsyncSession
    project: Project
    user: User
    selection: TaskSelection
    #: The whole request body (``{}`` when none): actions may read their own parameters from it.
    body: Mapping[str, Any]


ActionHandler = Callable[[ActionContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Action:
    id: str
    title: str
    order: int
    handler: ActionHandler
    #: Label Studio's confirmation dialog, e.g. ``{"text": "…", "type": "confirm"}``.
    dialog: dict[str, Any] | None = None
    permission: str = "tasks.change"
    experimental: bool = False

    def describe(self) -> dict[str, Any]:
        """The entry ``GET /api/dm/actions`` shows (Label Studio's fields)."""
        return {
            "id": self.id,
            "title": self.title,
            "order": self.order,
            "permission": self.permission,
            "experimental": self.experimental,
            "dialog": self.dialog,
        }


_ACTIONS: dict[str, Action] = {}


def register_action(new: Action) -> Action:
    if new.id in _ACTIONS:
        raise ValueError(f"data manager action {new.id!r} is already registered")
    _ACTIONS[new.id] = new
    return new


def action(
    action_id: str,
    *,
    title: str,
    order: int,
    dialog: dict[str, Any] | None = None,
    permission: str = "tasks.change",
    experimental: bool = False,
) -> Callable[[ActionHandler], ActionHandler]:
    """Decorator form of ``register_action``."""

    def register(handler: ActionHandler) -> ActionHandler:
        register_action(Action(action_id, title, order, handler, dialog, permission, experimental))
        return handler

    return register


def get_action(action_id: str) -> Action | None:
    return _ACTIONS.get(action_id)


def all_actions() -> list[Action]:
    return sorted(_ACTIONS.values(), key=lambda registered: (registered.order, registered.id))


def confirm(text: str) -> dict[str, Any]:
    """A Label Studio confirmation dialog."""
    return {"title": "Destructive action", "text": text, "type": "confirm", "form": None}
