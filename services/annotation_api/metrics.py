"""``GET /metrics`` of the annotation API: its own counters plus facts read from Postgres and Redis.

Jobs by kind and state, chunk backlog and lease age, outbox lag and parked events per backend and the arq queue depth are
read at scrape time (a few indexed aggregate queries), so they are right whichever API replica did the
work, and every replica reports the same values.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from fastapi import APIRouter, FastAPI, Request
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text
from starlette.responses import Response

from services.annotation_api.jobs.background import chunk_queue
from services.annotation_api.models import JobStatus
from shared.jobs import QUEUE_NAME
from shared.metrics import metrics_response

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
_REDIS_TIMEOUT_S = 1.0

_JOBS = text("SELECT kind, status, count(*) FROM job GROUP BY kind, status")
_CHUNKS = text(
    """
    SELECT status, count(*), extract(epoch FROM now() - min(lease_expires_at))
    FROM job_chunk WHERE status IN ('pending', 'leased') GROUP BY status
    """
)
_OUTBOX_LAG = text(
    """
    SELECT b.id, count(e.id), COALESCE(extract(epoch FROM now() - min(e.created_at)), 0)
    FROM ml_backend b
    LEFT JOIN outbox_event e ON e.project_id = b.project_id AND e.id > b.last_event_id
    GROUP BY b.id
    """
)

_PARKED = text(
    """
    SELECT b.id, count(f.event_id) FROM ml_backend b
    LEFT JOIN event_failure f ON f.ml_backend_id = b.id AND f.state = 'parked'
    GROUP BY b.id
    """
)


async def _database_families(app: FastAPI) -> list[GaugeMetricFamily]:
    jobs = GaugeMetricFamily("labelloop_jobs", "Jobs by kind and status.", labels=["kind", "status"])
    chunks = GaugeMetricFamily(
        "labelloop_chunks",
        "Bulk chunks waiting for (pending) or held by (leased) a worker.",
        labels=["status"],
    )
    lease_age = GaugeMetricFamily(
        "labelloop_chunk_oldest_lease_age_seconds",
        "Time since the least recently leased or heartbeated chunk was; near chunk_lease_s means a "
        "worker stopped heartbeating.",
    )
    lag_events = GaugeMetricFamily(
        "labelloop_outbox_lag_events",
        "Annotation events not yet delivered, by backend id.",
        labels=["backend"],
    )
    lag_seconds = GaugeMetricFamily(
        "labelloop_outbox_lag_seconds",
        "Age of the oldest annotation event not yet delivered, by backend id (0 when none).",
        labels=["backend"],
    )
    parked = GaugeMetricFamily(
        "labelloop_outbox_parked_events",
        "Annotation events given up on after bounded attempts (re-drive them through "
        "/api/ml/{id}/events), by backend id.",
        labels=["backend"],
    )
    async with app.state.engine.connect() as conn:
        counts = {(str(kind), str(status)): int(n) for kind, status, n in await conn.execute(_JOBS)}
        chunk_rows = {str(status): (int(n), age) for status, n, age in await conn.execute(_CHUNKS)}
        lag_rows = (await conn.execute(_OUTBOX_LAG)).all()
        parked_rows = (await conn.execute(_PARKED)).all()
    for kind in sorted({kind for kind, _ in counts} | {"predict"}):
        for job_status in JobStatus:
            jobs.add_metric([kind, job_status.value], counts.get((kind, job_status.value), 0))
    for chunk_status in ("pending", "leased"):
        chunks.add_metric([chunk_status], chunk_rows.get(chunk_status, (0, None))[0])
    age = chunk_rows.get("leased", (0, None))[1]
    lease_s: float = app.state.settings.chunk_lease_s
    lease_age.add_metric([], 0.0 if age is None else max(0.0, float(age) + lease_s))
    for backend_id, events, oldest in lag_rows:
        lag_events.add_metric([str(backend_id)], int(events))
        lag_seconds.add_metric([str(backend_id)], float(oldest))
    for backend_id, count in parked_rows:
        parked.add_metric([str(backend_id)], int(count))
    return [jobs, chunks, lease_age, lag_events, lag_seconds, parked]


async def _queue_depth(app: FastAPI) -> GaugeMetricFamily:
    depth = GaugeMetricFamily("labelloop_queue_depth", "Jobs waiting on the arq queue (Redis).")
    async with asyncio.timeout(_REDIS_TIMEOUT_S):
        pool = await chunk_queue(app).pool()
        depth.add_metric([], int(await pool.zcard(QUEUE_NAME)))
    return depth


async def collect(app: FastAPI) -> Iterable[GaugeMetricFamily]:
    """Whatever can be read now: an unreachable database or Redis leaves its metrics out, with a warning."""
    families: list[GaugeMetricFamily] = []
    try:
        families += await _database_families(app)
    except Exception as exc:
        log.warning("metrics: database not readable: %s", exc)
    try:
        families.append(await _queue_depth(app))
    except Exception as exc:
        log.warning("metrics: queue depth not readable: %s", exc)
    return families


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = await metrics_response(lambda: collect(request.app))
    return Response(body, media_type=content_type)
