"""The named-entity example backend over real HTTP: protocol shapes, learning, interactive matching,
and end to end through the annotation API and the real gateway."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.ner_backend.app import MODEL_CLASS, create_app
from tests.support.builders import connect_backend, create_project, import_tasks
from tests.support.servers import ServerThread, bound_socket
from tests.support.waiting import wait_for, wait_job
from tests.support.workers import RunBurst

REPO_ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def ner_server(data_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(create_app(data_dir)) as server:
        yield server


@pytest.mark.usefixtures("gateway_server")
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_interactive_and_learned_predictions_through_the_api_and_gateway(
    api: httpx.AsyncClient, ner_server: ServerThread, run_burst: RunBurst
) -> None:
    project = await create_project(api, NER_CONFIG)
    other = "Acme Corp sued alice."
    task_ids = (
        await import_tasks(api, project["id"], [{"text": TEXT}, {"text": other}], return_task_ids=True)
    )["task_ids"]
    backend = await connect_backend(api, project["id"], ner_server.url, is_interactive=True)
    assert backend["model_version"] == "ner-substring-v0"

    # the body Label Studio's editor sends when the annotator selects the first "Alice"
    body = {"task": task_ids[0], "context": {"result": [span(0, 5, "PER")]}}
    response = await api.post(f"/api/ml/{backend['id']}/interactive-annotating", json=body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    start = TEXT.index("alice")
    assert [(r["value"]["start"], r["value"]["end"], r["value"]["labels"]) for r in data["result"]] == [
        (start, start + 5, ["PER"])
    ]
    assert data["model_version"] == "ner-substring-v0"

    # an annotation teaches it, through the event outbox and the gateway's webhook delivery
    acme = TEXT.index("Acme Corp")
    annotated = await api.post(
        f"/api/tasks/{task_ids[0]}/annotations",
        json={"result": [span(0, 5, "PER"), span(acme, acme + 9, "ORG")]},
    )
    assert annotated.status_code == 201, annotated.text

    async def learned() -> bool:
        await run_burst()
        async with httpx.AsyncClient(base_url=ner_server.url) as client:
            setup = await client.post("/setup", json={"project": f"{project['id']}.0", "schema": NER_CONFIG})
        return bool(setup.json()["model_version"] == "ner-substring-v1")

    await wait_for(learned, what="the backend to learn from the delivered annotation")
    started = await api.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project["id"]},
        json={"selectedItems": {"all": False, "included": [task_ids[1]]}},
    )
    assert started.status_code == 200, started.text
    await run_burst()
    assert (await wait_job(api, started.json()["job_id"]))["predicted"] == 1
    predictions = (await api.get(f"/api/tasks/{task_ids[1]}")).json()["predictions"]
    assert [
        (p["model_version"], [(r["value"]["text"], r["value"]["labels"]) for r in p["result"]])
        for p in predictions
    ] == [("ner-substring-v1", [("Acme Corp", ["ORG"]), ("alice", ["PER"])])]


async def test_served_by_its_command_it_logs_json_lines_like_the_services(tmp_path: Path) -> None:
    """``make run`` interleaves every process's output: the NER backend's lines, uvicorn's included, are
    the services' JSON lines, named after it, down to "stopped"."""
    with bound_socket() as sock:
        port = sock.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "examples.ner_backend", "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "LABELLOOP_LOG_JSON": "1", "LABELLOOP_LOG_LEVEL": "INFO"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient() as client:

            async def up() -> bool:
                assert process.returncode is None, "the backend exited"
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, 60, "the NER backend to answer /health")
    finally:
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    lines = [line for line in output.decode().splitlines() if line.strip()]
    assert any("Uvicorn running" in line for line in lines), lines
    records = [json.loads(line) for line in lines]  # raises on a plain-text line
    assert {record["service"] for record in records} == {"ner-backend"}
    assert "stopped" in [record["msg"] for record in records]
