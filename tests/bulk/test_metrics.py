"""``/metrics`` of the API, the gateway and a real worker process, scraped before and after real work.

Counters live in the process, and the API and gateway servers of every test share this test process, so
the API's and gateway's figures are checked as deltas; the worker is a fresh process and starts at zero.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.bulk.conftest import REPO_ROOT, StartWorker, WorkerProcess
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import choice, connect_backend, import_texts
from tests.support.waiting import wait_job

pytestmark = pytest.mark.usefixtures("gateway_server")

TASKS = 30
"""Three chunks of ten (the bulk tests' chunk size), six batches of five."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, url: str) -> Samples:
    response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_move_by_the_work_done(
    api: httpx.AsyncClient,
    gateway: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
) -> None:
    task_ids = await import_texts(api, project["id"], TASKS)
    backend = await connect_backend(
        api, project["id"], fake.url, batch_size=5, max_concurrency=2, is_interactive=True
    )
    label = str(backend["id"])
    api_url, gateway_url = str(api.base_url).rstrip("/"), str(gateway.base_url).rstrip("/")
    async with httpx.AsyncClient() as client:
        worker = WorkerProcess(start_worker)
        await worker.wait_ready(client)
        api_before = await scrape(client, api_url)
        gateway_before = await scrape(client, gateway_url)
        assert (
            value(await scrape(client, worker.url), "labelloop_worker_chunks_total", outcome="completed") == 0
        )

        fake.configure(fail_next_n=1, fail_status=503, fail_paths=frozenset({"/predict"}))
        action = await api.post(f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}")
        assert action.status_code == 200, action.text
        job = await wait_job(api, action.json()["job_id"])
        assert (job["status"], job["predicted"]) == ("completed", TASKS), job
        interactive = await api.post(
            f"/api/ml/{backend['id']}/interactive-annotating", json={"task": task_ids[0]}
        )
        assert interactive.status_code == 200, interactive.text

        api_after = await scrape(client, api_url)
        gateway_after = await scrape(client, gateway_url)
        worker_after = await scrape(client, worker.url)

        # the API: stored predictions, jobs and chunks from Postgres, the queue from Redis, requests
        def api_delta(name: str, **labels: str) -> float:
            return value(api_after, name, **labels) - value(api_before, name, **labels)

        assert api_delta("labelloop_tasks_predicted_total", backend=label) == TASKS
        assert api_delta("labelloop_tasks_failed_total", backend=label) == 0
        assert value(api_after, "labelloop_jobs", kind="predict", status="completed") == 1
        assert value(api_after, "labelloop_jobs", kind="predict", status="running") == 0
        assert value(api_after, "labelloop_chunks", status="pending") == 0
        assert value(api_after, "labelloop_chunks", status="leased") == 0
        assert value(api_after, "labelloop_queue_depth") == 0
        http = "labelloop_http_request_duration_seconds_count"
        action_route = {
            "service": "annotation-api",
            "method": "POST",
            "route": "/api/dm/actions",
            "status": "200",
        }
        assert api_delta(http, **action_route) == 1
        complete = {**action_route, "route": "/internal/chunks/{chunk_id}/complete"}
        assert api_delta(http, **complete) == 3

        # the gateway's HTTP app: the interactive predict and its backend call
        def gateway_delta(name: str, **labels: str) -> float:
            return value(gateway_after, name, **labels) - value(gateway_before, name, **labels)

        predict_route = {
            "service": "model-gateway",
            "method": "POST",
            "route": "/internal/predict",
            "status": "200",
        }
        assert gateway_delta(http, **predict_route) == 1

        # the worker: six /predict calls (one of them retried once), three chunks, a closed breaker
        calls = "labelloop_backend_call_duration_seconds_count"
        assert value(worker_after, calls, backend=label, endpoint="/predict", outcome="ok") == 6
        assert value(worker_after, "labelloop_backend_retries_total", backend=label, endpoint="/predict") == 1
        assert value(worker_after, "labelloop_worker_chunks_total", outcome="completed") == 3
        assert value(worker_after, "labelloop_backend_circuit_state", backend=label) == 0

        # the outbox: events a dead backend has not received
        assert value(api_after, "labelloop_outbox_lag_events", backend=label) == 0
        fake.stop()
        for task_id in task_ids[:2]:
            created = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice("Positive")})
            assert created.status_code == 201, created.text
        lagging = await scrape(client, api_url)
        assert value(lagging, "labelloop_outbox_lag_events", backend=label) == 2


async def test_the_grafana_dashboard_uses_only_metrics_the_services_expose(api: httpx.AsyncClient) -> None:
    """Every series a panel queries exists (with its type's suffix), and every labelloop metric has a panel."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    response = await api.get("/metrics")
    families = [f for f in text_string_to_metric_families(response.text) if f.name.startswith("labelloop_")]
    exposed = {family.name + suffix for family in families for suffix in suffixes[family.type]}
    dashboard = orjson.loads((REPO_ROOT / "deploy" / "grafana" / "labelloop-dashboard.json").read_bytes())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"labelloop_[a-z_]+", target["expr"])
    }
    assert queried <= exposed, f"not exposed: {sorted(queried - exposed)}"
    unpanelled = {f.name for f in families if not any(f.name + end in queried for end in suffixes[f.type])}
    assert not unpanelled, f"metrics without a panel: {sorted(unpanelled)}"
