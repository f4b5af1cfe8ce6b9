"""Bodies sent to hurt the API: read only once their sender is authenticated, imports parsed as they
stream in, and every value stored is one each later step (jsonb round trip, orjson, the gateway) can
encode — the same rule, with the field named, on every route."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.support.builders import create_project, read_project

_ANSWER_TIMEOUT_S = 20.0
"""Bounds the wait for an answer the server must give without the rest of the body (it never comes)."""


async def _answer_to_partial_body(
    base_url: str, path: str, headers: dict[str, str], declared: int, sent: bytes
) -> tuple[int, bytes]:
    """Status and body of the answer to a request whose body stops after ``sent`` (of ``declared``)."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"{head}Content-Length: {declared}\r\n\r\n".encode() + sent)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), _ANSWER_TIMEOUT_S)
        raw_headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _ANSWER_TIMEOUT_S)
        length = next(
            int(line.split(b":", 1)[1])
            for line in raw_headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), _ANSWER_TIMEOUT_S)
        return int(status_line.split()[1]), body
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "authorization", "detail"),
    [
        ("/api/projects", None, "credentials were not provided"),
        ("/api/projects", "Token not-a-real-token", "Invalid token."),
        ("/api/dm/actions", "Token not-a-real-token", "Invalid token."),
        ("/api/projects/1/import", None, "credentials were not provided"),
        ("/internal/chunks/1/complete", "Bearer not-the-service-token", "labelloop services only"),
    ],
)
async def test_a_body_is_refused_before_it_is_read_when_its_sender_is_not_authenticated(
    api: httpx.AsyncClient, path: str, authorization: str | None, detail: str
) -> None:
    """3 MB declared, 1 KB sent: the 401 cannot wait for (or parse) the rest."""
    headers = {"Authorization": authorization} if authorization else {}
    status, body = await _answer_to_partial_body(str(api.base_url), path, headers, 3_000_000, b"[{}," * 256)
    assert status == 401, body
    assert detail in orjson.loads(body)["detail"]


async def test_import_names_a_bad_task_before_the_rest_of_the_body_arrives(api: httpx.AsyncClient) -> None:
    """The import parses batches as they stream in; nothing of the body is kept whole."""
    project = await create_project(api)
    first = orjson.dumps([{"text": "fine"}] * 3 + [7] + [{"text": "x" * 100}] * 20_000)[:-1] + b","
    headers = {"Authorization": api.headers["Authorization"]}
    path = f"/api/projects/{project['id']}/import"
    status, body = await _answer_to_partial_body(str(api.base_url), path, headers, 50_000_000, first)
    assert status == 400, body
    assert orjson.loads(body)["validation_errors"] == {
        "tasks[3]": ["tasks[3]: must be an object (a task or its data), got int"]
    }
    assert (await read_project(api, project["id"]))["task_number"] == 0


async def test_import_of_many_batches_is_all_or_nothing_and_counts_every_task(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    url = f"/api/projects/{project['id']}/import"
    tasks = [{"text": f"task {i} " + "x" * 200} for i in range(12_000)]  # ~2.6 MB: three batches
    bad = await api.post(url, json=[*tasks, {"text": "last", "n": 1e20}])
    assert bad.status_code == 400, bad.text
    assert list(bad.json()["validation_errors"]) == ["tasks[12000].data"]
    assert (await read_project(api, project["id"]))["task_number"] == 0
    good = await api.post(url, json=tasks, params={"return_task_ids": "true"})
    assert good.status_code == 201, good.text
    ids = good.json()["task_ids"]
    assert len(ids) == len(set(ids)) == 12_000 and ids == sorted(ids)
    assert (await read_project(api, project["id"]))["task_number"] == 12_000
    listed = await api.get("/api/tasks", params={"project": project["id"], "page_size": 1})
    assert listed.json()["total"] == 12_000


async def test_import_refuses_what_a_later_step_could_not_encode(api: httpx.AsyncClient) -> None:
    """What the API stores, every later step can encode and send: the same rule as on every route."""
    project = await create_project(api)
    url = f"/api/projects/{project['id']}/import"
    result = [
        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}
    ]
    deep = '{"a":' * 210 + "1" + "}" * 210  # orjson writes it; the 200-level limit of every route refuses it
    cases = {
        "tasks[1].data": b'[{"text": "ok"}, {"text": "a", "n": 1e20}]',
        "tasks[0].meta": b'[{"data": {"text": "a"}, "meta": {"n": [-1e19]}}]',
        "tasks[0].predictions[0].result": orjson.dumps(
            [{"data": {"text": "a"}, "predictions": [{"result": [{**result[0], "n": 1.5e300}]}]}]
        ),
        "tasks[0].annotations[0].result": orjson.dumps(
            [{"data": {"text": "a"}, "annotations": [{"result": [{**result[0], "n": 2e19}]}]}]
        ),
        "tasks[0].data": f'[{{"text": "b", "x": {deep}}}]'.encode(),
        "tasks[0].predictions[0].model_version": orjson.dumps(
            [{"data": {"text": "a"}, "predictions": [{"result": result, "model_version": "v" * 10_000}]}]
        ),
    }
    for field, body in cases.items():
        response = await api.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (field, response.text)
        assert list(response.json()["validation_errors"]) == [field], response.text
    assert (await read_project(api, project["id"]))["task_number"] == 0


async def test_numbers_postgres_would_widen_are_refused_in_backend_parameters(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    response = await api.post(
        "/api/ml",
        content=f'{{"project": {project["id"]}, "url": "http://127.0.0.1:9", "extra_params": {{"lr": 1e20}}}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert list(response.json()["validation_errors"]) == ["extra_params.lr"]


@pytest.mark.parametrize("path", ["import", "import/predictions"])
async def test_an_import_refuses_a_bad_first_batch_before_the_rest_of_the_body(
    api: httpx.AsyncClient, path: str
) -> None:
    """Task and prediction import stream: 100 MB declared, ~3 MB sent whose first item is bad; the 400
    naming it comes without the rest (a route that read the whole body first would never answer)."""
    project = await create_project(api)
    bad_first = b'[{"task": "one", "result": []},' if path.endswith("predictions") else b"[7,"
    sent = bad_first + (b'{"task": 1, "result": [], "text": "' + b"x" * 1000 + b'"},') * 3000
    status, body = await _answer_to_partial_body(
        str(api.base_url),
        f"/api/projects/{project['id']}/{path}",
        {"Authorization": api.headers["Authorization"]},
        100_000_000,
        sent,
    )
    assert status == 400, body
    field = "0.task" if path.endswith("predictions") else "tasks[0]"
    assert field in orjson.loads(body)["validation_errors"], body
