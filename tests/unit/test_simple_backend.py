"""The example backend speaks the 2.x protocol exactly and predicts deterministically."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.embedded import free_port
from examples.simple_backend.app import MODEL_VERSION, app, choose
from shared.label_config import parse_label_config
from shared.protocol import (
    HealthResponse,
    SetupRequest,
    SetupResponse,
    WebhookEvent,
    normalize_predict_response,
)
from tests.support.servers import first_answer

REPO = Path(__file__).resolve().parents[2]
SENTIMENT = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/>
  </Choices>
</View>"""
TOPICS = """<View>
  <Header value="Pick a topic"/>
  <Text name="review" value="$body"/>
  <Choices name="topic" toName="review"><Choice value="Sports"/><Choice value="Politics"/></Choices>
</View>"""
TRAINED = {"status": "ok", "result": {"model_version": MODEL_VERSION}}
IMAGES = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="box" toName="img"><Label value="Car"/></RectangleLabels>
</View>"""


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://backend") as http:
        yield http


def predict_body(tasks: list[dict[str, Any]], label_config: str) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "project": "1.1700000000",
        "label_config": label_config,
        "params": {"login": None, "password": None, "context": None},
    }


async def test_health_on_both_paths(client: httpx.AsyncClient) -> None:
    for path in ("/", "/health"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "UP", "model_class": "SimpleBackend"}
        assert not HealthResponse.model_validate(response.json()).is_legacy


async def test_setup_answers_the_model_version(client: httpx.AsyncClient) -> None:
    request = SetupRequest(
        project="1.1700000000",
        label_schema=SENTIMENT,
        hostname="http://127.0.0.1:8080",
        access_token="token",
        extra_params=None,
    )
    response = await client.post("/setup", json=request.model_dump())
    assert response.status_code == 200
    assert SetupResponse.model_validate(response.json()).model_version == MODEL_VERSION


async def test_predict_one_valid_prediction_per_task(client: httpx.AsyncClient) -> None:
    tasks = [
        {"id": 1, "data": {"text": "What a great, great film"}},
        {"id": 2, "data": {"text": "Awful. Just bad."}},
        {"id": 3, "data": {"text": "It was neutral, I guess"}},
    ]
    response = await client.post("/predict", json=predict_body(tasks, SENTIMENT))
    assert response.status_code == 200
    assert set(response.json()) == {"results"}
    out = normalize_predict_response(response.json(), 3, setup_version=None)
    assert out.mismatch is None
    predictions = [entry[0] for entry in out.per_task]
    assert [p.result[0]["value"]["choices"] for p in predictions] == [
        ["Positive"],
        ["Negative"],
        ["Neutral"],
    ]
    assert [p.score for p in predictions] == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert {p.model_version for p in predictions} == {MODEL_VERSION}
    config = parse_label_config(SENTIMENT)
    for prediction in predictions:
        [region] = prediction.result
        control = config.control(region["from_name"])
        assert control is not None and control.type == "Choices"
        assert region["to_name"] in control.to_name
        assert region["type"] == "choices"
        assert set(region["value"]["choices"]) <= set(control.labels)


async def test_predict_follows_the_names_in_the_config(client: httpx.AsyncClient) -> None:
    tasks = [{"id": 1, "data": {"body": "Politics again, sigh"}}]
    [entry] = (await client.post("/predict", json=predict_body(tasks, TOPICS))).json()["results"]
    assert entry["result"] == [
        {
            "from_name": "topic",
            "to_name": "review",
            "type": "choices",
            "value": {"choices": ["Politics"]},
        }
    ]


async def test_predict_without_evidence_is_a_stable_low_score_guess(
    client: httpx.AsyncClient,
) -> None:
    tasks = [{"id": n, "data": {"body": "nothing to see here"}} for n in range(3)]
    results = (await client.post("/predict", json=predict_body(tasks, TOPICS))).json()["results"]
    assert len({entry["result"][0]["value"]["choices"][0] for entry in results}) == 1
    assert {entry["score"] for entry in results} == {0.5}


async def test_no_prediction_for_unsupported_configs_or_data(client: httpx.AsyncClient) -> None:
    images = [{"id": 1, "data": {"image": "http://127.0.0.1/a.png"}}]
    response = await client.post("/predict", json=predict_body(images, IMAGES))
    assert response.json() == {"results": [[]]}
    odd: list[dict[str, Any]] = [{"id": 1, "data": {"text": 42}}, {"id": 2, "data": {}}, {"id": 3}]
    response = await client.post("/predict", json=predict_body(odd, SENTIMENT))
    assert response.json() == {"results": [[], [], []]}
    dynamic = SENTIMENT.replace(
        '<Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/>', ""
    ).replace('toName="text"', 'toName="text" value="$options"')
    response = await client.post("/predict", json=predict_body(odd[:1], dynamic))
    assert response.json() == {"results": [[]]}


async def test_errors_have_the_2x_shape(client: httpx.AsyncClient) -> None:
    broken = await client.post("/predict", json=predict_body([], "<View><Text"))
    assert broken.status_code == 500
    assert broken.json()["status"] == 500
    assert broken.json()["detail"].startswith("LabelConfigError: label config is not well-formed")
    missing = await client.post("/predict", json={"label_config": SENTIMENT})
    assert missing.status_code == 500
    assert missing.json() == {"status": 500, "detail": "KeyError: 'tasks'"}


@pytest.mark.parametrize(
    ("event", "status", "body"),
    [
        (WebhookEvent.ANNOTATION_CREATED, 201, TRAINED),
        (WebhookEvent.ANNOTATION_UPDATED, 201, TRAINED),
        (WebhookEvent.ANNOTATION_DELETED, 201, TRAINED),
        (WebhookEvent.START_TRAINING, 201, TRAINED),
        (WebhookEvent.ANNOTATIONS_DELETED, 200, {"status": "Unknown event"}),
        ("PROJECT_UPDATED", 200, {"status": "Unknown event"}),
    ],
)
async def test_webhook(client: httpx.AsyncClient, event: str, status: int, body: dict[str, Any]) -> None:
    response = await client.post("/webhook", json={"action": event, "project": {"id": 1}})
    assert (response.status_code, response.json()) == (status, body)


async def test_metrics(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert (response.status_code, response.json()) == (200, {})


def test_choose_counts_label_names_and_keywords() -> None:
    assert choose("good good bad", ("Positive", "Negative")) == ("Positive", 2 / 3)
    assert choose("SPORTS!", ("Sports", "Politics")) == ("Sports", 1 / 2)
    guess = choose("hmm", ("A", "B", "C"))
    assert guess == choose("hmm", ("A", "B", "C"))
    assert guess[1] == pytest.approx(1 / 3)


def test_runs_as_a_module_on_a_real_port() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.simple_backend", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        health = first_answer(process, f"{url}/health")
        assert health.json()["status"] == "UP"
        tasks = [{"id": 1, "data": {"text": "great"}}]
        predicted = httpx.post(f"{url}/predict", json=predict_body(tasks, SENTIMENT))
        assert predicted.json()["results"][0]["result"][0]["value"] == {"choices": ["Positive"]}
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert b"Traceback" not in stderr
