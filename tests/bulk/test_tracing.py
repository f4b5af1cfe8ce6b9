"""One trace per user action, across real servers, the queue, the worker and the backend calls.

Tracing is installed with an in-memory exporter for these tests only; the API and gateway servers and
the in-process worker share this process, so all of their spans land there. The fake backend records
the headers it receives, so ``traceparent`` and ``X-Request-ID`` are checked where they arrive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing
from shared.jobs import QUEUE_NAME
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.waiting import wait_for
from tests.support.workers import RunBurst

pytestmark = pytest.mark.usefixtures("gateway_server")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def ended(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The one span called ``name``, once it ended: a server span ends just after its response is sent."""

    async def there() -> bool:
        return len(named(exporter, name)) == 1

    await wait_for(there, 10, f"span {name!r}")
    return named(exporter, name)[0]


async def test_a_bulk_job_is_one_trace_from_the_action_to_every_backend_call(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    spans: InMemorySpanExporter,
) -> None:
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url, batch_size=5)
    fake.clear_requests()
    action = await api.post(
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
        headers={"X-Request-ID": "bulk-request-1"},
    )
    assert action.status_code == 200, action.text
    await run_burst()
    assert (await api.get(f"/api/jobs/{action.json()['job_id']}")).json()["predicted"] == 20

    root = await ended(spans, "POST /api/dm/actions")
    trace = trace_id(root)
    predicts = fake.calls("/predict")
    assert len(predicts) == 4
    for call in predicts:
        assert call.headers["traceparent"].split("-")[1] == trace
        assert call.headers["x-request-id"] == "bulk-request-1"
    chunks = named(spans, "process_chunk")
    backend_calls = named(spans, "backend POST /predict")
    leases = named(spans, "POST /internal/chunks/{chunk_id}/lease")
    assert (len(chunks), len(backend_calls), len(leases)) == (2, 4, 2)
    assert {trace_id(span) for span in chunks + backend_calls + leases} == {trace}
    chunk_span_ids = {span.context.span_id for span in chunks if span.context is not None}
    assert {span.parent.span_id for span in backend_calls if span.parent is not None} <= chunk_span_ids


async def test_chunks_the_sweeper_requeues_continue_the_bulk_jobs_trace(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    spans: InMemorySpanExporter,
    redis_url: str,
    db: asyncpg.Connection,
) -> None:
    """The queue loses the job's chunks (Redis flushed); the sweeper, a loop outside any request, puts
    them back, and the worker's spans and backend calls still belong to the action's trace."""
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url, batch_size=5)
    fake.clear_requests()
    redis = aioredis.Redis.from_url(redis_url)
    try:
        action = await api.post(
            f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
            headers={"X-Request-ID": "swept-1"},
        )
        assert action.status_code == 200, action.text
        await redis.flushdb()
        first_enqueued = await db.fetchval("SELECT max(enqueued_at) FROM job_chunk")

        async def requeued() -> bool:
            swept = await db.fetchval("SELECT min(enqueued_at) FROM job_chunk")
            return bool(swept > first_enqueued and await redis.zcard(QUEUE_NAME) == 2)

        await wait_for(requeued, 30, "the sweeper to re-queue both chunks")
    finally:
        await redis.aclose()
    await run_burst()
    assert (await api.get(f"/api/jobs/{action.json()['job_id']}")).json()["predicted"] == 20

    root = await ended(spans, "POST /api/dm/actions")
    chunks = named(spans, "process_chunk")
    backend_calls = named(spans, "backend POST /predict")
    assert (len(chunks), len(backend_calls)) == (2, 4)
    assert {trace_id(span) for span in chunks + backend_calls} == {trace_id(root)}
    assert root.context is not None
    assert {span.parent.span_id for span in chunks if span.parent is not None} == {root.context.span_id}
    for call in fake.calls("/predict"):
        assert call.headers["traceparent"].split("-")[1] == trace_id(root)
        assert call.headers["x-request-id"] == "swept-1"


@pytest.mark.api_settings(job_inline_tasks=0)
async def test_chunks_the_job_runner_plans_later_join_the_actions_trace(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    spans: InMemorySpanExporter,
    redis_url: str,
) -> None:
    """Planned by the API's job runner after the request ended (no inline planning), the chunks still
    carry the action's trace and request id."""
    await import_texts(api, project["id"], 20)
    await connect_backend(api, project["id"], fake.url, batch_size=5)
    fake.clear_requests()
    action = await api.post(
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
        headers={"X-Request-ID": "planned-1"},
    )
    assert action.status_code == 200, action.text
    redis = aioredis.Redis.from_url(redis_url)
    try:

        async def planned() -> bool:
            return bool(await redis.zcard(QUEUE_NAME) == 2)

        await wait_for(planned, 30, "the job runner to plan and enqueue both chunks")
    finally:
        await redis.aclose()
    await run_burst()
    root = await ended(spans, "POST /api/dm/actions")
    chunks = named(spans, "process_chunk")
    assert len(chunks) == 2
    assert {trace_id(span) for span in chunks + named(spans, "backend POST /predict")} == {trace_id(root)}
    for call in fake.calls("/predict"):
        assert call.headers["x-request-id"] == "planned-1"


async def test_an_interactive_prediction_is_one_trace_through_api_gateway_and_backend(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, spans: InMemorySpanExporter
) -> None:
    (task_id,) = await import_texts(api, project["id"], 1)
    backend = await connect_backend(api, project["id"], fake.url, is_interactive=True)
    fake.clear_requests()
    answer = await api.post(
        f"/api/ml/{backend['id']}/interactive-annotating",
        json={"task": task_id},
        headers={"X-Request-ID": "interactive-1"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "interactive-1"

    root = await ended(spans, "POST /api/ml/{backend_id}/interactive-annotating")
    gateway_span = await ended(spans, "POST /internal/predict")
    backend_call = await ended(spans, "backend POST /predict")
    assert {trace_id(root), trace_id(gateway_span), trace_id(backend_call)} == {trace_id(root)}
    assert gateway_span.parent is not None and root.context is not None
    assert gateway_span.parent.span_id == root.context.span_id
    (call,) = fake.calls("/predict")
    assert call.headers["traceparent"].split("-")[1] == trace_id(root)
    assert call.headers["x-request-id"] == "interactive-1"


async def test_without_tracing_the_request_id_still_reaches_the_backend(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, run_burst: RunBurst
) -> None:
    await import_texts(api, project["id"], 5)
    await connect_backend(api, project["id"], fake.url)
    fake.clear_requests()
    action = await api.post(
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
        headers={"X-Request-ID": "untraced-1"},
    )
    assert action.status_code == 200, action.text
    await run_burst()
    (call,) = fake.calls("/predict")
    assert call.headers["x-request-id"] == "untraced-1"
    assert "traceparent" not in call.headers


async def test_a_training_job_carries_its_request_id_and_trace_to_the_backend(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    spans: InMemorySpanExporter,
) -> None:
    backend = await connect_backend(api, project["id"], fake.url)
    fake.clear_requests()
    started = await api.post(f"/api/ml/{backend['id']}/train", headers={"X-Request-ID": "train-1"})
    assert started.status_code in (200, 201), started.text
    await run_burst()
    root = await ended(spans, "POST /api/ml/{backend_id}/train")
    (call,) = fake.calls("/webhook")
    assert call.headers["x-request-id"] == "train-1"
    assert call.headers["traceparent"].split("-")[1] == trace_id(root)
