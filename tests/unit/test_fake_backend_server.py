"""The fake ML backend over real HTTP: both protocol lines and every programmable misbehaviour."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from devstack.embedded import free_port
from shared.label_config import parse_label_config
from shared.protocol import (
    CountMismatch,
    HealthResponse,
    ProtocolError,
    SetupResponse,
    backend_error_detail,
    decode_json,
    normalize_predict_response,
)
from tests.fakes.fake_backend import SENTIMENT_CONFIG, Behaviour, FakeBackend, Garbage
from tests.support.servers import first_answer
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
TASKS = [
    {"id": 1, "data": {"text": "a great day"}},
    {"id": 2, "data": {"text": "rain again"}},
    {"id": 3, "data": {"text": "I love it"}},
]


def predict_body(tasks: list[dict[str, Any]] = TASKS, context: Any = None) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "project": "1.1700000000",
        "label_config": SENTIMENT_CONFIG,
        "params": {"login": None, "password": None, "context": context},
    }


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBackend]:
    with FakeBackend() as backend:
        yield backend


@pytest.fixture
def backend(server: FakeBackend) -> FakeBackend:
    server.reset()
    return server


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, timeout=5) as http:
        yield http


def normalized(response: httpx.Response, task_count: int, setup_version: str | None) -> Any:
    return normalize_predict_response(decode_json(response.content), task_count, setup_version)


# ---- the 2.x line -----------------------------------------------------------------------------


def test_v2_health_setup_and_metrics(client: httpx.Client) -> None:
    for path in ("/health", "/"):
        health = client.get(path)
        assert health.status_code == 200
        assert health.json() == {"status": "UP", "model_class": "FakeBackend"}
    setup = client.post("/setup", json={"project": "1.2", "schema": SENTIMENT_CONFIG})
    assert SetupResponse.model_validate(setup.json()).model_version == "fake-v1"
    assert client.get("/metrics").json() == {}


def test_v2_predict_versions_each_prediction_and_fits_the_sentiment_config(
    client: httpx.Client,
) -> None:
    response = client.post("/predict", json=predict_body())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"results"}
    assert all(entry["model_version"] == "fake-v1" for entry in body["results"])
    out = normalized(response, 3, setup_version=None)
    assert out.mismatch is None
    choices = [p[0].result[0]["value"]["choices"] for p in out.per_task]
    assert choices == [["Positive"], ["Negative"], ["Positive"]]
    assert [p[0].score for p in out.per_task] == [0.9, 0.6, 0.9]
    config = parse_label_config(SENTIMENT_CONFIG)
    region = out.per_task[0][0].result[0]
    control = config.control(region["from_name"])
    assert control is not None and region["to_name"] in control.to_name
    assert region["value"]["choices"][0] in control.labels


def test_v2_webhook_trains_on_training_events_only(client: httpx.Client) -> None:
    trained = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert trained.status_code == 201
    assert trained.json() == {"result": {"model_version": "fake-v1"}, "status": "ok"}
    ignored = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {}})
    assert (ignored.status_code, ignored.json()) == (200, {"status": "Unknown event"})


def test_v2_has_no_train_or_versions(client: httpx.Client) -> None:
    for method, path in (("POST", "/train"), ("POST", "/versions"), ("GET", "/versions")):
        response = client.request(method, path, json={})
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "Not Found" in backend_error_detail(404, "text/html", response.content)


def test_version_after_train(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.version_after_train = "fake-v2"
    client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert client.post("/setup", json={}).json() == {"model_version": "fake-v2"}
    assert client.post("/predict", json=predict_body()).json()["results"][0]["model_version"] == ("fake-v2")


# ---- the 1.0.x line ---------------------------------------------------------------------------


def test_v1_shapes(backend: FakeBackend, client: httpx.Client) -> None:
    backend.configure(mode="v1", model_version="legacy-3")
    health = HealthResponse.model_validate(client.get("/health").json())
    assert health.is_up and health.is_legacy
    assert client.post("/setup", json={}).json() == {"model_version": "INITIAL"}

    response = client.post("/predict", json=predict_body())
    body = response.json()
    assert body["model_version"] == "legacy-3"
    assert all("model_version" not in entry for entry in body["results"])
    out = normalized(response, 3, setup_version="INITIAL")
    assert {p[0].model_version for p in out.per_task} == {"legacy-3"}

    webhook = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert (webhook.status_code, webhook.json()) == (201, {"job_id": "fake-job-1"})
    train = client.post("/train", json={"annotations": [], "project": "1.2"})
    assert (train.status_code, train.json()) == (201, {"job": "fake-job-2"})
    assert client.post("/versions", json={}).json()["versions"] == ["legacy-3"]
    assert client.get("/versions").status_code == 405


# ---- auth and injected failures ---------------------------------------------------------------


def test_basic_auth_is_required_on_every_route(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.require_basic_auth = ("ml", "s3cret")
    for method, path in (("GET", "/health"), ("POST", "/predict"), ("POST", "/webhook")):
        refused = client.request(method, path, json=predict_body())
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        wrong = client.request(method, path, json=predict_body(), auth=("ml", "nope"))
        assert wrong.status_code == 401
    assert client.get("/health", auth=("ml", "s3cret")).status_code == 200
    ok = client.post("/predict", json=predict_body(), auth=("ml", "s3cret"))
    assert ok.status_code == 200


def test_fail_next_n_then_ok(backend: FakeBackend, client: httpx.Client) -> None:
    backend.configure(fail_next_n=2, fail_status=503)
    statuses = [client.post("/predict", json=predict_body()).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_failure_detail_is_2x_shaped(backend: FakeBackend, client: httpx.Client) -> None:
    backend.configure(fail_next_n=1, fail_status=500)
    failed = client.post("/predict", json=predict_body())
    assert failed.json()["status"] == 500
    detail = backend_error_detail(500, failed.headers["content-type"], failed.content)
    assert detail == "FakeBackendError: injected failure 500"


def test_fail_paths_scope_the_failures(backend: FakeBackend, client: httpx.Client) -> None:
    backend.configure(fail_next_n=1, fail_paths=frozenset({"/predict"}))
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json={}).status_code == 200
    assert client.post("/predict", json=predict_body()).status_code == 503
    assert client.post("/predict", json=predict_body()).status_code == 200


def test_retry_after(backend: FakeBackend, client: httpx.Client) -> None:
    backend.configure(retry_after_n=1, retry_after_s=2)
    limited = client.post("/predict", json=predict_body())
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert client.post("/predict", json=predict_body()).status_code == 200


def test_always_fail(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.always_fail = 502
    assert {client.get("/health").status_code for _ in range(3)} == {502}


def test_poison_task_fails_the_whole_batch(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.poison_task_value = "rain again"
    failed = client.post("/predict", json=predict_body())
    assert failed.status_code == 500
    detail = backend_error_detail(500, failed.headers["content-type"], failed.content)
    assert detail == "ValueError: cannot predict task 2"
    assert client.post("/predict", json=predict_body([TASKS[0]])).status_code == 200


def test_webhook_fail_answers_an_html_page(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.webhook_fail = 500
    failed = client.post("/webhook", json={"action": "START_TRAINING", "project": {}})
    assert failed.status_code == 500
    detail = backend_error_detail(500, failed.headers["content-type"], failed.content)
    assert "FakeBackendError: webhook failed" in detail
    assert "<" not in detail


def test_delays_make_timeouts(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.health_delay_s = 0.5
    with pytest.raises(httpx.ReadTimeout):
        client.get("/health", timeout=0.1)
    backend.behaviour.health_delay_s = 0
    assert client.get("/health").status_code == 200


# ---- result counts and shapes -----------------------------------------------------------------


def test_single_result(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.single_result = True
    out = normalized(client.post("/predict", json=predict_body()), 3, None)
    assert out.mismatch is CountMismatch.SINGLE_RESULT
    one = normalized(client.post("/predict", json=predict_body([TASKS[0]])), 1, None)
    assert one.mismatch is None


@pytest.mark.parametrize("count", [0, 2, 5])
def test_wrong_count(backend: FakeBackend, client: httpx.Client, count: int) -> None:
    backend.behaviour.wrong_count = count
    response = client.post("/predict", json=predict_body())
    assert len(response.json()["results"]) == count
    assert normalized(response, 3, None).mismatch is (CountMismatch.OTHER if count > 3 else None)


def test_empty_results(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.empty_results = True
    out = normalized(client.post("/predict", json=predict_body()), 3, None)
    assert out.mismatch is None and out.per_task == [[], [], []]


def test_predict_fn_entry_forms(backend: FakeBackend, client: httpx.Client) -> None:
    def by_id(task: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"result": [], "score": 0.1 * n} for n in range(task["id"] - 1)]

    backend.behaviour.predict_fn = by_id
    body = client.post("/predict", json=predict_body()).json()
    assert body["results"][0] == []
    assert body["results"][1] == {"result": [], "score": 0.0, "model_version": "fake-v1"}
    assert [p["score"] for p in body["results"][2]] == [0.0, 0.1]


def test_predict_fn_errors_answer_500(backend: FakeBackend, client: httpx.Client) -> None:
    def broken(task: dict[str, Any]) -> list[dict[str, Any]]:
        raise RuntimeError("weights missing")

    backend.behaviour.predict_fn = broken
    failed = client.post("/predict", json=predict_body())
    assert failed.status_code == 500
    assert failed.json()["detail"] == "RuntimeError: weights missing"


def test_interactive_context_is_echoed(client: httpx.Client) -> None:
    keypoint = {"from_name": "kp", "to_name": "img", "type": "keypointlabels", "value": {"x": 1}}
    body = predict_body([TASKS[0]], context={"result": [keypoint]})
    [entry] = client.post("/predict", json=body).json()["results"]
    assert entry["result"] == [keypoint]


@pytest.mark.parametrize("kind", get_args(Garbage))
def test_garbage_is_a_protocol_error(backend: FakeBackend, client: httpx.Client, kind: Any) -> None:
    backend.behaviour.garbage = kind
    response = client.post("/predict", json=predict_body())
    assert response.status_code == 200
    with pytest.raises(ProtocolError):
        normalized(response, 3, None)


def test_garbage_on_other_paths(backend: FakeBackend, client: httpx.Client) -> None:
    backend.configure(garbage="not_json", garbage_paths=frozenset({"/health", "/setup"}))
    with pytest.raises(ProtocolError):
        decode_json(client.get("/health").content)
    backend.behaviour.garbage = "no_results"
    assert client.post("/setup", json={}).json() == ["garbage"]
    assert client.post("/predict", json=predict_body()).status_code == 200


# ---- recording, concurrency, programming ------------------------------------------------------


def test_requests_are_recorded(backend: FakeBackend, client: httpx.Client) -> None:
    before = time.monotonic()
    client.get("/health", headers={"X-Trace": "t1"})
    client.post("/predict", json=predict_body(), auth=("u", "p"))
    client.post("/webhook", content=b"not json")
    first, second, third = backend.requests
    assert (first.method, first.path, first.body) == ("GET", "/health", None)
    assert first.headers["x-trace"] == "t1"
    assert second.body == predict_body()
    assert second.headers["authorization"].startswith("Basic ")
    assert third.body == b"not json"
    assert before <= first.at <= second.at <= third.at <= time.monotonic()
    assert [r.path for r in backend.calls("/predict")] == ["/predict"]
    backend.clear_requests()
    assert backend.requests == []


def test_refused_requests_are_recorded_too(backend: FakeBackend, client: httpx.Client) -> None:
    backend.behaviour.always_fail = 500
    client.get("/health")
    assert len(backend.calls("/health")) == 1


async def test_max_concurrency(backend: FakeBackend) -> None:
    gate = threading.Event()
    backend.behaviour.predict_gate = gate
    async with httpx.AsyncClient(base_url=backend.url, timeout=5) as http:
        waiting = [http.post("/predict", json=predict_body()) for _ in range(5)]
        gathered = asyncio.gather(*waiting)

        async def all_in_flight() -> bool:
            return backend.current_concurrency == 5

        await wait_for(all_in_flight, 10, "5 requests in flight")
        assert not gathered.done(), "held by the gate"
        gate.set()
        responses = await gathered
    assert {r.status_code for r in responses} == {200}
    assert backend.max_concurrency == 5
    assert backend.current_concurrency == 0
    backend.reset()
    assert backend.max_concurrency == 0


async def test_wait_for_calls(backend: FakeBackend) -> None:
    def later() -> None:
        time.sleep(0.1)
        httpx.post(f"{backend.url}/webhook", json={"action": "START_TRAINING", "project": {}})

    threading.Thread(target=later).start()
    await backend.wait_for_calls("/webhook", 1, timeout_s=5)
    with pytest.raises(TimeoutError):
        await backend.wait_for_calls("/webhook", 2, timeout_s=0.05)


def test_reset_restores_the_construction_behaviour(backend: FakeBackend) -> None:
    backend.configure(mode="v1", fail_next_n=3, predict_fn=lambda task: [])
    backend.reset()
    assert backend.behaviour == Behaviour()
    with FakeBackend(behaviour=Behaviour(mode="v1")) as legacy:
        legacy.behaviour.mode = "v2"
        legacy.reset()
        assert legacy.behaviour == Behaviour(mode="v1")


def test_misspelled_behaviour_fields_fail(backend: FakeBackend) -> None:
    with pytest.raises(TypeError, match="fail_nxt_n"):
        backend.configure(fail_nxt_n=1)
    with pytest.raises(AttributeError):
        backend.behaviour.fail_nxt_n = 1  # type: ignore[attr-defined]


def test_record_off() -> None:
    with FakeBackend(record=False) as quiet:
        assert httpx.get(f"{quiet.url}/health").status_code == 200
        assert quiet.requests == []


# ---- lifecycle --------------------------------------------------------------------------------


def test_port_is_known_before_start_and_kept_across_restarts() -> None:
    fake = FakeBackend()
    url = fake.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")
    with fake:
        assert httpx.get(f"{url}/health").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")
    with fake:
        assert fake.url == url
        assert httpx.get(f"{url}/health").status_code == 200
        with pytest.raises(RuntimeError, match="already running"):
            fake.start()


def test_stop_cuts_off_requests_in_flight() -> None:
    fake = FakeBackend(behaviour=Behaviour(predict_delay_s=30)).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(f"{fake.url}/predict", json=predict_body(), timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while fake.current_concurrency == 0:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    caller.join(timeout=5)
    assert time.monotonic() - started < 5
    assert len(errors) == 1


def test_command_line_serves_an_instant_backend() -> None:
    port = free_port()
    command = [sys.executable, "-m", "tests.fakes.fake_backend", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--mode", "v1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        health = first_answer(process, f"http://127.0.0.1:{port}/health")
        assert health.json()["v2"] is False
        predicted = httpx.post(f"http://127.0.0.1:{port}/predict", json=predict_body())
        assert len(predicted.json()["results"]) == 3
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.returncode == -signal.SIGTERM
    assert b"Traceback" not in stderr
    assert b"RuntimeWarning" not in stderr
