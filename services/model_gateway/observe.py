"""Metrics and spans of ML backend calls, kept apart from the HTTP client so hooks there stay one line."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from services.model_gateway.resilience import BreakerState
from shared import tracing
from shared.metrics import BACKEND_CALL_SECONDS, BACKEND_CIRCUIT_STATE, BACKEND_RETRIES, backend_label

if TYPE_CHECKING:
    from services.model_gateway.backend_client import BackendResponse

_CIRCUIT_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def retried(backend_id: int | None, path: str) -> None:
    BACKEND_RETRIES.labels(backend_label(backend_id), path).inc()


async def observed(
    backend_id: int | None,
    method: str,
    path: str,
    call: Callable[[], Awaitable[BackendResponse]],
    circuit: Callable[[], BreakerState | None],
    failure_kind: Callable[[BaseException], str | None],
) -> BackendResponse:
    """Run one logical backend call in a client span; record its latency, outcome and the breaker after.

    ``failure_kind`` names the outcome of an exception (None: not a call failure, e.g. cancellation).
    """
    backend = backend_label(backend_id)
    started = time.perf_counter()
    outcome = "ok"
    try:
        with tracing.span(
            f"backend {method} {path}",
            kind=SpanKind.CLIENT,
            attributes={"labelloop.backend": backend, "http.request.method": method},
        ):
            try:
                return await call()
            except BaseException as exc:
                outcome = failure_kind(exc) or "cancelled"
                tracing.record_error(f"{outcome}: {exc}")
                raise
    finally:
        BACKEND_CALL_SECONDS.labels(backend, path, outcome).observe(time.perf_counter() - started)
        state = circuit()
        if state is not None:
            BACKEND_CIRCUIT_STATE.labels(backend).set(_CIRCUIT_VALUE[state])
