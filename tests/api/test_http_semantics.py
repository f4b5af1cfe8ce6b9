"""What the conformance run checks, pinned by hand over real HTTP: 405 with the path's full ``Allow``,
fixed paths not mistaken for ids, JSON bodies taken at their JSON types (no ``"1"`` for 1, no ``0`` for
false, but ``5.0`` is the integer 5), and the spec declaring the text the services refuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from shared.json_values import text_problem
from shared.openapi_values import TEXT_PATTERN
from tests.support.builders import choice, project_with_tasks

SPEC_DIR = Path(__file__).resolve().parents[2] / "docs" / "openapi"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/api/tasks/1", "DELETE, GET, PATCH"),
        ("PUT", "/api/projects", "GET, POST"),
        ("PUT", "/api/projects/1/", "DELETE, GET, PATCH"),
        ("PATCH", "/api/projects/validate", "POST"),
        ("GET", "/api/projects/validate", "POST"),
        ("DELETE", "/api/projects/1/import/predictions", "POST"),
    ],
)
async def test_wrong_method_is_405_listing_every_method(
    api: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await api.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow


async def test_project_paths_take_numeric_ids_only(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/projects/abc")).status_code == 404
    too_big = await api.get(f"/api/projects/{2**31}")
    assert too_big.status_code == 400
    assert "project_id" in too_big.json()["validation_errors"]


async def test_bodies_are_taken_at_their_json_types(api: httpx.AsyncClient) -> None:
    project, (task_id, *_) = await project_with_tasks(api, 1)
    refused = [
        ("/api/projects", {"repredict_on_new_version": 0}, "repredict_on_new_version"),
        ("/api/projects", {"title": 5}, "title"),
        ("/api/predictions", {"task": str(task_id), "result": choice("positive")}, "task"),
        ("/api/predictions", {"task": task_id, "result": choice("positive"), "score": False}, "score"),
        ("/api/tasks", {"project": project["id"], "data": {"text": "x"}, "meta": []}, "meta"),
        ("/api/tasks", {"project": True, "data": {"text": "x"}}, "project"),
    ]
    for path, body, field in refused:
        response = await api.post(path, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert field in response.json()["validation_errors"], response.json()
    whole = await api.post("/api/tasks", json={"project": float(project["id"]), "data": {"text": "x"}})
    assert whole.status_code == 201, whole.text
    assert (
        await api.post("/api/predictions", json={"task": task_id, "result": [], "score": 1})
    ).status_code == 201


def _request_strings(spec: dict[str, object]) -> list[dict[str, object]]:
    """Every ``type: string`` schema of the spec's parameters and request bodies (refs followed)."""
    found: list[dict[str, object]] = []
    schemas = spec.get("components", {}).get("schemas", {})  # type: ignore[attr-defined]
    seen: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in seen:
                seen.add(ref)
                walk(schemas[ref.rsplit("/", 1)[-1]])
            if node.get("type") == "string":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for operations in spec["paths"].values():  # type: ignore[index]
        for operation in operations.values():
            walk(operation.get("parameters", []))
            walk(operation.get("requestBody", {}))
    return found


def test_the_api_spec_declares_the_text_it_refuses() -> None:
    """Every request string of the API's spec carries the pattern, and the pattern refuses what
    ``shared.json_values`` refuses in Unicode text (NUL: Postgres cannot store it). The gateway stores
    nothing and passes NUL on: its spec has no such pattern."""
    spec = json.loads((SPEC_DIR / "annotation_api.json").read_text())
    strings = _request_strings(spec)
    assert strings
    for schema in strings:
        if "enum" in schema or "const" in schema:
            continue
        patterns = [schema.get("pattern"), *(part.get("pattern") for part in schema.get("allOf", []))]  # type: ignore[attr-defined]
        assert TEXT_PATTERN in patterns, schema
    pattern = re.compile(TEXT_PATTERN)
    for text in ("", "plain", "ünïcode ✓ 𝄞", "tab\tnew\nline", "a\x00b", "\x00"):
        assert (pattern.search(text) is not None) == (text_problem(text) is None), repr(text)
    gateway = json.loads((SPEC_DIR / "model_gateway.json").read_text())
    assert all("pattern" not in schema for schema in _request_strings(gateway))
