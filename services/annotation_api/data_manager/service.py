"""Listing and running data manager actions for a project."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.data_manager import actions as _builtin_actions  # noqa: F401 (registers)
from services.annotation_api.data_manager.registry import ActionContext, all_actions, get_action
from services.annotation_api.data_manager.selection import resolve_selection
from services.annotation_api.errors import BadRequest
from services.annotation_api.models import User
from services.annotation_api.projects.service import get_project


async def list_actions(session: AsyncSession, project_id: int) -> list[dict[str, Any]]:
    await get_project(session, project_id)
    return [registered.describe() for registered in all_actions()]


async def perform_action(
    request: Request,
    session: AsyncSession,
    user: User,
    action_id: str,
    project_id: int,
    body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    registered = get_action(action_id)
    if registered is None:
        known = ", ".join(item.id for item in all_actions())
        raise BadRequest(f"Unknown action {action_id!r}; known actions: {known}.", field="id")
    project = await get_project(session, project_id)
    selection = await resolve_selection(session, project.id, body)
    context = ActionContext(request, session, project, user, selection, body or {})
    return await registered.handler(context)
