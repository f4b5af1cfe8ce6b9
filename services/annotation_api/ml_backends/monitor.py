"""The periodic backend check: keeps state (CO/DI/ER) and model versions current without slowing reads.

A backend is claimed in a short transaction (``FOR UPDATE SKIP LOCKED``, then ``last_checked_at`` is
moved so no other API replica takes it), checked with no transaction open, and the outcome is written
in a second short transaction. No row lock is held while a slow backend answers, so event delivery and
edits of that backend never wait behind a check.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.annotation_api.db import run_after_commit
from services.annotation_api.errors import UpstreamError
from services.annotation_api.jobs.queue import ChunkQueue
from services.annotation_api.jobs.service import repredict_unlabeled
from services.annotation_api.ml_backends.gateway_client import GatewayClient
from services.annotation_api.ml_backends.service import (
    apply_check_result,
    backend_access_token,
    backend_spec,
    get_project,
    project_ref,
)
from services.annotation_api.models import MlBackend
from services.annotation_api.settings import ApiSettings
from shared.gateway_contract import CheckBackendRequest, CheckBackendResult

log = logging.getLogger(__name__)
_MAX_PER_ROUND = 200


async def check_one(
    maker: async_sessionmaker[AsyncSession],
    gateway: GatewayClient,
    queue: ChunkQueue,
    settings: ApiSettings,
) -> bool:
    """Check the next due backend; False when none is due."""
    async with maker.begin() as session:
        interval = func.make_interval(0, 0, 0, 0, 0, 0, settings.backend_check_interval_s)
        stmt = (
            select(MlBackend)
            .where(
                or_(MlBackend.last_checked_at.is_(None), MlBackend.last_checked_at < func.now() - interval)
            )
            .order_by(MlBackend.last_checked_at.nulls_first(), MlBackend.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        backend = (await session.execute(stmt)).scalar_one_or_none()
        if backend is None:
            return False
        backend.last_checked_at = func.now()
        project = await get_project(session, backend.project_id)
        request = CheckBackendRequest(
            backend=backend_spec(backend),
            project=project_ref(project),
            hostname=settings.public_url,
            access_token=await backend_access_token(session, settings, backend),
        )
    result = await gateway.check(request)
    async with maker.begin() as session:
        current = await session.get(MlBackend, backend.id, with_for_update=True)
        # Edited or deleted meanwhile: the outcome is about a configuration that no longer exists.
        if current is not None and current.url == request.backend.url:
            await _record(session, queue, settings, current, result)
    await run_after_commit(session)
    return True


async def _record(
    session: AsyncSession,
    queue: ChunkQueue,
    settings: ApiSettings,
    backend: MlBackend,
    result: CheckBackendResult,
) -> None:
    """Apply the outcome; the version read here is under the row lock, so a change is seen once."""
    project = await get_project(session, backend.project_id)
    previous = backend.model_version
    await apply_check_result(session, backend, project, result)
    if backend.model_version != previous and project.repredict_on_new_version:
        selection = {"after_periodic_check": True, "previous_model_version": previous}
        await repredict_unlabeled(session, queue, settings, backend, project, selection)


async def check_due_backends(
    maker: async_sessionmaker[AsyncSession],
    gateway: GatewayClient,
    queue: ChunkQueue,
    settings: ApiSettings,
) -> int:
    """Check every due backend once (at most ``_MAX_PER_ROUND``, so a slow round still ends)."""
    checked = 0
    while checked < _MAX_PER_ROUND:
        try:
            if not await check_one(maker, gateway, queue, settings):
                return checked
        except UpstreamError as exc:
            # The gateway, not the backend, is down: record nothing, try again next round.
            log.warning("backend check skipped: %s", exc.detail)
            return checked
        checked += 1
    return checked


async def monitor_loop(
    maker: async_sessionmaker[AsyncSession],
    gateway: GatewayClient,
    queue: ChunkQueue,
    settings: ApiSettings,
) -> None:
    while True:
        try:
            await check_due_backends(maker, gateway, queue, settings)
        except Exception:
            log.exception("periodic backend check failed")
        await asyncio.sleep(min(settings.backend_check_interval_s, 30.0))
