"""Prometheus metrics every labelloop process exposes on ``GET /metrics``.

Metric objects live in the default registry and are cheap to update (a dict lookup and a locked add),
so hot paths update them inline. Labels stay bounded: route templates (never raw paths), backend ids
(never URLs), outcome kinds. Values that are facts in Postgres or Redis (jobs by state, queue depth,
lease age, outbox lag) are not counted in-process but read at scrape time by a ``ScrapeCollector`` the
owning service passes to ``metrics_response``.

A service run as several processes (uvicorn ``--workers``, gunicorn) sets ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory per service, before the processes start: each process then writes its values
there and ``/metrics`` answers the sum over all of them (gauges: the live maximum).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A `_created` series per labelled counter would double the scrape for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

# 0.15 and 0.2 resolve latencies around the 200 ms objective of the bulk and user calls (issue 9).
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

HTTP_REQUEST_SECONDS = Histogram(
    "labelloop_http_request_duration_seconds",
    "Time to answer an HTTP request, by service, method, route template and status code.",
    ["service", "method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
BACKEND_CALL_SECONDS = Histogram(
    "labelloop_backend_call_duration_seconds",
    "One logical call to an ML backend (retries and backoffs included), by backend id, endpoint and "
    "outcome (ok or the failure kind).",
    ["backend", "endpoint", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
BACKEND_RETRIES = Counter(
    "labelloop_backend_retries_total",
    "Retried attempts of ML backend calls, by backend id and endpoint.",
    ["backend", "endpoint"],
)
BACKEND_CIRCUIT_STATE = Gauge(
    "labelloop_backend_circuit_state",
    "Circuit breaker of an ML backend as this process last saw it: 0 closed, 1 half-open, 2 open.",
    ["backend"],
    multiprocess_mode="livemax",
)
TASKS_PREDICTED = Counter(
    "labelloop_tasks_predicted_total",
    "Predictions stored by bulk jobs, by backend id.",
    ["backend"],
)
TASKS_FAILED = Counter(
    "labelloop_tasks_failed_total",
    "Tasks a bulk job could not predict, by backend id.",
    ["backend"],
)
JOB_RUNNER_BATCHES = Counter(
    "labelloop_job_runner_batches_total",
    "Batches of the API's own jobs (deletes, auto-labeling, chunk planning, their VACUUM) this API "
    "process ran; stays 0 where LABELLOOP_BACKGROUND_LOOPS is off.",
)
WORKER_CHUNKS = Counter(
    "labelloop_worker_chunks_total",
    "Bulk chunks a gateway worker finished with, by outcome: completed, released (handed back on "
    "shutdown), unreleased (shutdown, but the API could not be told), stopped (cancelled elsewhere), "
    "gone (no longer to do).",
    ["outcome"],
)

ScrapeCollector = Callable[[], Awaitable[Iterable[GaugeMetricFamily]]]
"""Reads facts (from Postgres, Redis) at scrape time; an empty result when the source is unreachable."""


def backend_label(backend_id: int | None) -> str:
    """The backend label: its id, or ``none`` for an ad-hoc backend (a check before it is stored)."""
    return "none" if backend_id is None else str(backend_id)


class _Families(Collector):
    def __init__(self, families: Iterable[GaugeMetricFamily]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Any]:
        return self._families


async def metrics_response(collect: ScrapeCollector | None = None) -> tuple[bytes, str]:
    """The exposition text of this process (or of all processes of the service) and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if collect is not None:
        extra = CollectorRegistry()
        extra.register(_Families(await collect()))
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST
