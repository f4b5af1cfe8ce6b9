"""``BackendGateway``: everything the gateway asks of an ML backend (check, predict, webhook).

One instance per process (the HTTP app and each worker hold one), because it owns what must be
shared by every caller: pooled clients, circuit breakers, retry budgets and concurrency limits per
backend. Predictions come back validated against the project's label config and tagged with a
resolved model version; whatever cannot be predicted becomes a per-task error saying why, so a bulk
job reports exact failures instead of a silent gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from services.model_gateway.address_policy import AddressPolicy, Resolver, system_resolver
from services.model_gateway.backend_client import BackendCaller, BackendResponse, CallFailure, FailureKind
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.slots import BackendSlots
from shared.gateway_contract import (
    BackendSpec,
    CheckBackendRequest,
    CheckBackendResult,
    CheckFailure,
    PredictTasksResult,
    ProjectRef,
    TaskError,
    TaskPrediction,
    WebhookRequest,
    WebhookResult,
)
from shared.json_values import find_bad_value
from shared.label_config import LabelConfig, LabelConfigError, parse_label_config_cached
from shared.prediction_validation import validate_result
from shared.protocol import (
    CountMismatch,
    HealthResponse,
    ProtocolError,
    SetupRequest,
    SetupResponse,
    WebhookEvent,
    decode_json,
    normalize_predict_response,
)

log = logging.getLogger(__name__)

UNDEFINED_VERSION = "undefined"
"""Stored on predictions whose backend named no version at all (per prediction, response or /setup)."""

_BISECT_STATUS = frozenset({400, 413, 422, 500})
"""Whole-batch failures that one bad task can cause: split the batch to find it (answers too large
to hold are split too)."""
_MAX_PROBLEMS_SHOWN = 5
_MAX_CONFIGS = 128

_CHECK_FAILURE = {
    FailureKind.INVALID_URL: CheckFailure.POLICY,
    FailureKind.POLICY: CheckFailure.POLICY,
    FailureKind.DNS: CheckFailure.DNS,
    FailureKind.REFUSED: CheckFailure.REFUSED,
    FailureKind.CONNECTION_LOST: CheckFailure.BACKEND_ERROR,
    FailureKind.TIMEOUT: CheckFailure.TIMEOUT,
    FailureKind.UNAUTHORIZED: CheckFailure.UNAUTHORIZED,
    FailureKind.HTTP_ERROR: CheckFailure.BAD_RESPONSE,
    FailureKind.BACKEND_ERROR: CheckFailure.BACKEND_ERROR,
    FailureKind.THROTTLED: CheckFailure.BACKEND_ERROR,
    FailureKind.CIRCUIT_OPEN: CheckFailure.BACKEND_ERROR,
    FailureKind.TOO_LARGE: CheckFailure.BAD_RESPONSE,
}


def _task_id(task: dict[str, Any], index: int) -> int:
    task_id = task.get("id")
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ValueError(f"tasks[{index}].id must be an integer, got {task_id!r}")
    return task_id


def _problems_text(problems: list[str]) -> str:
    shown = "; ".join(problems[:_MAX_PROBLEMS_SHOWN])
    more = len(problems) - _MAX_PROBLEMS_SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")


class PredictedRow(NamedTuple):
    """One stored-to-be prediction, validated and version-tagged.

    ``result_json`` is ``result`` written as JSON once, as it was validated: the text a chunk report
    carries and the API stores as it is."""

    task_id: int
    result: list[Any]
    score: float | None
    model_version: str
    result_json: str


@dataclass(frozen=True, slots=True)
class Predicted:
    """What ``BackendGateway.predict`` answers: predictions and errors in task order.

    Plain tuples, not pydantic models: the worker encodes them straight into its chunk report, one per
    bulk-predicted task, and a model per prediction cost it about 1 µs each. ``as_result`` makes the
    ``PredictTasksResult`` the gateway's routes answer with.
    """

    predictions: list[PredictedRow]
    errors: list[TaskError]
    model_version: str | None

    def as_result(self) -> PredictTasksResult:
        return PredictTasksResult(
            predictions=[
                TaskPrediction(
                    task_id=row.task_id, result=row.result, score=row.score, model_version=row.model_version
                )
                for row in self.predictions
            ],
            errors=self.errors,
            model_version=self.model_version,
        )


@dataclass(slots=True)
class _Collector:
    """Predictions and errors of one predict() call, kept in task order whatever order batches finish.

    Each result is written as JSON and checked against the label config as its batch's answer is read,
    while the answer's objects are still in the CPU's caches. ``verdicts`` keeps the config's verdict on
    each result text seen in the call: a classifier answers the same few results for most of its tasks,
    and a repeated one is checked once. The text decides the verdict: decoded JSON holds no NaN or
    infinity, so two results written alike are alike. The texts are the rows' own, so the map holds no
    more than a slot per prediction of the call.
    """

    config: LabelConfig
    positions: dict[int, int]
    predictions: list[tuple[int, PredictedRow]] = field(default_factory=list)
    errors: list[tuple[int, TaskError]] = field(default_factory=list)
    verdicts: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, tasks: Sequence[dict[str, Any]], message: str) -> None:
        for task in tasks:
            task_id = task["id"]
            self.errors.append((self.positions[task_id], TaskError(task_id=task_id, message=message)))

    def add(self, task_id: int, result: list[Any], score: float | None, version: str | None) -> None:
        """Keep a prediction if it fits the label config and can be written as JSON (orjson writes
        less nesting than it reads), else record why it was rejected. Its ``score`` is a finite number
        or None already (``normalize_predict_response``)."""
        position = self.positions[task_id]
        try:
            result_json = orjson.dumps(result).decode()
        except orjson.JSONEncodeError as exc:
            message = f"prediction not stored: its result cannot be written as JSON ({exc})"
            self.errors.append((position, TaskError(task_id=task_id, message=message)))
            return
        problems = self.verdicts.get(result_json)
        if problems is None:
            problems = self.verdicts[result_json] = validate_result(self.config, result)
        if problems:
            message = f"prediction rejected, it does not fit the label config: {_problems_text(problems)}"
            self.errors.append((position, TaskError(task_id=task_id, message=message)))
            return
        self.predictions.append(
            (position, PredictedRow(task_id, result, score, version or UNDEFINED_VERSION, result_json))
        )

    def result(self, fallback_version: str | None) -> Predicted:
        """Top-level version: the one all predictions share; None when they differ."""
        predictions = [item for _, item in sorted(self.predictions, key=itemgetter(0))]
        errors = [item for _, item in sorted(self.errors, key=itemgetter(0))]
        versions = {prediction.model_version for prediction in predictions}
        if len(versions) == 1:
            version: str | None = versions.pop()
        elif not versions:
            version = fallback_version
        else:
            version = None
        return Predicted(predictions, errors, version)


@dataclass(frozen=True, slots=True)
class _PredictCall:
    """What stays fixed across the batches of one predict() call."""

    backend: BackendSpec
    project: ProjectRef
    context: dict[str, Any] | None
    timeout_s: float
    deadline_s: float
    retries: bool
    collector: _Collector
    max_response_bytes: int | None
    caller_timeout: bool


class BackendGateway:
    """The process-wide entry point to ML backends; see the module docstring. Close with ``aclose()``."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        resolver: Resolver = system_resolver,
        slots: BackendSlots | None = None,
    ) -> None:
        self.settings = settings
        self.policy = AddressPolicy(
            settings.allowed_networks,
            settings.denied_networks,
            resolver=resolver,
            dns_timeout_s=settings.dns_timeout_s,
        )
        self.caller = BackendCaller(settings, self.policy, slots)
        self._configs: dict[str, LabelConfig] = {}

    async def aclose(self) -> None:
        await self.caller.aclose()

    def call_deadline_s(self, backend: BackendSpec) -> float:
        """A bulk or training call's deadline: never shorter than one whole attempt of the backend."""
        s = self.settings
        return max(s.call_deadline_s, backend.timeout_s + s.connect_timeout_s)

    async def label_config(self, xml: str) -> LabelConfig:
        """The parsed config; a config not seen yet is parsed in a thread (big XML would stall the loop)."""
        config = self._configs.get(xml)
        if config is None:
            config = await asyncio.to_thread(parse_label_config_cached, xml)
            if len(self._configs) >= _MAX_CONFIGS:
                self._configs.pop(next(iter(self._configs)))
            self._configs[xml] = config
        return config

    # ---- check -----------------------------------------------------------------------------

    async def health(self, spec: BackendSpec) -> HealthResponse:
        """One ``/health`` call, no retries and outside the breaker (a check must reach a tripped backend).

        Raises ``CallFailure``, or ``ProtocolError`` / ``ValidationError`` for an answer of the wrong shape.
        """
        s = self.settings
        response = await self.caller.call(
            spec,
            "GET",
            "/health",
            timeout_s=s.health_timeout_s,
            retries=False,
            use_breaker=False,
            deadline_s=s.health_timeout_s + s.connect_timeout_s,
        )
        return HealthResponse.model_validate(decode_json(response.content))

    async def check(self, req: CheckBackendRequest) -> CheckBackendResult:
        """``/health`` then ``/setup``; on success the version /setup reported, else the failure kind."""
        spec, s = req.backend, self.settings
        try:
            health = await self.health(spec)
        except CallFailure as failure:
            return CheckBackendResult(ok=False, failure=_CHECK_FAILURE[failure.kind], error=failure.message)
        except (ProtocolError, ValidationError) as exc:
            return _bad_response("/health", exc)
        if not health.is_up:
            return CheckBackendResult(
                ok=False,
                failure=CheckFailure.BACKEND_ERROR,
                model_class=health.model_class,
                error=f"/health reports status {health.status[:100]!r}, expected 'UP'",
            )
        extra = req.backend.extra_params
        setup = SetupRequest(
            project=req.project.protocol_id,
            label_schema=req.project.label_config,
            hostname=req.hostname,
            access_token=req.access_token,
            extra_params=None if extra is None else orjson.dumps(extra).decode(),
        )
        try:
            setup_response = await self.caller.call(
                spec,
                "POST",
                "/setup",
                orjson.dumps(setup.model_dump(by_alias=True)),
                timeout_s=s.setup_timeout_s,
                retries=False,
                use_breaker=False,
                deadline_s=s.setup_timeout_s + s.connect_timeout_s,
            )
            version = SetupResponse.model_validate(decode_json(setup_response.content)).model_version
        except CallFailure as failure:
            return CheckBackendResult(
                ok=False,
                failure=_CHECK_FAILURE[failure.kind],
                model_class=health.model_class,
                error=failure.message,
            )
        except (ProtocolError, ValidationError) as exc:
            return _bad_response("/setup", exc, health.model_class)
        if version is None:
            return CheckBackendResult(
                ok=False,
                failure=CheckFailure.NO_MODEL_VERSION,
                model_class=health.model_class,
                error="/setup answered without a model_version",
            )
        self.caller.state(spec).breaker.record_success()
        return CheckBackendResult(ok=True, model_version=version, model_class=health.model_class)

    # ---- predict ---------------------------------------------------------------------------

    async def predict(
        self,
        backend: BackendSpec,
        project: ProjectRef,
        tasks: list[dict[str, Any]],
        *,
        context: dict[str, Any] | None = None,
        interactive: bool = False,
        max_response_bytes: int | None = None,
    ) -> Predicted:
        """Predictions for ``tasks`` (each needs an integer ``id``), validated and version-tagged.

        Tasks go in batches of ``backend.batch_size`` (one at a time for a backend known not to batch),
        concurrently up to the backend's concurrency limit. Interactive calls get one attempt under
        the tight interactive timeout; running out of it when it is shorter than the backend's own
        timeout does not count against the backend's breaker (a caller asking for a quick answer from a
        slow backend would otherwise open the circuit for every bulk job). ``max_response_bytes`` caps
        each answer below the process-wide cap (public callers). Raises ValueError only for tasks
        without an integer id.
        """
        positions = {_task_id(task, index): index for index, task in enumerate(tasks)}
        try:
            config = await self.label_config(project.label_config)
        except LabelConfigError as exc:
            message = f"project label config is invalid: {exc}"
            return Predicted([], [TaskError(task_id=task_id, message=message) for task_id in positions], None)
        s = self.settings
        caller_timeout = False
        if interactive:
            timeout_s = min(backend.timeout_s, s.interactive_timeout_s)
            deadline_s = s.interactive_timeout_s
            caller_timeout = deadline_s < backend.timeout_s
        else:
            timeout_s, deadline_s = backend.timeout_s, self.call_deadline_s(backend)
        call = _PredictCall(
            backend,
            project,
            context,
            timeout_s,
            deadline_s,
            not interactive,
            _Collector(config, positions),
            max_response_bytes,
            caller_timeout,
        )
        try:
            single_task = self.caller.state(backend).single_task
        except CallFailure as failure:  # a URL that is not http(s)
            call.collector.fail(tasks, failure.message)
            return call.collector.result(backend.model_version)
        size = 1 if single_task else backend.batch_size
        batches = [tasks[start : start + size] for start in range(0, len(tasks), size)]
        if len(batches) == 1:
            await self._predict_batch(call, batches[0])
        else:
            await asyncio.gather(*(self._predict_batch(call, batch) for batch in batches))
        return call.collector.result(backend.model_version)

    async def _predict_batch(self, call: _PredictCall, tasks: list[dict[str, Any]]) -> None:
        backend, collector = call.backend, call.collector
        body = _encode_predict_body(call, tasks)
        if body is None:
            await self._isolate_unsendable(call, tasks)
            return
        try:
            response = await self.caller.call(
                backend,
                "POST",
                "/predict",
                body,
                timeout_s=call.timeout_s,
                deadline_s=call.deadline_s,
                retries=call.retries,
                max_response_bytes=call.max_response_bytes,
                caller_timeout=call.caller_timeout,
            )
        except CallFailure as failure:
            splittable = failure.status_code in _BISECT_STATUS or failure.kind is FailureKind.TOO_LARGE
            if len(tasks) > 1 and not failure.retryable and splittable:
                # One task may break the whole batch: halve until the culprit is alone.
                middle = len(tasks) // 2
                await asyncio.gather(
                    self._predict_batch(call, tasks[:middle]), self._predict_batch(call, tasks[middle:])
                )
            else:
                collector.fail(tasks, failure.message)
            return
        await self._read_predictions(call, tasks, response)

    async def _isolate_unsendable(self, call: _PredictCall, tasks: list[dict[str, Any]]) -> None:
        """A batch that cannot be written as JSON is halved until each task that cannot is alone and
        failed with the reason; the others are sent as usual (a stored task may predate the API's checks).
        """
        if len(tasks) > 1:
            middle = len(tasks) // 2
            await asyncio.gather(
                self._predict_batch(call, tasks[:middle]), self._predict_batch(call, tasks[middle:])
            )
            return
        found = find_bad_value(tasks[0], nul=False)
        reason = f"{found[0]}: {found[1]}" if found else "a value JSON cannot hold"
        call.collector.fail(tasks, f"task cannot be sent to the backend as JSON: {reason}")

    async def _read_predictions(
        self, call: _PredictCall, tasks: list[dict[str, Any]], response: BackendResponse
    ) -> None:
        backend, collector = call.backend, call.collector
        try:
            normalized = normalize_predict_response(
                decode_json(response.content), len(tasks), backend.model_version
            )
        except ProtocolError as exc:
            collector.fail(tasks, f"/predict answered with a malformed body: {exc.detail}")
            return
        if normalized.mismatch is CountMismatch.SINGLE_RESULT:
            log.warning(
                "backend answered one result for %d tasks; sending it one task per call from now on",
                len(tasks),
                extra={"backend": self.caller.state(backend).breaker.name},
            )
            self.caller.state(backend).single_task = True
            await asyncio.gather(*(self._predict_batch(call, [task]) for task in tasks))
            return
        if normalized.mismatch is not None:
            collector.fail(
                tasks,
                f"/predict answered {normalized.result_count} results for {normalized.task_count} tasks; "
                "results cannot be matched to tasks",
            )
            return
        if 0 < normalized.result_count < normalized.task_count:
            log.warning(
                "backend answered %d results for %d tasks; matched in order, the last tasks get none",
                normalized.result_count,
                normalized.task_count,
                extra={"backend": self.caller.state(backend).breaker.name},
            )
        for task, predictions in zip(tasks, normalized.per_task, strict=True):
            for prediction in predictions:
                collector.add(task["id"], prediction.result, prediction.score, prediction.model_version)

    # ---- webhook ---------------------------------------------------------------------------

    async def webhook(self, req: WebhookRequest) -> WebhookResult:
        """Deliver one event; 1.0.x backends train through ``POST /train`` when ``legacy_train``.

        Training can run long, so START_TRAINING gets the backend's predict timeout; other events the
        short webhook timeout. A read timeout is not retried: the backend may already be training.
        """
        training = req.payload.get("action") == WebhookEvent.START_TRAINING
        path = "/train" if training and req.legacy_train else "/webhook"
        timeout_s = req.backend.timeout_s if training else self.settings.webhook_timeout_s
        try:
            payload = orjson.dumps(req.payload)
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits: a refusal, not a 500
            return WebhookResult(ok=False, error=f"payload cannot be sent as JSON: {exc}", unsendable=True)
        try:
            response = await self.caller.call(
                req.backend,
                "POST",
                path,
                payload,
                timeout_s=timeout_s,
                deadline_s=self.call_deadline_s(req.backend),
                retry_on_timeout=False,
            )
        except CallFailure as failure:
            return WebhookResult(ok=False, status_code=failure.status_code, error=failure.message)
        try:
            body: Any = decode_json(response.content) if response.content else None
        except ProtocolError:
            body = response.content[:2000].decode("utf-8", "replace")
        return WebhookResult(ok=True, status_code=response.status_code, body=body)


def _encode_predict_body(call: _PredictCall, tasks: list[dict[str, Any]]) -> bytes | None:
    """The ``/predict`` body, or None when a task holds what JSON cannot carry (an integer beyond 64
    bits, nesting past orjson's limit, a lone surrogate)."""
    body = {
        "tasks": tasks,
        "project": call.project.protocol_id,
        "label_config": call.project.label_config,
        "params": {"login": None, "password": None, "context": call.context},
    }
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return None


def _bad_response(path: str, exc: Exception, model_class: str | None = None) -> CheckBackendResult:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        detail = f"{where}: {first['msg']}"
    else:
        detail = str(exc)
    return CheckBackendResult(
        ok=False,
        failure=CheckFailure.BAD_RESPONSE,
        model_class=model_class,
        error=f"{path} answered with an unexpected body: {detail}",
    )
