"""arq jobs of the learning loop: annotation events to backends, in order, and training runs.

``deliver_events(backend_id)`` sends a backend's pending events (the API's outbox after the backend's
cursor) one by one to its ``/webhook`` and acknowledges each batch the backend accepted, so the cursor
only moves past 2xx answers. A failure is reported to the API, which counts the attempts an event itself
may be to blame for (the backend answered an error, or it cannot be encoded) and parks it after a
bounded number: the run then goes on with the next events. Any other failure stops the run: the events
stay pending, in order, and the API's delivery loop rings again later, so a dead backend delays events
but never loses them.

Exactly one worker delivers a backend's events at a time (a Redis lock per backend, extended every third
of its lifetime while held, so a webhook call slower than the lifetime — three attempts and two
Retry-After waits — cannot let a second deliverer in and break the order). A run that finds
the lock taken leaves a flag before giving up; the holder looks at the flag after releasing the lock and
goes round again, so an event written while a delivery was finishing is never left waiting.

``train_backend(job_id)`` sends START_TRAINING (``POST /train`` for 1.0.x backends), re-checks the
backend for a new model version, and reports both to the API, which records them on the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, cast

import httpx
import orjson
from arq import ArqRedis
from pydantic import BaseModel, ValidationError

from services.model_gateway.api_gate import backoff_s, hand_back
from services.model_gateway.backend_client import CallFailure
from services.model_gateway.predictor import BackendGateway
from shared.gateway_contract import BackendSpec, WebhookRequest, WebhookResult
from shared.learning_contract import (
    EventFailed,
    EventFailedOutcome,
    EventsAck,
    PendingEvent,
    PendingEvents,
    TrainOutcome,
    TrainReport,
    TrainStart,
    delivery_again_key,
    delivery_lock_key,
)
from shared.logging import adopted_context, outgoing_request_headers
from shared.protocol import ProtocolError

log = logging.getLogger(__name__)

EVENTS_PER_BATCH = 100
_AGAIN_TTL_S = 3600
_REPORT_PATIENCE_S = 120.0
"""How long a training outcome keeps being reported to an API that is down or failing (a restart)."""
_BACKEND_DELETED = "the backend was deleted"

# Compare-and-delete / compare-and-extend: a lock is only ever touched by the run holding it.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"


class ApiRefused(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


async def _call(
    api: httpx.AsyncClient, method: str, path: str, body: BaseModel | None = None, **kw: Any
) -> bytes:
    content = None if body is None else body.model_dump_json().encode()
    headers = outgoing_request_headers()
    if content is not None:
        headers["Content-Type"] = "application/json"
    response = await api.request(method, path, content=content, headers=headers, **kw)
    if response.status_code != 200:
        raise ApiRefused(
            f"{method} {path} answered {response.status_code}: {response.text[:300]}", response.status_code
        )
    return response.content


# ---- event delivery --------------------------------------------------------------------------


class _Lock:
    def __init__(self, redis: ArqRedis, backend_id: int, ttl_s: float) -> None:
        self.redis = redis
        self.key = delivery_lock_key(backend_id)
        self.token = uuid.uuid4().hex
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.lost = False

    async def acquire(self) -> bool:
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Extend the lock every third of its lifetime while the block runs; ``lost`` once it could not."""

        async def keep() -> None:
            while not self.lost:
                await asyncio.sleep(self.ttl_ms / 3000)
                self.lost = not await self.extend()

        keeper = asyncio.create_task(keep())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _script(self, script: str, *args: str) -> bool:
        result = self.redis.eval(script, 1, self.key, self.token, *args)
        return bool(await cast(Awaitable[int], result))

    async def extend(self) -> bool:
        return await self._script(_EXTEND, str(self.ttl_ms))

    async def release(self) -> None:
        await self._script(_RELEASE)


def _pending(raw: bytes) -> PendingEvents:
    """Read the events with orjson, then validate each without re-parsing its payload: a payload nested
    deeper than pydantic's JSON reader goes (~200 levels) must fail alone, when it is sent, not the batch."""
    data = orjson.loads(raw)
    return PendingEvents(
        backend=BackendSpec.model_validate(data["backend"]),
        events=[PendingEvent.model_validate(event) for event in data["events"]],
    )


class _Acks:
    """What this run delivered (``delivered``, a count), and of that what it has not acknowledged yet."""

    def __init__(self) -> None:
        self.delivered = 0
        self.last: int | None = None
        self.redelivered: list[int] = []

    def add(self, event: PendingEvent) -> None:
        self.delivered += 1
        self.last = event.id if self.last is None else max(self.last, event.id)
        if event.redrive:
            self.redelivered.append(event.id)

    async def send(self, api: httpx.AsyncClient, backend_id: int) -> None:
        if self.last is None:
            return
        ack = EventsAck(last_event_id=self.last, redelivered=self.redelivered)
        await _call(api, "POST", f"/internal/backends/{backend_id}/events/ack", ack)
        self.last, self.redelivered = None, []


async def _refused(
    api: httpx.AsyncClient, backend_id: int, event: PendingEvent, result: WebhookResult
) -> EventFailedOutcome:
    """Report a failed attempt; the API counts it (or not) and says whether it parked the event."""
    error = result.error or f"the backend answered {result.status_code}"
    # A hostile backend's text must not make the report itself unstorable (NUL, lone surrogates).
    error = error[:2000].encode("utf-8", "replace").decode().replace("\x00", "\\u0000")[:2000]
    failure = EventFailed(
        error=error,
        status_code=result.status_code if result.status_code and 100 <= result.status_code <= 599 else None,
        unsendable=result.unsendable,
    )
    path = f"/internal/backends/{backend_id}/events/{event.id}/failed"
    return EventFailedOutcome.model_validate_json(await _call(api, "POST", path, failure))


async def _drain(ctx: dict[str, Any], backend_id: int, lock: _Lock) -> tuple[int, str | None]:
    """Deliver until nothing is pending; (events delivered, why it stopped early or None).

    A backend deleted meanwhile (any of the API's answers is a 404) ends the run quietly: nothing is left
    to deliver to.
    """
    api: httpx.AsyncClient = ctx["api"]
    acks = _Acks()
    try:
        while True:
            raw = await _call(
                api, "GET", f"/internal/backends/{backend_id}/events", params={"limit": EVENTS_PER_BATCH}
            )
            pending = _pending(raw)
            if not pending.events:
                return acks.delivered, None
            stopped = await _deliver_batch(api, ctx["gateway"], backend_id, pending, lock, acks)
            if stopped is not None:
                return acks.delivered, stopped
    except ApiRefused as exc:
        if exc.status_code == 404:
            return acks.delivered, _BACKEND_DELETED
        raise


async def _deliver_batch(
    api: httpx.AsyncClient,
    gateway: BackendGateway,
    backend_id: int,
    pending: PendingEvents,
    lock: _Lock,
    acks: _Acks,
) -> str | None:
    """One batch in order, acknowledged at its end; why it stopped early, or None.

    An event the API parks (refused too often, or unsendable) is skipped and the run goes on: what was
    delivered before it is acknowledged first, so the cursor moves past it in order.
    """
    stopped: str | None = None
    for event in pending.events:
        result = await gateway.webhook(WebhookRequest(backend=pending.backend, payload=event.payload))
        if not result.ok:
            await acks.send(api, backend_id)
            outcome = await _refused(api, backend_id, event, result)
            if not outcome.parked:
                stopped = f"event {event.id} ({event.action}) not accepted: {result.error}"
                break
            log.warning(
                "backend %s: event %s parked after %d attempts: %s",
                backend_id,
                event.id,
                outcome.attempts,
                result.error,
            )
        else:
            acks.add(event)
        if lock.lost:
            stopped = "lost the delivery lock (Redis no longer held it)"
            break
    await acks.send(api, backend_id)
    return stopped


async def deliver_events(ctx: dict[str, Any], backend_id: int, carried: dict[str, str] | None = None) -> str:
    """Send the backend's pending annotation events to its ``/webhook``, oldest first.

    ``carried``: request id and trace context of the request that scheduled the delivery.
    """
    with adopted_context(carried, "deliver_events"):
        try:
            return await _deliver_events(ctx, backend_id)
        except httpx.ConnectError as exc:
            # Whatever this run delivered and could not acknowledge is sent again: at least once.
            raise hand_back(ctx, exc) from None


async def _deliver_events(ctx: dict[str, Any], backend_id: int) -> str:
    redis: ArqRedis = ctx["redis"]
    again = delivery_again_key(backend_id)
    delivered = 0
    while True:
        # Announce before trying the lock: a holder that is finishing sees the flag and goes round again.
        await redis.set(again, b"1", ex=_AGAIN_TTL_S)
        lock = _Lock(redis, backend_id, ctx["settings"].delivery_lock_ttl_s)
        if not await lock.acquire():
            return f"backend {backend_id}: {delivered} delivered, the running delivery takes the rest"
        try:
            await redis.delete(again)
            async with lock.kept():
                count, stopped = await _drain(ctx, backend_id, lock)
        finally:
            await lock.release()
        delivered += count
        if stopped is not None:
            level = logging.INFO if stopped == _BACKEND_DELETED else logging.WARNING
            log.log(level, "backend %s: delivery stopped after %d events: %s", backend_id, delivered, stopped)
            return f"backend {backend_id}: {delivered} delivered, stopped: {stopped}"
        if not await redis.getdel(again):
            return f"backend {backend_id}: {delivered} delivered"


# ---- training --------------------------------------------------------------------------------


async def _is_legacy(gateway: BackendGateway, backend: BackendSpec) -> bool:
    """1.0.x backends (``/health`` says ``v2: false``) train through ``POST /train``."""
    try:
        return (await gateway.health(backend)).is_legacy
    except (CallFailure, ProtocolError, ValidationError):
        return False  # the training call itself will report what is wrong


async def _report(api: httpx.AsyncClient, job_id: int, report: TrainReport) -> TrainOutcome:
    """Finishing is idempotent on the API side, so a transport failure or a 5xx is retried, for up to
    ``_REPORT_PATIENCE_S``: a training run can take long, and an API restarting meanwhile must not lose
    its outcome."""
    path = f"/internal/train-jobs/{job_id}/finish"
    give_up_at = time.monotonic() + _REPORT_PATIENCE_S
    attempt = 0
    while True:
        try:
            return TrainOutcome.model_validate_json(await _call(api, "POST", path, report))
        except (httpx.TransportError, ApiRefused) as exc:
            attempt += 1
            pause_s = backoff_s(attempt)
            if (isinstance(exc, ApiRefused) and exc.status_code < 500) or (
                time.monotonic() + pause_s > give_up_at
            ):
                raise
            log.warning("training job %s: report failed (%s), retrying", job_id, exc)
            await asyncio.sleep(pause_s)


async def train_backend(ctx: dict[str, Any], job_id: int, carried: dict[str, str] | None = None) -> str:
    """Run a training job: START_TRAINING, re-check the backend, report both to the API.

    ``carried``: request id and trace context of the request that started the job.
    """
    with adopted_context(carried, "train_backend"):
        return await _train_backend(ctx, job_id)


async def _train_backend(ctx: dict[str, Any], job_id: int) -> str:
    api: httpx.AsyncClient = ctx["api"]
    gateway: BackendGateway = ctx["gateway"]
    try:
        raw = await _call(api, "POST", f"/internal/train-jobs/{job_id}/start")
    except httpx.ConnectError as exc:
        raise hand_back(ctx, exc) from None
    try:
        # orjson, then Python-mode validation: deep extra_params stop pydantic's JSON reader, not this.
        start = TrainStart.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        # The job is running now: it must end, visibly, not wait for the watchdog.
        failure = WebhookResult(
            ok=False, error=f"worker could not read the training job: {str(exc)[:500]}", unsendable=True
        )
        outcome = await _report(api, job_id, TrainReport(webhook=failure))
        return f"training job {job_id}: {outcome.job_status} (unreadable start)"
    if not start.go or start.backend is None:
        return f"training job {job_id}: nothing to do"
    try:
        legacy = await _is_legacy(gateway, start.backend)
        request = WebhookRequest(backend=start.backend, payload=start.payload, legacy_train=legacy)
        webhook = await gateway.webhook(request)
        check = await gateway.check(start.check) if webhook.ok and start.check is not None else None
    except Exception as exc:  # a bug here must still end the job, visibly
        log.exception("training job %s failed in the worker", job_id)
        webhook, check = WebhookResult(ok=False, error=f"worker error: {type(exc).__name__}: {exc}"), None
    outcome = await _report(api, job_id, TrainReport(webhook=webhook, check=check))
    return f"training job {job_id}: {outcome.job_status}, model version {outcome.model_version!r}"
