"""The named-entity example backend over real HTTP: protocol shapes, learning, interactive matching."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.ner_backend.app import MODEL_CLASS, create_app
from tests.support.servers import ServerThread

PROJECT = "4.1700000000"
NER_CONFIG = """<View>
  <Labels name="label" toName="text">
    <Label value="PER"/><Label value="ORG"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""
TEXT = "Alice joined Acme. Bob met alice at Acme Corp, and Alicella stayed home."


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "ner"


@pytest.fixture
def backend(data_dir: Path) -> Iterator[httpx.Client]:
    with (
        ServerThread(create_app(data_dir)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield client


def span(start: int, end: int, label: str, text: str = TEXT) -> dict[str, Any]:
    value = {"start": start, "end": end, "text": text[start:end], "labels": [label]}
    return {
        "id": "sel1",
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "origin": "manual",
        "value": value,
    }


def predict(client: httpx.Client, text: str = TEXT, context: dict[str, Any] | None = None) -> list[Any]:
    body = {
        "tasks": [{"id": 1, "data": {"text": text}}],
        "project": PROJECT,
        "label_config": NER_CONFIG,
        "params": {"login": None, "password": None, "context": context},
    }
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    results: list[Any] = response.json()["results"]
    assert len(results) == 1
    return results


def learn(client: httpx.Client, regions: list[dict[str, Any]], action: str = "ANNOTATION_CREATED") -> str:
    body = {
        "action": action,
        "project": {"id": 4, "label_config": NER_CONFIG},
        "task": {"id": 1, "data": {"text": TEXT}},
        "annotation": {"id": 9, "result": regions},
    }
    response = client.post("/webhook", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "ok"
    version: str = response.json()["result"]["model_version"]
    return version


def spans_of(results: list[Any]) -> list[tuple[int, int, str, list[str]]]:
    if results == [[]]:
        return []
    return [
        (r["value"]["start"], r["value"]["end"], r["value"]["text"], r["value"]["labels"])
        for r in results[0]["result"]
    ]


def test_health_setup_and_unknown_events(backend: httpx.Client) -> None:
    assert backend.get("/health").json() == {"status": "UP", "model_class": MODEL_CLASS}
    setup = backend.post(
        "/setup", json={"project": PROJECT, "schema": NER_CONFIG, "hostname": "", "access_token": ""}
    )
    assert setup.json() == {"model_version": "ner-substring-v0"}
    unknown = backend.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 4}})
    assert unknown.status_code == 200 and unknown.json() == {"status": "Unknown event"}
    assert backend.get("/metrics").json() == {}


def test_interactive_proposes_every_other_occurrence_with_the_same_label(backend: httpx.Client) -> None:
    selected = span(0, 5, "PER")  # the first "Alice"
    results = predict(backend, context={"result": [selected]})
    # the other "alice" (any case), not the selected one, not "Alicella"
    assert spans_of(results) == [(TEXT.index("alice"), TEXT.index("alice") + 5, "alice", ["PER"])]
    region = results[0]["result"][0]
    assert (region["from_name"], region["to_name"], region["type"]) == ("label", "text", "labels")
    assert results[0]["model_version"] == "ner-substring-v0"
    # a selection with no other occurrence: no prediction
    assert predict(backend, context={"result": [span(TEXT.index("Bob"), TEXT.index("Bob") + 3, "PER")]}) == [
        []
    ]


def test_learns_from_annotations_and_predicts_every_occurrence(backend: httpx.Client, data_dir: Path) -> None:
    assert predict(backend) == [[]]
    acme = TEXT.index("Acme Corp")
    version = learn(backend, [span(0, 5, "PER"), span(acme, acme + 9, "ORG")])
    assert version == "ner-substring-v1"
    assert learn(backend, [span(0, 5, "PER")], "ANNOTATION_UPDATED") == "ner-substring-v1"  # nothing new

    other = "ACME CORP hired Alice; Acme Corporation did not."
    results = predict(backend, text=other)
    assert results[0]["model_version"] == "ner-substring-v1"
    assert spans_of(results) == [(0, 9, "ACME CORP", ["ORG"]), (16, 21, "Alice", ["PER"])]

    # relabeling is a new version; the state survives a restart
    learn(backend, [span(0, 5, "ORG")])
    with ServerThread(create_app(data_dir)) as server:
        again = httpx.post(
            f"{server.url}/predict",
            json={
                "tasks": [{"id": 2, "data": {"text": other}}],
                "project": PROJECT,
                "label_config": NER_CONFIG,
                "params": {"context": None},
            },
        ).json()["results"]
    assert again[0]["model_version"] == "ner-substring-v2"
    assert [r["value"]["labels"] for r in again[0]["result"]] == [["ORG"], ["ORG"]]
    assert (data_dir / "project-4.json").exists()


def test_learned_entities_stay_in_their_project(backend: httpx.Client) -> None:
    learn(backend, [span(0, 5, "PER")])
    body = {
        "tasks": [{"id": 1, "data": {"text": TEXT}}],
        "project": "5.1700000000",
        "label_config": NER_CONFIG,
        "params": {"context": None},
    }
    assert backend.post("/predict", json=body).json()["results"] == [[]]


def test_a_bad_request_answers_the_upstream_error_shape(backend: httpx.Client) -> None:
    response = backend.post("/predict", json={"tasks": [], "project": PROJECT, "label_config": "<View"})
    assert response.status_code == 500
    assert response.json()["status"] == 500 and "ParseError" in response.json()["detail"]
