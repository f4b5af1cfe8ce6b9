"""The periodic backend check: keeps state (CO/DI/ER) and model versions current without slowing reads.

A backend is claimed in a short transaction (``FOR UPDATE SKIP LOCKED``, then ``last_checked_at`` is
moved so no other API replica takes it), checked with no transaction open, and the outcome is written
in a second short transaction. No row lock is held while a slow backend answers, so event delivery and
edits of that backend never wait behind a check. The same check runs for one backend right after
events reached it (``Rechecks``), since online learning may just have given it a new model version.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.annotation_api.db import LoopFailures, run_after_commit
from services.annotation_api.errors import UpstreamError
from services.annotation_api.jobs.service import repredict_unlabeled
from services.annotation_api.ml_backends.gateway_client import GatewayClient
from services.annotation_api.ml_backends.service import (
    apply_check_result,
    backend_access_token,
    backend_spec,
    get_project,
    project_ref,
)
from services.annotation_api.models import MlBackend, Project
from services.annotation_api.settings import ApiSettings
from shared.gateway_contract import CheckBackendRequest, CheckBackendResult

log = logging.getLogger(__name__)
_MAX_PER_ROUND = 200


async def _claim(session: AsyncSession, settings: ApiSettings, backend: MlBackend) -> CheckBackendRequest:
    """Mark the (row-locked) backend as checked now and build its check request."""
    backend.last_checked_at = func.now()
    project = await get_project(session, backend.project_id)
    return CheckBackendRequest(
        backend=backend_spec(backend),
        project=project_ref(project),
        hostname=settings.public_url,
        access_token=await backend_access_token(session, settings, backend),
    )


async def _check_claimed(
    maker: async_sessionmaker[AsyncSession],
    gateway: GatewayClient,
    settings: ApiSettings,
    backend_id: int,
    request: CheckBackendRequest,
) -> None:
    """Check with no transaction open, then record the outcome in a short one."""
    result = await gateway.check(request)
    async with maker.begin() as session:
        current = await session.get(MlBackend, backend_id, with_for_update=True)
        # Edited or deleted meanwhile: the outcome is about a configuration that no longer exists.
        if current is not None and current.url == request.backend.url:
            await _record(session, settings, current, result)
    await run_after_commit(session)


async def check_one(
    maker: async_sessionmaker[AsyncSession],
    gateway: GatewayClient,
    settings: ApiSettings,
) -> bool:
    """Check the next due backend; False when none is due."""
    async with maker.begin() as session:
        interval = func.make_interval(0, 0, 0, 0, 0, 0, settings.backend_check_interval_s)
        stmt = (
            select(MlBackend)
            .where(
                or_(MlBackend.last_checked_at.is_(None), MlBackend.last_checked_at < func.now() - interval),
                MlBackend.project_id.in_(select(Project.id).where(Project.deleting.is_(False))),
            )
            .order_by(MlBackend.last_checked_at.nulls_first(), MlBackend.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        backend = (await session.execute(stmt)).scalar_one_or_none()
        if backend is None:
            return False
        request = await _claim(session, settings, backend)
    await _check_claimed(maker, gateway, settings, backend.id, request)
    return True


async def check_backend(
    maker: async_sessionmaker[AsyncSession],
    gateway: GatewayClient,
    settings: ApiSettings,
    backend_id: int,
) -> None:
    """Check one backend now, exactly as the periodic check does (nothing if it was deleted)."""
    async with maker.begin() as session:
        backend = await session.get(MlBackend, backend_id, with_for_update=True)
        if backend is None:
            return
        request = await _claim(session, settings, backend)
    await _check_claimed(maker, gateway, settings, backend_id, request)


class Rechecks:
    """Re-checks of one backend right after events reached it, so a model version that online learning
    produced shows within seconds instead of at the next periodic check.

    At most one runs per backend; a request while it runs makes it go once more afterwards, so the
    version recorded is never older than the last event delivered.
    """

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        gateway: GatewayClient,
        settings: ApiSettings,
    ) -> None:
        self._args = (maker, gateway, settings)
        self._running: dict[int, asyncio.Task[None]] = {}
        self._again: set[int] = set()

    def request(self, backend_id: int) -> None:
        if backend_id in self._running:
            self._again.add(backend_id)
            return
        task = asyncio.create_task(self._run(backend_id), name=f"backend-recheck-{backend_id}")
        self._running[backend_id] = task

    async def _run(self, backend_id: int) -> None:
        try:
            while True:
                self._again.discard(backend_id)
                try:
                    await check_backend(*self._args, backend_id)
                except UpstreamError as exc:
                    log.warning("backend %s re-check skipped: %s", backend_id, exc.detail)
                except Exception:
                    log.exception("backend %s re-check failed", backend_id)
                if backend_id not in self._again:
                    return
        finally:
            self._running.pop(backend_id, None)

    async def aclose(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _record(
    session: AsyncSession,
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
        await repredict_unlabeled(session, settings, backend, project, selection)


async def check_due_backends(
    maker: async_sessionmaker[AsyncSession],
    gateway: GatewayClient,
    settings: ApiSettings,
) -> int:
    """Check every due backend once (at most ``_MAX_PER_ROUND``, so a slow round still ends)."""
    checked = 0
    while checked < _MAX_PER_ROUND:
        try:
            if not await check_one(maker, gateway, settings):
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
    settings: ApiSettings,
) -> None:
    failures = LoopFailures("periodic backend check")
    while True:
        try:
            await check_due_backends(maker, gateway, settings)
            failures.succeeded()
        except Exception as exc:
            failures.failed(exc)
        await asyncio.sleep(min(settings.backend_check_interval_s, 30.0))
