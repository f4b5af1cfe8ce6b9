"""Predictions through BackendGateway against fake backends: batching, versions, validation, failures."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest

from services.model_gateway.predictor import BackendGateway
from services.model_gateway.worker import create_worker
from shared.gateway_contract import MAX_BACKEND_TIMEOUT_S, BackendSpec, ProjectRef, TaskError
from tests.fakes.fake_backend import FakeBackend
from tests.gateway.conftest import MakeGateway, spec, tasks


def choice(label: str, score: float | None = 0.8, **extra: Any) -> dict[str, Any]:
    region = {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    return {"result": [region], "score": score, **extra}


def batch_sizes(backend: FakeBackend) -> list[int]:
    return [len(request.body["tasks"]) for request in backend.calls("/predict")]


async def test_v2_batches_and_tags_each_prediction(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    result = await make_gateway().predict(spec(fake, batch_size=4), project, tasks(10))
    assert sorted(batch_sizes(fake)) == [2, 4, 4]
    assert [p.task_id for p in result.predictions] == list(range(1, 11))
    assert result.errors == []
    assert result.model_version == "fake-v1"
    assert {p.model_version for p in result.predictions} == {"fake-v1"}
    first = result.predictions[0]
    assert first.result[0]["value"] == {"choices": ["Positive"]}
    assert first.score == 0.9
    body = fake.calls("/predict")[0].body
    assert body["project"] == "7.1700000000"
    assert body["label_config"] == project.label_config
    assert body["params"] == {"login": None, "password": None, "context": None}


async def test_v1_top_level_version_beats_setup_version(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(mode="v1", model_version="v1-model-3")
    backend = spec(fake, model_version="INITIAL")
    result = await make_gateway().predict(backend, project, tasks(3))
    assert [p.model_version for p in result.predictions] == ["v1-model-3"] * 3
    assert result.model_version == "v1-model-3"


async def test_versions_resolve_per_prediction_then_setup_and_undefined_stays_separate(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    def predict(task: dict[str, Any]) -> list[dict[str, Any]]:
        return {
            1: [choice("Positive", model_version="own-7")],
            2: [choice("Negative", model_version="undefined")],
            3: [choice("Negative", model_version="")],
        }[task["id"]]

    fake.configure(predict_fn=predict)
    gateway = make_gateway()
    with_setup = await gateway.predict(spec(fake, model_version="setup-2"), project, tasks(3))
    assert [p.model_version for p in with_setup.predictions] == ["own-7", "setup-2", "setup-2"]
    assert with_setup.model_version is None  # mixed versions: no single version to report

    without = await gateway.predict(spec(fake), project, tasks(3))
    assert [p.model_version for p in without.predictions] == ["own-7", "undefined", "undefined"]


async def test_several_predictions_per_task_and_empty_lists(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    def predict(task: dict[str, Any]) -> list[dict[str, Any]]:
        return [choice("Positive", 0.7), choice("Negative", 0.3)] if task["id"] == 1 else []

    fake.configure(predict_fn=predict)
    result = await make_gateway().predict(spec(fake), project, tasks(3))
    assert [(p.task_id, p.score) for p in result.predictions] == [(1, 0.7), (1, 0.3)]
    assert result.errors == []


async def test_model_that_knows_nothing_yet_is_not_an_error(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(empty_results=True)
    result = await make_gateway().predict(spec(fake), project, tasks(4))
    assert result.predictions == [] and result.errors == []
    assert result.model_version is None


async def test_predictions_that_do_not_fit_the_label_config_become_counted_errors(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    def predict(task: dict[str, Any]) -> list[dict[str, Any]]:
        if task["id"] == 2:
            return [choice("Maybe")]
        if task["id"] == 3:
            bad = choice("Positive")
            bad["result"][0]["from_name"] = "nope"
            return [bad, choice("Negative")]
        return [choice("Positive")]

    fake.configure(predict_fn=predict)
    result = await make_gateway().predict(spec(fake), project, tasks(3))
    assert [(p.task_id, p.result[0]["value"]["choices"]) for p in result.predictions] == [
        (1, ["Positive"]),
        (3, ["Negative"]),
    ]
    assert [e.task_id for e in result.errors] == [2, 3]
    assert "['Maybe'] not among the labels of 'sentiment'" in result.errors[0].message
    assert "'nope' does not name a control tag" in result.errors[1].message
    assert result.errors[0].message.startswith("prediction rejected, it does not fit the label config: ")


async def test_a_result_repeated_across_batches_gets_the_same_verdict_each_time(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    """A classifier answers the same few results again and again; each is judged like its first copy, and
    one region's own score is part of what is judged."""

    def predict(task: dict[str, Any]) -> list[dict[str, Any]]:
        if task["id"] % 3 == 0:
            return [choice("Maybe")]
        if task["id"] % 3 == 1:
            return [choice("Positive")]
        scored = choice("Positive")
        scored["result"][0]["score"] = "high" if task["id"] == 5 else 0.5
        return [scored]

    fake.configure(predict_fn=predict)
    result = await make_gateway().predict(spec(fake, batch_size=2), project, tasks(9))
    assert [p.task_id for p in result.predictions] == [1, 2, 4, 7, 8]
    assert all(orjson.loads(p.result_json) == p.result for p in result.predictions)
    assert [e.task_id for e in result.errors] == [3, 5, 6, 9]
    messages = {e.task_id: e.message for e in result.errors}
    assert all("['Maybe'] not among the labels" in messages[task_id] for task_id in (3, 6, 9))
    assert "score must be a finite number or null, got 'high'" in messages[5]


async def test_backend_that_cannot_batch_is_remembered(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(single_result=True)
    gateway = make_gateway()
    backend = spec(fake, batch_size=4)
    first = await gateway.predict(backend, project, tasks(4))
    assert [p.task_id for p in first.predictions] == [1, 2, 3, 4]
    assert first.errors == []
    assert batch_sizes(fake) == [4, 1, 1, 1, 1]
    fake.clear_requests()
    await gateway.predict(backend, project, tasks(3))
    assert batch_sizes(fake) == [1, 1, 1]


async def test_more_results_than_tasks_is_a_per_task_error(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(wrong_count=4)
    result = await make_gateway().predict(spec(fake), project, tasks(3))
    assert result.predictions == []
    assert [e.task_id for e in result.errors] == [1, 2, 3]
    assert result.errors[0].message == (
        "/predict answered 4 results for 3 tasks; results cannot be matched to tasks"
    )


async def test_malformed_answer_is_a_per_task_error(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(garbage="entry_not_dict")
    result = await make_gateway().predict(spec(fake), project, tasks(2))
    assert [e.task_id for e in result.errors] == [1, 2]
    assert result.errors[0].message.startswith("/predict answered with a malformed body: results[0] is str")


async def test_poison_task_is_isolated_and_the_others_still_predicted(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(poison_task_value="POISON")
    batch = tasks(8)
    batch[4]["data"]["text"] = "POISON"
    result = await make_gateway().predict(spec(fake, batch_size=8), project, batch)
    assert [p.task_id for p in result.predictions] == [1, 2, 3, 4, 6, 7, 8]
    assert result.errors == [
        TaskError(task_id=5, message="/predict answered 500: ValueError: cannot predict task 5")
    ]
    assert max(batch_sizes(fake)) == 8 and batch_sizes(fake).count(1) >= 1


async def test_unavailable_backend_is_retried(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(fail_next_n=2, fail_status=503)
    result = await make_gateway(retry_attempts=3).predict(spec(fake), project, tasks(2))
    assert len(result.predictions) == 2 and result.errors == []
    assert len(fake.calls("/predict")) == 3


async def test_retries_stop_after_the_attempt_limit(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(always_fail=502)
    result = await make_gateway(retry_attempts=3).predict(spec(fake), project, tasks(2))
    assert len(fake.calls("/predict")) == 3
    assert result.errors[0].message == "/predict answered 502: FakeBackendError: always failing with 502"


async def test_too_many_requests_honours_retry_after(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(retry_after_n=1, retry_after_s=0)
    result = await make_gateway().predict(spec(fake), project, tasks(1))
    assert len(result.predictions) == 1
    assert len(fake.calls("/predict")) == 2

    fake.reset()
    fake.configure(retry_after_n=1, retry_after_s=120)
    result = await make_gateway(retry_after_max_s=30).predict(spec(fake), project, tasks(1))
    assert len(fake.calls("/predict")) == 1  # the backend asked for longer than we wait
    assert result.errors[0].message == "/predict answered 429: Too Many Requests"


async def test_non_retryable_errors_are_not_retried(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(always_fail=500)
    result = await make_gateway().predict(spec(fake), project, tasks(1))
    assert len(fake.calls("/predict")) == 1
    assert result.errors[0].message == "/predict answered 500: FakeBackendError: always failing with 500"


async def test_per_attempt_timeout_is_retried(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(predict_delay_s=2.0)
    result = await make_gateway(retry_attempts=2).predict(spec(fake, timeout_s=0.05), project, tasks(1))
    assert result.errors == [TaskError(task_id=1, message="/predict: no answer within 0.05s")]
    await fake.wait_for_calls("/predict", 2)


async def test_retry_budget_caps_retries_across_calls(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(always_fail=503)
    gateway = make_gateway(retry_attempts=5, retry_budget_ratio=0.0, retry_budget_burst=2)
    backend = spec(fake, batch_size=1)
    result = await gateway.predict(backend, project, tasks(1))
    assert len(fake.calls("/predict")) == 3  # first attempt + the budget's two retries
    assert result.errors[0].message.endswith("(not retried: retry budget for this backend exhausted)")
    fake.clear_requests()
    await gateway.predict(backend, project, tasks(3, start=10))
    assert len(fake.calls("/predict")) == 3  # one attempt per task, no retries left


async def test_circuit_opens_fails_fast_and_recovers_after_a_probe(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.model_gateway.backend_client")
    fake.configure(always_fail=503)
    gateway = make_gateway(retry_attempts=1, breaker_failure_threshold=2, breaker_cool_down_s=0.3)
    backend = spec(fake, batch_size=1, max_concurrency=1)
    await gateway.predict(backend, project, tasks(2))
    assert len(fake.calls("/predict")) == 2
    result = await gateway.predict(backend, project, tasks(3, start=10))
    assert len(fake.calls("/predict")) == 2  # no call reached the backend
    assert result.errors[0].message.startswith(f"circuit open for backend {fake.url}, retry after ")
    assert f"circuit opened for backend {fake.url} for 0.3s: /predict answered 503" in caplog.text

    fake.reset()
    deadline = time.monotonic() + 10
    while True:
        result = await gateway.predict(backend, project, tasks(1))
        if result.predictions or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert len(result.predictions) == 1
    assert len(fake.calls("/predict")) == 1  # one probe after the cool-down, then closed
    assert len((await gateway.predict(backend, project, tasks(3))).predictions) == 3


async def test_concurrency_limit_is_shared_by_all_callers(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(predict_delay_s=0.02)
    gateway = make_gateway()
    backend = spec(fake, batch_size=1, max_concurrency=2)
    results = await asyncio.gather(
        gateway.predict(backend, project, tasks(6)), gateway.predict(backend, project, tasks(6, start=20))
    )
    assert all(len(result.predictions) == 6 for result in results)
    assert fake.max_concurrency == 2


async def test_interactive_sends_context_with_one_attempt_and_a_tight_timeout(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    gateway = make_gateway(interactive_timeout_s=0.5)
    context = {"result": [choice("Negative")["result"][0]]}
    result = await gateway.predict(spec(fake), project, tasks(1), context=context, interactive=True)
    assert result.errors == []
    assert result.predictions[0].result == context["result"]
    assert fake.calls("/predict")[0].body["params"]["context"] == context

    fake.configure(fail_next_n=1, fail_status=503)
    result = await gateway.predict(spec(fake), project, tasks(1), interactive=True)
    assert result.errors and len(fake.calls("/predict")) == 2  # not retried

    fake.configure(predict_delay_s=2.0)
    result = await gateway.predict(spec(fake), project, tasks(1), interactive=True)
    assert result.errors[0].message.startswith("/predict: no answer within 0.5s")


async def test_basic_auth_is_sent_and_a_refusal_is_reported(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(require_basic_auth=("ml", "pw-9f8e7d"))
    gateway = make_gateway()
    good = spec(fake, auth_method="BASIC_AUTH", basic_auth_user="ml", basic_auth_pass="pw-9f8e7d")
    assert len((await gateway.predict(good, project, tasks(2))).predictions) == 2
    bad = good.model_copy(update={"basic_auth_pass": "nope-123"})
    result = await gateway.predict(bad, project, tasks(2))
    assert [e.message for e in result.errors] == ["/predict answered 401: Unauthorized"] * 2


async def test_invalid_label_config_fails_every_task(make_gateway: MakeGateway, fake: FakeBackend) -> None:
    project = ProjectRef(id=1, created_at_ts=1, label_config="<View><Choices name='c' toName='x'/></View>")
    result = await make_gateway().predict(spec(fake), project, tasks(2))
    assert [e.task_id for e in result.errors] == [1, 2]
    assert result.errors[0].message.startswith("project label config is invalid: ")
    assert fake.calls("/predict") == []


async def test_stopped_backend_fails_every_task_with_the_reason(
    make_gateway: MakeGateway, project: ProjectRef
) -> None:
    backend = FakeBackend()
    url = backend.url
    backend.stop()
    gateway: BackendGateway = make_gateway(retry_attempts=2)
    result = await gateway.predict(BackendSpec(url=url, batch_size=2), project, tasks(3))
    assert [e.task_id for e in result.errors] == [1, 2, 3]
    assert result.errors[0].message.startswith(f"/predict: cannot connect to {url}")


async def test_url_that_is_not_http_fails_every_task(make_gateway: MakeGateway, project: ProjectRef) -> None:
    result = await make_gateway().predict(BackendSpec(url="gopher://old.example"), project, tasks(2))
    assert [e.task_id for e in result.errors] == [1, 2]
    assert result.errors[0].message == "backend url must look like http(s)://host[:port][/path]"


async def test_oversized_answers_are_split_and_refused_alone(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    def predict(task: dict[str, Any]) -> list[dict[str, Any]]:
        padding = "x" * (2000 if task["id"] == 4 else 300)
        return [choice("Positive", notes=padding)]

    fake.configure(predict_fn=predict)
    result = await make_gateway(max_response_bytes=1024).predict(spec(fake, batch_size=4), project, tasks(4))
    assert [p.task_id for p in result.predictions] == [1, 2, 3]
    assert result.errors == [TaskError(task_id=4, message="/predict: answer larger than 1024 bytes")]


async def test_a_bulk_call_may_take_the_backends_whole_timeout(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    """A backend given a longer timeout than the gateway's call deadline keeps it (its answer arrives
    after the deadline has passed), and the worker's job timeout covers the longest such call."""
    fake.configure(predict_delay_s=0.3)
    gateway = make_gateway(call_deadline_s=0.05)
    result = await gateway.predict(spec(fake, timeout_s=5.0), project, tasks(1))
    assert result.errors == [] and len(result.predictions) == 1
    assert gateway.call_deadline_s(spec(fake, timeout_s=MAX_BACKEND_TIMEOUT_S)) > MAX_BACKEND_TIMEOUT_S
    assert create_worker().job_timeout_s > gateway.call_deadline_s(
        spec(fake, timeout_s=MAX_BACKEND_TIMEOUT_S)
    )
