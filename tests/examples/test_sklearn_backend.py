"""The scikit-learn example backend over real HTTP: protocol shapes, online learning, persistence."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Header, HTTPException, Response

from examples.demo.datasets import DIGITS_CONFIG, Item, digit_items, grey_png, split
from examples.sklearn_backend.app import MODEL_CLASS, create_app
from tests.support.servers import ServerThread

PROJECT = "7.1700000000"
TOKEN = "annotation-server-token"
TEXT_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices>
</View>"""
POSITIVE = [
    "great product, love it",
    "excellent and happy",
    "love this, works great",
    "happy with it, excellent",
]
NEGATIVE = ["awful, broke at once", "terrible and sad", "hate it, awful quality", "terrible, broke again"]


@pytest.fixture(scope="module")
def digits() -> tuple[list[Item], list[Item]]:
    return split(digit_items(), test_size=150, seed=0)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def backend(data_dir: Path) -> Iterator[httpx.Client]:
    with (
        ServerThread(create_app(data_dir)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield client


def setup_body(schema: str = DIGITS_CONFIG, project: str = PROJECT, hostname: str = "") -> dict[str, Any]:
    return {
        "project": project,
        "schema": schema,
        "hostname": hostname,
        "access_token": TOKEN,
        "extra_params": None,
    }


def predict(client: httpx.Client, items: list[dict[str, Any]], config: str = DIGITS_CONFIG) -> list[Any]:
    body = {
        "tasks": items,
        "project": PROJECT,
        "label_config": config,
        "params": {"login": None, "password": None, "context": None},
    }
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    results: list[Any] = response.json()["results"]
    assert len(results) == len(items)
    return results


def choice(label: str, from_name: str = "digit", to_name: str = "image") -> list[dict[str, Any]]:
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


def annotate(
    client: httpx.Client,
    task_id: int,
    data: dict[str, Any],
    label: str,
    *,
    annotation_id: int | None = None,
    action: str = "ANNOTATION_CREATED",
    config: str = DIGITS_CONFIG,
    from_name: str = "digit",
    to_name: str = "image",
) -> dict[str, Any]:
    body = {
        "action": action,
        "project": {"id": 7, "label_config": config},
        "task": {"id": task_id, "data": data},
        "annotation": {
            "id": annotation_id or task_id,
            "task": task_id,
            "result": choice(label, from_name, to_name),
        },
    }
    response = client.post("/webhook", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "ok"
    result: dict[str, Any] = response.json()["result"]
    return result


def accuracy(results: list[Any], items: list[Item]) -> float:
    hits = sum(
        bool(r) and r["result"][0]["value"]["choices"][0] == item.label
        for r, item in zip(results, items, strict=True)
    )
    return hits / len(items)


def learn(client: httpx.Client, items: list[Item]) -> str:
    version = ""
    for task_id, item in enumerate(items, start=1):
        version = annotate(client, task_id, item.data, item.label)["model_version"]
    return version


def test_health_metrics_and_setup_answer_the_2x_shapes(backend: httpx.Client) -> None:
    for path in ("/", "/health"):
        assert backend.get(path).json() == {"status": "UP", "model_class": MODEL_CLASS}
    assert backend.get("/metrics").json() == {}
    response = backend.post("/setup", json=setup_body())
    assert response.status_code == 200
    assert response.json() == {"model_version": "sklearn-7-v0"}


def test_predicts_nothing_before_it_has_learned_two_labels(
    backend: httpx.Client, digits: tuple[list[Item], list[Item]]
) -> None:
    pool, test = digits
    tasks = [{"id": 1000 + i, "data": item.data} for i, item in enumerate(test[:3])]
    assert predict(backend, tasks) == [[], [], []]
    zeros = [item for item in pool if item.label == "0"][:2]
    learn(backend, zeros)
    assert predict(backend, tasks) == [[], [], []], "one class seen is no model yet"
    one = next(item for item in pool if item.label == "1")
    annotate(backend, 99, one.data, "1")
    results = predict(backend, tasks)
    for entry in results:
        assert entry["model_version"] == "sklearn-7-v3"
        assert 0 < entry["score"] <= 1
        (region,) = entry["result"]
        assert region["from_name"] == "digit" and region["to_name"] == "image" and region["type"] == "choices"
        assert region["value"]["choices"][0] in {"0", "1"}


def test_learns_digits_online_from_annotation_webhooks(
    backend: httpx.Client, digits: tuple[list[Item], list[Item]]
) -> None:
    pool, test = digits
    versions = [
        annotate(backend, i, item.data, item.label)["model_version"] for i, item in enumerate(pool[:120], 1)
    ]
    assert versions == [f"sklearn-7-v{n}" for n in range(1, 121)], "every training step bumps the version"
    tasks = [{"id": 5000 + i, "data": item.data} for i, item in enumerate(test)]
    score = accuracy(predict(backend, tasks), test)
    assert score > 0.5, f"held-out accuracy {score:.2f} after 120 labels (chance is 0.1)"


def test_repeated_event_is_not_learned_twice_and_an_update_is(
    backend: httpx.Client, digits: tuple[list[Item], list[Item]]
) -> None:
    pool, _ = digits
    learn(backend, pool[:5])
    again = annotate(backend, 1, pool[0].data, pool[0].label)
    assert again == {
        "model_version": "sklearn-7-v5",
        "examples": 5,
        "deleted_since_retrain": 0,
        "skipped": "already learned",
    }
    other = "1" if pool[0].label != "1" else "2"
    updated = annotate(backend, 1, pool[0].data, other, action="ANNOTATION_UPDATED")
    assert updated["model_version"] == "sklearn-7-v6"
    assert updated["examples"] == 5


def test_model_survives_a_restart(data_dir: Path, digits: tuple[list[Item], list[Item]]) -> None:
    pool, test = digits
    tasks = [{"id": 5000 + i, "data": item.data} for i, item in enumerate(test[:20])]
    with ServerThread(create_app(data_dir)) as server, httpx.Client(base_url=server.url) as client:
        version = learn(client, pool[:40])
        before = predict(client, tasks)
    with ServerThread(create_app(data_dir)) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/setup", json=setup_body()).json() == {"model_version": version}
        assert predict(client, tasks) == before
        assert annotate(client, 41, pool[40].data, pool[40].label)["model_version"] == "sklearn-7-v41"


def test_a_new_project_under_the_same_id_starts_over(
    backend: httpx.Client, digits: tuple[list[Item], list[Item]]
) -> None:
    pool, test = digits
    backend.post("/setup", json=setup_body())
    learn(backend, pool[:10])
    response = backend.post("/setup", json=setup_body(project="7.1800000000"))
    assert response.json() == {"model_version": "sklearn-7-v11"}, "a fresh model, never a reused version"
    body = {
        "tasks": [{"id": 1, "data": test[0].data}],
        "project": "7.1800000000",
        "label_config": DIGITS_CONFIG,
        "params": {},
    }
    assert backend.post("/predict", json=body).json() == {"results": [[]]}


def test_text_classification_config(backend: httpx.Client) -> None:
    assert backend.post("/setup", json=setup_body(TEXT_CONFIG)).json() == {"model_version": "sklearn-7-v0"}
    examples = [(text, "Positive") for text in POSITIVE] + [(text, "Negative") for text in NEGATIVE]
    for task_id, (text, label) in enumerate(examples, start=1):
        annotate(
            backend, task_id, {"text": text}, label, config=TEXT_CONFIG, from_name="sentiment", to_name="text"
        )
    tasks = [
        {"id": 100, "data": {"text": "love it, excellent"}},
        {"id": 101, "data": {"text": "awful and terrible"}},
    ]
    results = predict(backend, tasks, TEXT_CONFIG)
    assert [r["result"][0]["value"]["choices"] for r in results] == [["Positive"], ["Negative"]]
    assert all(
        r["result"][0]["from_name"] == "sentiment" and r["result"][0]["to_name"] == "text" for r in results
    )
    missing = predict(backend, [{"id": 102, "data": {"other": "x"}}], TEXT_CONFIG)
    assert missing == [[]], "a task without the text field gets no prediction"


def test_unsupported_config_predicts_nothing(
    backend: httpx.Client, digits: tuple[list[Item], list[Item]]
) -> None:
    config = """<View><Image name="image" value="$image"/>
      <RectangleLabels name="box" toName="image"><Label value="A"/><Label value="B"/></RectangleLabels></View>"""
    assert backend.post("/setup", json=setup_body(config)).json() == {"model_version": "sklearn-7-v0"}
    _, test = digits
    assert predict(backend, [{"id": 1, "data": test[0].data}], config) == [[]]
    body = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 7, "label_config": config},
        "task": {"id": 1, "data": test[0].data},
        "annotation": {"id": 1, "result": []},
    }
    response = backend.post("/webhook", json=body)
    assert response.status_code == 201
    assert response.json()["result"]["model_version"] == "sklearn-7-v0"


def test_errors_and_unknown_events_look_like_2x(backend: httpx.Client) -> None:
    response = backend.post("/predict", json={"tasks": []})
    assert response.status_code == 500
    assert response.json()["status"] == 500
    assert response.json()["detail"].startswith("ValidationError: ")
    as_object = setup_body() | {"extra_params": {"a": 1}}
    response = backend.post("/setup", json=as_object)
    assert response.status_code == 500, "2.x answers 500 to extra_params sent as an object"
    response = backend.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}})
    assert (response.status_code, response.json()) == (200, {"status": "Unknown event"})
    response = backend.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 404}})
    assert response.status_code == 500
    assert (
        response.json()["detail"]
        == "ValueError: project 404 is unknown: send its label_config or call /setup"
    )


def test_media_is_fetched_only_from_the_annotation_server(backend: httpx.Client) -> None:
    backend.post("/setup", json=setup_body(hostname="http://127.0.0.1:9"))
    remote = {"id": 1, "data": {"image": "http://127.0.0.2:9/data/upload/1.png"}}
    # The check happens before any request: nothing is sent anywhere.
    for body in ({"id": 1, "data": {"image": "data:image/png;base64,@@@"}}, remote):
        response = backend.post(
            "/webhook",
            json={
                "action": "ANNOTATION_CREATED",
                "project": {"id": 7, "label_config": DIGITS_CONFIG},
                "task": body,
                "annotation": {"id": 1, "result": choice("3")},
            },
        )
        assert response.status_code == 500
        assert response.json()["detail"].startswith("ValueError: ")
    assert "not on the annotation server" in response.json()["detail"]


def _png(label: int) -> bytes:
    """A crude, distinct 8x8 picture per label."""
    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[label * 2 : label * 2 + 2, :] = 255
    return grey_png(pixels)


def annotation_server(tasks: list[dict[str, Any]]) -> FastAPI:
    """Just enough of an annotation server for training: an export and token-protected media."""
    app = FastAPI()

    def check(authorization: str | None) -> None:
        if authorization != f"Token {TOKEN}":
            raise HTTPException(401)

    @app.get("/api/projects/{project_id}/export")
    async def export(
        project_id: int, exportType: str, authorization: str | None = Header(None)
    ) -> list[dict[str, Any]]:
        check(authorization)
        assert (project_id, exportType) == (7, "JSON")
        return tasks

    @app.get("/data/upload/{label}.png")
    async def media(label: int, authorization: str | None = Header(None)) -> Response:
        check(authorization)
        return Response(_png(label), media_type="image/png")

    return app


def test_start_training_retrains_from_the_export_with_the_latest_annotations(backend: httpx.Client) -> None:
    def exported(task_id: int, label: int, annotations: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": task_id, "data": {"image": f"/data/upload/{label}.png"}, "annotations": annotations}

    tasks = [
        exported(1, 0, [{"id": 11, "result": choice("0"), "updated_at": "2026-01-01T00:00:00Z"}]),
        exported(2, 1, [{"id": 12, "result": choice("1"), "updated_at": "2026-01-01T00:00:00Z"}]),
        # The later annotation wins; a cancelled one and an unlabeled task teach nothing.
        exported(
            3,
            2,
            [
                {"id": 13, "result": choice("0"), "updated_at": "2026-01-01T00:00:00Z"},
                {"id": 14, "result": choice("2"), "updated_at": "2026-01-02T00:00:00Z"},
                {
                    "id": 15,
                    "result": choice("0"),
                    "was_cancelled": True,
                    "updated_at": "2026-01-03T00:00:00Z",
                },
            ],
        ),
        exported(4, 3, []),
    ]
    with ServerThread(annotation_server(tasks)) as server:
        assert backend.post("/setup", json=setup_body(hostname=server.url)).status_code == 200
        learn_one = annotate(backend, 9, {"image": f"{server.url}/data/upload/3.png"}, "3")
        assert learn_one["model_version"] == "sklearn-7-v1"
        deleted = backend.post(
            "/webhook",
            json={"action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": [{"id": 9}]},
        )
        assert deleted.status_code == 201
        assert deleted.json()["result"] == {
            "model_version": "sklearn-7-v1",
            "examples": 0,
            "deleted_since_retrain": 1,
        }
        response = backend.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
        assert response.status_code == 201, response.text
        assert response.json() == {
            "result": {"model_version": "sklearn-7-v2", "examples": 3, "deleted_since_retrain": 0},
            "status": "ok",
        }
        results = predict(backend, [{"id": t, "data": {"image": f"/data/upload/{t}.png"}} for t in (0, 1, 2)])
    assert [r["result"][0]["value"]["choices"] for r in results] == [["0"], ["1"], ["2"]]


def test_data_urls_decode_like_the_digits(digits: tuple[list[Item], list[Item]]) -> None:
    from examples.sklearn_backend.media import decode_data_url
    from examples.sklearn_backend.model import image_vector

    pool, _ = digits
    vector = image_vector(decode_data_url(pool[0].data["image"]))
    assert vector.shape == (64,)
    assert float(vector.min()) >= 0.0 and float(vector.max()) <= 1.0
    encoded = base64.b64encode(_png(1)).decode()
    assert image_vector(decode_data_url(f"data:image/png;base64,{encoded}"))[16:24].tolist() == [1.0] * 8
