"""The periodic backend check: keeps state (CO/DI/ER) and model versions current without slowing reads.

Each backend is checked in its own short transaction that holds its row with ``FOR UPDATE SKIP
LOCKED``, so several API replicas share the work instead of checking the same backend twice.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.annotation_api.errors import UpstreamError
from services.annotation_api.ml_backends.gateway_client import GatewayClient
from services.annotation_api.ml_backends.service import apply_check_result, get_project, run_check
from services.annotation_api.models import MlBackend
from services.annotation_api.settings import ApiSettings

log = logging.getLogger(__name__)
_MAX_PER_ROUND = 200


async def check_next_due(session: AsyncSession, gateway: GatewayClient, settings: ApiSettings) -> bool:
    """Check one backend not checked within the interval; False when none is due."""
    interval = func.make_interval(0, 0, 0, 0, 0, 0, settings.backend_check_interval_s)
    stmt = (
        select(MlBackend)
        .where(or_(MlBackend.last_checked_at.is_(None), MlBackend.last_checked_at < func.now() - interval))
        .order_by(MlBackend.last_checked_at.nulls_first(), MlBackend.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    backend = (await session.execute(stmt)).scalar_one_or_none()
    if backend is None:
        return False
    project = await get_project(session, backend.project_id)
    result = await run_check(session, gateway, settings, backend, project)
    await apply_check_result(session, backend, project, result)
    return True


async def check_due_backends(
    maker: async_sessionmaker[AsyncSession], gateway: GatewayClient, settings: ApiSettings
) -> int:
    """Check every due backend once (at most ``_MAX_PER_ROUND``, so a slow round still ends)."""
    checked = 0
    while checked < _MAX_PER_ROUND:
        try:
            async with maker.begin() as session:
                if not await check_next_due(session, gateway, settings):
                    return checked
        except UpstreamError as exc:
            # The gateway, not the backend, is down: record nothing, try again next round.
            log.warning("backend check skipped: %s", exc.detail)
            return checked
        checked += 1
    return checked


async def monitor_loop(
    maker: async_sessionmaker[AsyncSession], gateway: GatewayClient, settings: ApiSettings
) -> None:
    while True:
        try:
            await check_due_backends(maker, gateway, settings)
        except Exception:
            log.exception("periodic backend check failed")
        await asyncio.sleep(min(settings.backend_check_interval_s, 30.0))
