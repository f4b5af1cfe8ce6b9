"""arq worker of the model gateway: bulk prediction, training and webhook delivery run here.

Start with ``python -m services.model_gateway.worker``. Shared resources (settings, one
``BackendGateway`` with its pooled backend clients, one pooled client of the annotation API) are created
once at start-up and passed to every job in ``ctx``.

A bulk chunk is: lease it from the API (which says which tasks still need predicting), predict them
through the ``BackendGateway``, report back. The API applies a report at most once, so a chunk done
twice (this worker died after predicting, Redis redelivered the job) never stores a prediction twice;
and the API's sweeper re-queues a chunk whose lease ran out, so a worker that dies loses nothing.

A Redis outage does not end the process: the worker keeps finishing (and reporting over HTTP) the
chunks it holds, polls Redis again with a capped backoff, and picks up whatever the API's sweeper puts
on the queue of the server that comes back, even an empty one. Only a Redis unreachable at start-up
(after arq's connection retries) exits non-zero, for the supervisor to restart the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
from arq.connections import RedisSettings
from arq.typing import WorkerCoroutine
from arq.worker import Worker
from pydantic import BaseModel
from redis.exceptions import RedisError

from services.model_gateway.learning import deliver_events, train_backend
from services.model_gateway.predictor import BackendGateway
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.slots import BackendSlots
from shared.gateway_contract import (
    MAX_BACKEND_TIMEOUT_S,
    ChunkAck,
    ChunkHeartbeat,
    ChunkLease,
    ChunkReport,
    PredictTasksResult,
)
from shared.jobs import QUEUE_NAME
from shared.logging import configure_logging

log = logging.getLogger(__name__)

_API_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=60.0, pool=60.0)
_DEFAULT_LEASE_S = 120.0
_API_ATTEMPTS = 4
"""Completing is idempotent, so a transient API failure (restart, deadlock victim) is simply retried."""
_REDIS_DOWN = (RedisError, OSError)
"""Redis unreachable or restarting; a connection lost mid-``WATCH`` even surfaces as a WatchError."""
_REDIS_BACKOFF_MAX_S = 2.0


class ApiCallFailed(Exception):
    """The annotation API refused or failed a call; the chunk's lease will expire and be re-queued."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


async def ping(ctx: dict[str, Any]) -> str:
    """A no-op job: lets operators and tests check that workers consume the queue."""
    return "pong"


async def _post(api: httpx.AsyncClient, path: str, body: BaseModel | None = None) -> bytes:
    content = b"{}" if body is None else body.model_dump_json().encode()
    response = await api.post(path, content=content, headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        raise ApiCallFailed(
            f"POST {path} answered {response.status_code}: {response.text[:300]}", response.status_code
        )
    return response.content


async def _post_retrying(api: httpx.AsyncClient, path: str, body: BaseModel | None = None) -> bytes:
    """``_post`` with backoff for what a retry can fix: transport errors, 5xx, and 409 (the API rolled a
    deadlocked or serialization-failed transaction back, nothing was written). Other 4xx are final."""
    for attempt in range(1, _API_ATTEMPTS + 1):
        try:
            return await _post(api, path, body)
        except (httpx.TransportError, ApiCallFailed) as exc:
            final = isinstance(exc, ApiCallFailed) and exc.status_code < 500 and exc.status_code != 409
            if final or attempt == _API_ATTEMPTS:
                raise
            log.warning("POST %s failed (%s), retrying", path, exc)
            await asyncio.sleep(0.5 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


async def _predict_while_leased(
    api: httpx.AsyncClient, gateway: BackendGateway, chunk_id: int, lease: ChunkLease
) -> PredictTasksResult | None:
    """Predict the leased tasks, heartbeating so a slow backend does not lose the lease.

    None when the API says the chunk was cancelled, deleted (404) or finished elsewhere meanwhile: the
    work stops at once.
    """
    assert lease.backend is not None and lease.project is not None
    predicting = asyncio.create_task(gateway.predict(lease.backend, lease.project, lease.tasks))
    interval = max((lease.lease_s or _DEFAULT_LEASE_S) / 3, 0.05)
    try:
        while True:
            done, _ = await asyncio.wait({predicting}, timeout=interval)
            if done:
                return predicting.result()
            try:
                beat = ChunkHeartbeat.model_validate_json(
                    await _post(api, f"/internal/chunks/{chunk_id}/heartbeat")
                )
            except ApiCallFailed as exc:
                if exc.status_code == 404:  # the job or its project was deleted: stop calling the backend
                    return None
                log.warning("chunk %s: heartbeat failed (%s)", chunk_id, exc)
                continue
            except httpx.TransportError as exc:
                log.warning("chunk %s: heartbeat failed (%s)", chunk_id, exc)
                continue
            if beat.status != "leased":
                return None
    finally:
        if not predicting.done():
            predicting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await predicting


async def process_chunk(ctx: dict[str, Any], chunk_id: int) -> str:
    """Predict one chunk of a bulk job and write it back through the API."""
    api: httpx.AsyncClient = ctx["api"]
    gateway: BackendGateway = ctx["gateway"]
    try:
        lease = ChunkLease.model_validate_json(
            await _post_retrying(api, f"/internal/chunks/{chunk_id}/lease")
        )
    except ApiCallFailed as exc:
        if exc.status_code == 404:  # its job or project was deleted: nothing left to do
            return f"chunk {chunk_id} no longer exists"
        raise
    if lease.status != "leased":
        return f"chunk {chunk_id} already {lease.status}"
    result = PredictTasksResult()
    if lease.tasks:
        predicted = await _predict_while_leased(api, gateway, chunk_id, lease)
        if predicted is None:
            return f"chunk {chunk_id} stopped: cancelled, deleted or finished elsewhere"
        result = predicted
    report = ChunkReport(
        predictions=result.predictions, errors=result.errors, model_version=result.model_version
    )
    ack = ChunkAck.model_validate_json(
        await _post_retrying(api, f"/internal/chunks/{chunk_id}/complete", report)
    )
    return (
        f"chunk {chunk_id}: {len(result.predictions)} predictions, {len(result.errors)} errors, "
        f"{lease.skipped} skipped, {'stored' if ack.accepted else 'dropped (already done or cancelled)'}"
    )


def api_client(settings: GatewaySettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=settings.api_url.rstrip("/"),
        headers={"Authorization": f"Bearer {settings.service_token}"},
        timeout=_API_TIMEOUT,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


async def startup(ctx: dict[str, Any]) -> None:
    settings: GatewaySettings = ctx.get("settings") or GatewaySettings()
    ctx["settings"] = settings
    # Workers share each backend's max_concurrency through Redis; there can be any number of them.
    ctx["gateway"] = BackendGateway(settings, slots=BackendSlots(ctx["redis"]))
    ctx["api"] = api_client(settings)


async def shutdown(ctx: dict[str, Any]) -> None:
    if "api" in ctx:
        await ctx["api"].aclose()
    if "gateway" in ctx:
        await ctx["gateway"].aclose()


_JOB_MARGIN_S = 120.0
"""Lease, completion and event bookkeeping around a job's backend calls."""


def job_timeout_s(settings: GatewaySettings) -> float:
    """When arq may kill a job: after the longest backend call any job can make, plus bookkeeping.

    Every batch of a chunk starts its call together, so a chunk's calls end within one call deadline
    (``BackendGateway.call_deadline_s``: at least the largest backend timeout); a training call likewise.
    """
    return max(settings.call_deadline_s, MAX_BACKEND_TIMEOUT_S + settings.connect_timeout_s) + _JOB_MARGIN_S


class WorkerSettings:
    functions: list[WorkerCoroutine] = [ping, process_chunk, deliver_events, train_backend]
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE_NAME
    redis_settings = RedisSettings.from_dsn(GatewaySettings().redis_url)
    max_jobs = 16
    job_timeout = job_timeout_s(GatewaySettings())
    keep_result = 0
    """Postgres holds every outcome; a kept result would also block re-queueing the same job id."""
    poll_delay = 0.1


class ReconnectingWorker(Worker):
    """arq's worker, except that a Redis outage pauses polling instead of ending the process.

    arq lets a connection error from its poll loop end ``main()``; a restarted Redis would then take
    every worker down with it (and, under ``make run``, the whole stack). redis-py reconnects a pooled
    connection on its next command, so waiting and polling again is all a reconnect takes.
    """

    _down_since: float | None = None

    def _reap_finished(self) -> None:
        """Forget finished jobs here, so one that failed on Redis is logged, not taken for an outage.

        arq re-raises such a failure (e.g. storing the outcome of a chunk already reported to the API)
        from its poll loop, one per iteration; counted as outages they would stretch the poll backoff.
        """
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                if not task.cancelled() and task.exception() is not None:
                    log.warning("arq could not finish job %s: %r", job_id, task.exception())

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """One job at a time, so a Redis error while starting one gives back the slot arq took for it.

        arq takes a concurrency slot before it reads the job from Redis and only returns it on the
        paths it expects; a connection error there would shrink the worker by one slot per outage.
        """
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except _REDIS_DOWN:
                self.job_counter -= 1
                self.sem.release()
                raise

    async def _poll_iteration(self) -> None:
        self._reap_finished()
        try:
            await super()._poll_iteration()
        except _REDIS_DOWN as exc:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                log.warning("Redis unreachable (%s); polling again until it is back", exc)
            await asyncio.sleep(
                min(_REDIS_BACKOFF_MAX_S, max(self.poll_delay_s, (now - self._down_since) / 4))
            )
            return
        if self._down_since is not None:
            log.warning("Redis reachable again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None


def create_worker() -> ReconnectingWorker:
    return ReconnectingWorker(
        functions=WorkerSettings.functions,
        queue_name=WorkerSettings.queue_name,
        redis_settings=WorkerSettings.redis_settings,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        max_jobs=WorkerSettings.max_jobs,
        job_timeout=WorkerSettings.job_timeout,
        keep_result=WorkerSettings.keep_result,
        poll_delay=WorkerSettings.poll_delay,
    )


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway-worker", settings.log_level, settings.log_json)
    create_worker().run()


if __name__ == "__main__":
    main()
