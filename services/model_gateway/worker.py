"""arq worker of the model gateway: bulk prediction, training and webhook delivery run here.

Start with ``python -m services.model_gateway.worker``. Shared resources (settings, one
``BackendGateway`` with its pooled backend clients, one pooled client of the annotation API) are created
once at start-up and passed to every job in ``ctx``.

A bulk chunk is: lease it from the API (which says which tasks still need predicting), predict them
through the ``BackendGateway``, report back. The API applies a report at most once, so a chunk done
twice (this worker died after predicting, Redis redelivered the job) never stores a prediction twice;
and the API's sweeper re-queues a chunk whose lease ran out, so a worker that dies loses nothing.

SIGTERM (or SIGINT) drains the worker: it takes no new jobs, lets the chunks it holds finish for up to
``worker_drain_grace_s``, then stops predicting the rest and releases them to the API, which queues them
for another worker without counting the attempt; then it exits. A rolling restart thus loses nothing
and never gives a chunk up.

A Redis outage does not end the process: the worker keeps finishing (and reporting over HTTP) the
chunks it holds, polls Redis again with a capped backoff, and picks up whatever the API's sweeper puts
on the queue of the server that comes back, even an empty one. Only a Redis unreachable at start-up
(after arq's connection retries) exits non-zero, for the supervisor to restart the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from signal import Signals
from typing import Any

import aiohttp
import httpx
import orjson
import pydantic_core
import uvloop
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.typing import WorkerCoroutine
from arq.worker import Retry, Worker
from redis.exceptions import RedisError

from services.model_gateway.api_gate import ApiGate, backoff_s, hand_back
from services.model_gateway.learning import deliver_events, train_backend
from services.model_gateway.predictor import BackendGateway, Predicted
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.slots import BackendSlots
from services.model_gateway.worker_probes import ProbeServer
from shared.gateway_contract import (
    MAX_BACKEND_TIMEOUT_S,
    ChunkAck,
    ChunkHeartbeat,
    ChunkLease,
    ChunkRelease,
)
from shared.jobs import QUEUE_NAME
from shared.logging import adopted_context, configure_logging, outgoing_request_headers
from shared.metrics import WORKER_CHUNKS
from shared.runtime import tune_garbage_collector
from shared.tracing import configure_tracing

log = logging.getLogger(__name__)

_API_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=65.0, sock_connect=5.0, sock_read=120.0)
"""``connect`` includes the wait for a free pooled connection."""
_LEARNING_API_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=60.0, pool=60.0)
_API_DOWN = (aiohttp.ClientError, asyncio.TimeoutError)
"""The annotation API unreachable, or the connection lost mid-call: retried like a 5xx."""
_DEFAULT_LEASE_S = 120.0
_API_ATTEMPTS = 4
"""Completing is idempotent, so a transient API failure (restart, deadlock victim) is simply retried."""
_REDIS_DOWN = (RedisError, OSError)
"""Redis unreachable or restarting; a connection lost mid-``WATCH`` even surfaces as a WatchError."""
_REDIS_BACKOFF_MAX_S = 2.0
_BUSY_PING_EVERY_S = 1.0
_REFILL_FOR_S = 1.0
"""How long one poll iteration keeps starting queued jobs as slots free up (``_refill_as_jobs_finish``)."""
_DRAIN_MARGIN_S = 10.0
"""After the grace period, time to report or release the chunks before arq cancels what is left."""
_STALLED_AFTER_S = 60.0
_RUNNING_MARK_S = 30.0
"""How long Redis keeps a started job marked running (arq's in-progress key) unless its worker renews it."""
_RUNNING_CHECKS = 16
"""Queued job ids ``start_jobs`` asks Redis about per round trip: more than five workers of three jobs run."""
SERVICE = "gateway-worker"


class ApiCallFailed(Exception):
    """The annotation API refused or failed a call; the chunk's lease will expire and be re-queued.

    ``retry_after_s`` is set when the API said it is busy (429/503 with ``Retry-After``)."""

    def __init__(self, message: str, status_code: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


_BUSY_STATUSES = (429, 503)
_BUSY_WAIT_MAX_S = 30.0
"""The longest single back-off a ``Retry-After`` can ask for."""
_BUSY_PATIENCE_S = 600.0
"""How long a call keeps backing off a busy API before it fails like any other."""


def _retry_after_s(status: int, retry_after: str | None) -> float | None:
    """The seconds a busy API (429/503) asks the worker to wait, from ``Retry-After``; None otherwise."""
    if status not in _BUSY_STATUSES:
        return None
    try:
        seconds = float(retry_after or "")
    except ValueError:
        return None
    return min(max(seconds, 0.0), _BUSY_WAIT_MAX_S)


async def ping(ctx: dict[str, Any]) -> str:
    """A no-op job: lets operators and tests check that workers consume the queue."""
    return "pong"


class ChunkReleased(Exception):
    """The worker is stopping and the grace period ran out before the chunk's predictions did."""


@dataclass(slots=True)
class Drain:
    """Shutdown state shared by every job of the process: set once, by the signal handler."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    deadline: float | None = None

    def begin(self, grace_s: float) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + grace_s
            self.started.set()


class ChunkApi:
    """The worker's client of the API's ``/internal/chunks`` routes: one pooled aiohttp session.

    Every chunk makes at least two calls carrying all its tasks (lease, complete); aiohttp spends a fraction
    of httpx's CPU on each, as it does for the backend calls (``backend_client``). Training and event
    delivery keep the httpx client (``ctx["api"]``, ``learning``): their calls are few. A call that cannot
    connect closes the process's ``gate``: the worker takes no new job until the API is ready again.
    """

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.gate = ApiGate(self.base_url)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use (aiohttp wants a running event loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                timeout=_API_TIMEOUT,
                skip_auto_headers=("Accept-Encoding",),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(self, path: str, content: bytes) -> tuple[int, str | None, bytes]:
        """``(status, Retry-After, body)`` of ``POST path``; raises one of ``_API_DOWN``."""
        headers = {**self._headers, **outgoing_request_headers()}
        try:
            async with self._client().post(self.base_url + path, data=content, headers=headers) as response:
                return response.status, response.headers.get("Retry-After"), await response.read()
        except aiohttp.ClientConnectorError as exc:
            self.gate.close(f"{type(exc).__name__}: {exc}")
            raise

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _post(api: ChunkApi, path: str, content: bytes = b"{}") -> bytes:
    status, retry_after, body = await api.post(path, content)
    if status != 200:
        raise ApiCallFailed(
            f"POST {path} answered {status}: {body[:300].decode('utf-8', 'replace')}",
            status,
            _retry_after_s(status, retry_after),
        )
    return body


async def _post_retrying(
    api: ChunkApi,
    path: str,
    content: bytes = b"{}",
    *,
    starts_job: bool = False,
    retry_until: float | None = None,
) -> bytes:
    """``_post`` with backoff for what a retry can fix: transport errors, 5xx, and 409 (the API rolled a
    deadlocked or serialization-failed transaction back, nothing was written). Other 4xx are final.

    Those are retried ``_API_ATTEMPTS`` times, or with ``retry_until`` (a ``time.monotonic()``) until
    then: a report keeps its predictions through an API restart for as long as its lease lasts. A busy
    API (429/503 with ``Retry-After``) is waited for as it asks, without spending an attempt:
    backpressure slows a bulk job down, it does not fail its chunks. A call that ``starts_job`` and cannot
    connect at all raises at once: nothing was sent, and the job goes back on the queue (``hand_back``)."""
    attempt = 0
    busy_until = time.monotonic() + _BUSY_PATIENCE_S
    while True:
        try:
            return await _post(api, path, content)
        except (*_API_DOWN, ApiCallFailed) as exc:
            if starts_job and isinstance(exc, aiohttp.ClientConnectorError):
                raise
            busy_s = exc.retry_after_s if isinstance(exc, ApiCallFailed) else None
            if busy_s is not None and time.monotonic() < busy_until:
                await asyncio.sleep(busy_s * random.uniform(1.0, 1.5))  # jitter: not all back at once
                continue
            attempt += 1
            pause_s = backoff_s(attempt)
            final = isinstance(exc, ApiCallFailed) and exc.status_code < 500 and exc.status_code != 409
            if retry_until is None:
                final = final or attempt == _API_ATTEMPTS
            else:
                final = final or time.monotonic() + pause_s > retry_until
            if final:
                raise
            log.warning("POST %s failed (%s), retrying", path, exc)
            await asyncio.sleep(pause_s)


async def _predict_while_leased(
    api: ChunkApi, gateway: BackendGateway, chunk_id: int, lease: ChunkLease, drain: Drain
) -> Predicted | None:
    """Predict the leased tasks, heartbeating so a slow backend does not lose the lease.

    None when the API says the chunk was cancelled, deleted (404) or finished elsewhere meanwhile: the
    work stops at once. Raises ``ChunkReleased`` when the worker is draining and its grace period ends first.
    """
    assert lease.backend is not None and lease.project is not None
    predicting = asyncio.create_task(gateway.predict(lease.backend, lease.project, lease.tasks))
    stopping = asyncio.create_task(drain.started.wait())
    interval = max((lease.lease_s or _DEFAULT_LEASE_S) / 3, 0.05)
    next_beat = time.monotonic() + interval
    try:
        while True:
            wake = next_beat if drain.deadline is None else min(next_beat, drain.deadline)
            waiting = {predicting} if stopping.done() else {predicting, stopping}
            await asyncio.wait(
                waiting, timeout=max(0.0, wake - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
            if predicting.done():
                return predicting.result()
            now = time.monotonic()
            if drain.deadline is not None and now >= drain.deadline:
                raise ChunkReleased
            if now < next_beat:
                continue
            next_beat = now + interval
            try:
                beat = ChunkHeartbeat.model_validate_json(
                    await _post(api, f"/internal/chunks/{chunk_id}/heartbeat")
                )
            except ApiCallFailed as exc:
                if exc.status_code == 404:  # the job or its project was deleted: stop calling the backend
                    return None
                log.warning("chunk %s: heartbeat failed (%s)", chunk_id, exc)
                continue
            except _API_DOWN as exc:
                log.warning("chunk %s: heartbeat failed (%r)", chunk_id, exc)
                continue
            if beat.status != "leased":
                return None
    finally:
        stopping.cancel()
        if not predicting.done():
            predicting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await predicting


def parse_lease(content: bytes) -> ChunkLease:
    """The lease: its envelope validated, its tasks kept as the JSON parser built them.

    Validating the tasks as ``list[dict[str, Any]]`` copied every task dict once more, ~0.3 µs per
    bulk-predicted task. A task nested deeper than pydantic's parser goes (about 200 levels, the lease's
    own included) is read by the standard library's parser, exactly (integers beyond 64 bits stay
    integers), so the predictor can fail that task alone instead of the whole chunk. A body that is not
    JSON, or whose tasks are not all objects, gets pydantic's own error.
    """
    try:
        body = pydantic_core.from_json(content, cache_strings="keys")
    except ValueError as exc:
        if "recursion limit" not in str(exc):
            return ChunkLease.model_validate_json(content)  # refuses it, saying why
        body = json.loads(content)
    tasks = body.get("tasks") if isinstance(body, dict) else None
    if not (isinstance(tasks, list) and set(map(type, tasks)) <= {dict}):
        return ChunkLease.model_validate(body)
    lease = ChunkLease.model_validate({**body, "tasks": []})
    lease.tasks = tasks
    return lease


def encode_report(result: Predicted, sent: list[int]) -> bytes:
    """The ``ChunkReport`` body: the predictions in columns, each result as the JSON text the predictor
    wrote while validating it, which the API stores as it is. Their versions go once, as the report's
    ``model_version``, when they all share it (a chunk's nearly always do)."""
    rows = result.predictions
    predictions: dict[str, Any] = {
        "task_ids": [row.task_id for row in rows],
        "results": [row.result_json for row in rows],
        "scores": [row.score for row in rows],
    }
    if result.model_version is None and rows:
        predictions["model_versions"] = [row.model_version for row in rows]
    report = {
        "predictions": predictions,
        "errors": [{"task_id": error.task_id, "message": error.message} for error in result.errors],
        "model_version": result.model_version,
        "sent": sent,
    }
    return orjson.dumps(report)


async def process_chunk(ctx: dict[str, Any], chunk_id: int, carried: dict[str, str] | None = None) -> str:
    """Predict one chunk of a bulk job and write it back through the API.

    ``carried`` is the request id and trace context of the request that queued the chunk.
    """
    with adopted_context(carried, "process_chunk"):
        outcome, message = await _process_chunk(ctx, chunk_id)
    WORKER_CHUNKS.labels(outcome).inc()
    return message


async def _process_chunk(ctx: dict[str, Any], chunk_id: int) -> tuple[str, str]:
    api: ChunkApi = ctx["chunk_api"]
    gateway: BackendGateway = ctx["gateway"]
    try:
        lease = parse_lease(await _post_retrying(api, f"/internal/chunks/{chunk_id}/lease", starts_job=True))
    except ApiCallFailed as exc:
        if exc.status_code == 404:  # its job or project was deleted: nothing left to do
            return "gone", f"chunk {chunk_id} no longer exists"
        raise
    except aiohttp.ClientConnectorError as exc:
        raise hand_back(ctx, exc) from None
    if lease.status != "leased":
        return "gone", f"chunk {chunk_id} already {lease.status}"
    result = Predicted([], [], None)
    if lease.tasks:
        try:
            predicted = await _predict_while_leased(api, gateway, chunk_id, lease, ctx["drain"])
        except ChunkReleased:
            if await _release(api, chunk_id):
                WORKER_CHUNKS.labels("released").inc()
                raise Retry(defer=0) from None  # the job stays on the queue, for another worker
            return "unreleased", f"chunk {chunk_id} not released; re-queued when its lease expires"
        if predicted is None:
            return "stopped", f"chunk {chunk_id} stopped: cancelled, deleted or finished elsewhere"
        result = predicted
    report = encode_report(result, [task["id"] for task in lease.tasks])
    # Heartbeats renewed the lease at most a third of it ago: it lasts two thirds more at least.
    patience_s = (lease.lease_s or _DEFAULT_LEASE_S) * 2 / 3
    complete = f"/internal/chunks/{chunk_id}/complete"
    ack = ChunkAck.model_validate_json(
        await _post_retrying(api, complete, report, retry_until=time.monotonic() + patience_s)
    )
    return "completed", (
        f"chunk {chunk_id}: {len(result.predictions)} predictions, {len(result.errors)} errors, "
        f"{lease.skipped} skipped, {'stored' if ack.accepted else 'dropped (already done or cancelled)'}"
    )


async def _release(api: ChunkApi, chunk_id: int) -> bool:
    """Hand the chunk back; if the API cannot be told, its lease runs out and the sweeper re-queues it."""
    try:
        answer = ChunkRelease.model_validate_json(
            await _post_retrying(api, f"/internal/chunks/{chunk_id}/release")
        )
    except (*_API_DOWN, ApiCallFailed) as exc:
        log.warning("chunk %s: release failed (%r); it is re-queued when its lease expires", chunk_id, exc)
        return False
    log.info("chunk %s released: the worker is stopping", chunk_id)
    return answer.released


def api_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """The client training and event delivery call the API with (``learning``)."""
    return httpx.AsyncClient(
        base_url=settings.api_url.rstrip("/"),
        headers={"Authorization": f"Bearer {settings.service_token}"},
        timeout=_LEARNING_API_TIMEOUT,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


async def startup(ctx: dict[str, Any]) -> None:
    settings: GatewaySettings = ctx.get("settings") or GatewaySettings()
    ctx["settings"] = settings
    ctx.setdefault("drain", Drain())
    # Workers share each backend's max_concurrency through Redis; there can be any number of them.
    ctx["gateway"] = BackendGateway(settings, slots=BackendSlots(ctx["redis"]))
    ctx["api"] = api_client(settings)
    ctx["chunk_api"] = chunk_api = ChunkApi(settings.api_url, settings.service_token)
    ctx["api_gate"] = chunk_api.gate


async def shutdown(ctx: dict[str, Any]) -> None:
    if "api" in ctx:
        await ctx["api"].aclose()
    if "chunk_api" in ctx:
        await ctx["chunk_api"].aclose()
    if "gateway" in ctx:
        await ctx["gateway"].aclose()
    log.info("stopped")


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
    max_jobs = GatewaySettings().worker_max_jobs
    job_timeout = job_timeout_s(GatewaySettings())
    keep_result = 0
    """Postgres holds every outcome; a kept result would also block re-queueing the same job id."""
    poll_delay = 0.1
    max_tries = 100
    """arq runs a job again after a release or a shutdown (``Retry``); past this it drops the job and the
    sweeper re-queues the chunk from Postgres."""


class ReconnectingWorker(Worker):
    """arq's worker, except that a Redis outage pauses polling instead of ending the process, a signal
    drains it (see the module docstring), and it serves probes and metrics.

    arq lets a connection error from its poll loop end ``main()``; a restarted Redis would then take
    every worker down with it (and, under ``make run``, the whole stack). redis-py reconnects a pooled
    connection on its next command, so waiting and polling again is all a reconnect takes.
    """

    _down_since: float | None = None
    _last_poll: float = 0.0
    _last_busy_ping: float = 0.0
    _last_mark_renewal: float = 0.0
    settings: GatewaySettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """arq marks a job it starts as running for the longest job's timeout plus 10 s (minutes here),
        and no other worker starts it meanwhile. A worker killed between starting a chunk's job and
        leasing the chunk (so the API's sweeper sees it pending, not leased) left that chunk waiting all
        that time. Here the mark lasts ``_RUNNING_MARK_S`` and the worker renews it while the job runs
        (``_renew_running_marks``): a dead worker's jobs are started elsewhere within that time."""
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = _RUNNING_MARK_S

    async def main(self) -> None:
        probes = ProbeServer(self._alive, self._ready)
        if self.settings.worker_probe_port:
            await probes.start(self.settings.worker_probe_host, self.settings.worker_probe_port)
        try:
            await super().main()
        finally:
            await probes.aclose()

    async def _alive(self) -> str | None:
        if self._last_poll and time.monotonic() - self._last_poll > _STALLED_AFTER_S:
            return f"the poll loop has not run for {time.monotonic() - self._last_poll:.0f} s"
        return None

    async def _ready(self) -> str | None:
        drain: Drain | None = self.ctx.get("drain")
        if drain is not None and drain.started.is_set():
            return "draining: shutting down"
        if self._pool is None or not self._last_poll:
            return "starting"
        if self._down_since is not None:
            return "redis not reachable"
        gate: ApiGate = self.ctx["api_gate"]
        if not gate.is_open:
            return f"annotation API not ready: {gate.reason}"
        return None

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        """Stop taking jobs; chunks get the grace period to finish, then are released (see ``Drain``)."""
        drain: Drain = self.ctx.setdefault("drain", Drain())
        drain.begin(self.settings.worker_drain_grace_s)
        log.info("draining on %s: %d jobs running", Signals(signum).name, len(self.tasks))
        super().handle_sig_wait_for_completion(signum)

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
        """Start queued jobs while a slot is free, skipping those already running; one at a time, so a
        Redis error while starting one gives back the slot arq took for it.

        A job stays on the queue until it finishes, and arq checked every id it read with three Redis round
        trips (WATCH, EXISTS, ZSCORE) before finding it running, here or on another worker: with two
        workers, 3.5 such checks per chunk, more round trips than the chunk's own. The ids this worker runs
        are skipped without asking, the in-progress keys of the others are read pipelined,
        ``_RUNNING_CHECKS`` ids per round trip, and reading stops once no slot is free; arq's own check
        still guards the start. Reading all the ids arq read (up to 100) cost ~35 EXISTS per chunk: the
        jobs running elsewhere are the oldest, at the head of the queue, and a free slot takes one of the
        next ids.

        arq takes a concurrency slot before it reads the job from Redis and only returns it on the
        paths it expects; a connection error there would shrink the worker by one slot per outage.
        """
        candidates = [job_id for job_id in job_ids if job_id.decode() not in self.tasks]
        for start in range(0, len(candidates), _RUNNING_CHECKS):
            if self.job_counter >= self.max_jobs:
                return
            checked = candidates[start : start + _RUNNING_CHECKS]
            for job_id, elsewhere in zip(checked, await self._running_elsewhere(checked), strict=True):
                if self.job_counter >= self.max_jobs:
                    return
                if elsewhere:
                    continue
                try:
                    await super().start_jobs([job_id])
                except _REDIS_DOWN:
                    self.job_counter -= 1
                    self.sem.release()
                    raise

    async def _running_elsewhere(self, job_ids: list[bytes]) -> list[bool]:
        """Whether each job is marked running (by any worker), in one round trip."""
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(in_progress_key_prefix + job_id.decode())
            return [bool(found) for found in await pipe.execute()]

    async def _poll_iteration(self) -> None:
        self._last_poll = time.monotonic()
        self._reap_finished()
        with contextlib.suppress(*_REDIS_DOWN):  # an outage is noticed and waited out below
            await self._renew_running_marks()
        gate: ApiGate = self.ctx["api_gate"]
        if not gate.is_open and not await gate.check(self.ctx["api"]):
            await asyncio.sleep(gate.wait_s(self.poll_delay_s))
            return
        try:
            await self._check_redis_while_busy()
            await super()._poll_iteration()
            await self._refill_as_jobs_finish(gate)
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

    async def _refill_as_jobs_finish(self, gate: ApiGate) -> None:
        """While every slot is taken, read the queue again as soon as a job finishes, for up to
        ``_REFILL_FOR_S``, instead of at arq's next poll.

        arq starts jobs only when it polls, at most every ``poll_delay`` (0.1 s): a chunk that finished
        just after a poll left its slot empty until the next one, ~50 ms on average against the ~150 ms a
        1000-task chunk takes. When a slot stays free after a read, the queue had nothing for it, and the
        usual polling goes on.
        """
        deadline = time.monotonic() + _REFILL_FOR_S
        while self.allow_pick_jobs and gate.is_open and self.job_counter >= self.max_jobs:
            running = [task for task in self.tasks.values() if not task.done()]
            left = deadline - time.monotonic()
            if not running or left <= 0:
                return
            finished, _ = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                return
            self._last_poll = time.monotonic()
            self._reap_finished()
            await super()._poll_iteration()

    async def _renew_running_marks(self) -> None:
        """Every third of ``in_progress_timeout_s``, extend the running mark of each job this worker runs,
        in one round trip (``__init__`` says why the marks are short)."""
        now = time.monotonic()
        if now - self._last_mark_renewal < self.in_progress_timeout_s / 3:
            return
        running = [job_id for job_id, task in self.tasks.items() if not task.done()]
        if not running:
            return
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in running:
                pipe.pexpire(in_progress_key_prefix + job_id, int(self.in_progress_timeout_s * 1000))
            await pipe.execute()
        self._last_mark_renewal = now

    async def _check_redis_while_busy(self) -> None:
        """Ping Redis once a second while every job slot is taken.

        arq reads the queue only when a slot is free, so a worker whose jobs are all running (chunks
        waiting on a slow backend) sent Redis nothing and stayed ready through an outage.
        """
        now = time.monotonic()
        if self.job_counter >= self.max_jobs and now - self._last_busy_ping >= _BUSY_PING_EVERY_S:
            self._last_busy_ping = now
            await self.pool.ping()


def create_worker(settings: GatewaySettings | None = None) -> ReconnectingWorker:
    settings = settings or GatewaySettings()
    worker = ReconnectingWorker(
        functions=WorkerSettings.functions,
        queue_name=WorkerSettings.queue_name,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        max_jobs=settings.worker_max_jobs,
        job_timeout=WorkerSettings.job_timeout,
        keep_result=WorkerSettings.keep_result,
        poll_delay=WorkerSettings.poll_delay,
        max_tries=WorkerSettings.max_tries,
        ctx={"settings": settings},
        job_completion_wait=math.ceil(settings.worker_drain_grace_s + _DRAIN_MARGIN_S),
    )
    worker.settings = settings
    return worker


class _QuietJobLines(logging.Filter):
    """arq logs every job start and end at INFO; those are per-chunk chatter, so DEBUG here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg.startswith("%6.2fs"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def main() -> None:
    settings = GatewaySettings()
    configure_logging(SERVICE, settings.log_level, settings.log_json)
    configure_tracing(SERVICE, settings.otlp_endpoint)
    logging.getLogger("arq.worker").addFilter(_QuietJobLines())
    # The event loop the services run on too: its sockets cost a fraction of asyncio's per call.
    asyncio.set_event_loop(uvloop.new_event_loop())
    worker = create_worker(settings)
    tune_garbage_collector()
    worker.run()


if __name__ == "__main__":
    main()
