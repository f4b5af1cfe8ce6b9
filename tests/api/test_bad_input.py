"""Input the database or orjson cannot take is a 400 naming the field, never a 500 (found by fuzzing).

NUL characters, lone UTF-16 surrogates, integers beyond 64 bits and NaN pass Python's JSON parser;
ids and page numbers beyond the column's range pass a bare ``int``.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from services.annotation_api.errors import database_answer

LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">'
    '<Choice value="positive"/><Choice value="negative"/></Choices></View>'
)
RESULT = [
    {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}
]


async def _project_with_task(api: httpx.AsyncClient) -> tuple[int, int]:
    response = await api.post("/api/projects", json={"title": "p", "label_config": LABEL_CONFIG})
    assert response.status_code == 201, response.text
    project_id: int = response.json()["id"]
    response = await api.post(
        f"/api/projects/{project_id}/import", json=[{"text": "a"}], params={"return_task_ids": "true"}
    )
    assert response.status_code == 201, response.text
    return project_id, response.json()["task_ids"][0]


async def _send(api: httpx.AsyncClient, method: str, url: str, raw_json: str) -> httpx.Response:
    """Raw JSON text: ``json=`` could not carry a lone surrogate, NaN or a NUL escape as written."""
    return await api.request(
        method, url, content=raw_json.encode(), headers={"Content-Type": "application/json"}
    )


def _assert_names(response: httpx.Response, field: str, words: str) -> None:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert field in body["validation_errors"], body
    assert words in body["detail"], body


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (r'"\udfff"', "lone UTF-16 surrogate"),
        (r'"a\u0000b"', "NUL character"),
        ("99999999999999999999999", "beyond 64 bits"),
        ("NaN", "not a finite number"),
        ("1e20", "Postgres would keep as an integer beyond 64 bits"),
        ("-9.3e18", "Postgres would keep as an integer beyond 64 bits"),
    ],
)
async def test_unstorable_values_in_task_data_are_a_400_naming_the_field(
    api: httpx.AsyncClient, value: str, words: str
) -> None:
    project_id, task_id = await _project_with_task(api)
    created = await _send(
        api, "POST", "/api/tasks", f'{{"project": {project_id}, "data": {{"text": "a", "n": {value}}}}}'
    )
    _assert_names(created, "data.n", words)
    patched = await _send(api, "PATCH", f"/api/tasks/{task_id}", f'{{"meta": {{"deep": [1, {value}]}}}}')
    _assert_names(patched, "meta.deep", words)
    assert patched.json()["detail"].startswith("meta.deep.1: ")
    listed = await api.get("/api/tasks", params={"project": project_id})
    assert listed.json()["total"] == 1  # nothing half-written


async def test_unstorable_text_in_keys_strings_and_queries_is_named(api: httpx.AsyncClient) -> None:
    project_id, task_id = await _project_with_task(api)
    _assert_names(
        await _send(api, "POST", "/api/projects/validate", r'{"label_config": "\udfff"}'),
        "label_config",
        "surrogate",
    )
    _assert_names(await _send(api, "POST", "/api/projects", r'{"title": "a\u0000b"}'), "title", "NUL")
    key = await _send(api, "PATCH", f"/api/tasks/{task_id}", r'{"meta": {"k\u0000": 1}}')
    _assert_names(key, "meta.k\\u0000", "key contains a NUL")
    query = await api.get("/api/tasks", params={"project": project_id, "has_predictions_of": "v\x00"})
    _assert_names(query, "has_predictions_of", "NUL")


async def test_prediction_import_names_the_item_holding_unstorable_values(api: httpx.AsyncClient) -> None:
    project_id, task_id = await _project_with_task(api)
    url = f"/api/projects/{project_id}/import/predictions"
    nul = await _send(api, "POST", url, f'[{{"task": {task_id}, "result": [], "model_version": "v\\u0000"}}]')
    _assert_names(nul, "0.model_version", "NUL")
    big = await _send(
        api, "POST", url, json.dumps([{"task": task_id, "result": [{**RESULT[0], "n": 10**23}]}])
    )
    _assert_names(big, "0.result", "beyond 64 bits")
    listed = await api.get("/api/predictions", params={"task": task_id})
    assert listed.json() == []


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/tasks?project={project}&page=99999999999999999999", "page"),
        ("/api/tasks?project={project}&page=4611686018427387904", "page"),
        ("/api/projects?page=4611686018427387904", "page"),
        ("/api/ml/2147483648", "backend_id"),
        ("/api/ml?project=2147483648", "project"),
        ("/api/jobs/9223372036854775808", "job_id"),
        ("/api/jobs?project=2147483648", "project"),
        ("/api/predictions?project=2147483648", "project"),
        ("/api/projects/2147483648/model-versions", "project_id"),
        ("/api/dm/actions?project=2147483648", "project"),
    ],
)
async def test_ids_and_pages_beyond_their_column_are_a_400_naming_the_parameter(
    api: httpx.AsyncClient, url: str, field: str
) -> None:
    project_id, _ = await _project_with_task(api)
    response = await api.get(url.format(project=project_id))
    _assert_names(response, field, "less than or equal to")


async def test_a_huge_backend_id_in_a_predict_action_is_named(api: httpx.AsyncClient) -> None:
    project_id, _ = await _project_with_task(api)
    response = await api.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project_id},
        json={"ml_backend": 99_999_999_999},
    )
    _assert_names(response, "ml_backend", "ML backend id")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/xml"])
async def test_deeply_nested_bodies_are_a_4xx(api: httpx.AsyncClient, content_type: str) -> None:
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    response = await api.post("/api/tasks", content=deep, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text


def test_driver_errors_a_client_can_act_on_are_4xx() -> None:
    """Queries on the raw asyncpg connection (hot paths) are not wrapped by SQLAlchemy: their data errors
    are a 400 and a deadlock or serialization failure a 409 "retry" (Postgres rolled everything back)."""
    deadlock = database_answer(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    assert deadlock is not None and deadlock.status_code == 409
    serialization = database_answer(asyncpg.exceptions.SerializationError("could not serialize"))
    assert serialization is not None and serialization.status_code == 409
    out_of_range = database_answer(asyncpg.exceptions.NumericValueOutOfRangeError("out of range"))
    assert out_of_range is not None and out_of_range.status_code == 400
    assert database_answer(asyncpg.exceptions.UndefinedTableError("no such table")) is None


def test_a_lost_database_connection_is_a_503_to_retry_on_either_path() -> None:
    """A connection Postgres dropped or is shutting down fails its request with 503 + ``Retry-After``, on
    the raw asyncpg connection as through SQLAlchemy (which says so with ``connection_invalidated``)."""
    for lost in (
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    ):
        answer = database_answer(lost)
        assert answer is not None and answer.status_code == 503, lost
        assert answer.headers["Retry-After"] == "1"
    invalidated = database_answer(asyncpg.InterfaceError("connection is closed"), connection_lost=True)
    assert invalidated is not None and invalidated.status_code == 503


@pytest.mark.parametrize("path", ["/internal/chunks/1/lease", "/api/projects"])
async def test_a_non_ascii_credential_is_a_401(api: httpx.AsyncClient, path: str) -> None:
    for scheme in (b"Bearer", b"Token"):
        headers = {"Authorization": scheme + " caf\xc3\xa9\xff".encode("latin-1")}
        async with httpx.AsyncClient(base_url=str(api.base_url), headers=headers) as client:
            response = await client.request("POST" if path.startswith("/internal") else "GET", path)
        assert response.status_code == 401, response.text


async def test_json_nested_deeper_than_can_be_stored_is_a_400_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    project_id, task_id = await _project_with_task(api)
    deep = '{"a":' * 300 + "1" + "}" * 300
    created = await _send(
        api, "POST", "/api/tasks", f'{{"project": {project_id}, "data": {{"text": "a", "x": {deep}}}}}'
    )
    _assert_names(created, "data.x.a", "nested deeper than 200 levels")
    result = f'[{{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {{"choices": ["positive"]}}, "x": {deep}}}]'
    annotated = await _send(api, "POST", f"/api/tasks/{task_id}/annotations", f'{{"result": {result}}}')
    _assert_names(annotated, "result.0.x", "nested deeper than 200 levels")
    imported = await _send(
        api, "POST", f"/api/projects/{project_id}/import", f'[{{"text": "b", "x": {deep}}}]'
    )
    _assert_names(imported, "tasks[0].data", "cannot be stored as JSON")
    listed = await api.get("/api/tasks", params={"project": project_id})
    assert listed.json()["total"] == 1
