"""The gateway's HTTP routes on a real server: service-token internal routes and the public predict."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.gateway.conftest import tasks
from tests.support.builders import connect_backend, create_project
from tests.support.servers import ServerThread

PROJECT = {"id": 3, "created_at_ts": 1_700_000_000, "label_config": SENTIMENT_CONFIG}


def public_body(backend_id: int, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tasks": [{"data": {"text": "great"}}, {"data": {"text": "meh"}}],
        "backend": backend_id,
    }
    return {**body, **changes}


@pytest.fixture
async def stored(api: httpx.AsyncClient, gateway: httpx.AsyncClient, fake: FakeBackend) -> dict[str, Any]:
    """A backend stored in the API (the fake, checked through the gateway); the public route names it."""
    project = await create_project(api, SENTIMENT_CONFIG, title="public predict")
    backend = await connect_backend(api, project["id"], fake.url)
    fake.clear_requests()
    return {"id": backend["id"], "project": project}


@pytest.mark.parametrize("path", ["/internal/backends/check", "/internal/predict", "/internal/webhook"])
@pytest.mark.parametrize(
    "authorization", [None, f"Bearer {TEST_API_TOKEN}", f"Token {TEST_API_TOKEN}", "Bearer x"]
)
async def test_internal_routes_need_the_service_token(
    gateway: httpx.AsyncClient, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=str(gateway.base_url), headers=headers) as client:
        response = await client.post(path, json={})
    assert response.status_code == 401
    assert response.json()["detail"].startswith("This route is for labelloop services only")


async def test_check_route(gateway: httpx.AsyncClient, fake: FakeBackend) -> None:
    body = {"backend": {"url": fake.url}, "project": PROJECT, "hostname": "http://api"}
    response = await gateway.post("/internal/backends/check", json=body)
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "model_version": "fake-v1",
        "model_class": "FakeBackend",
        "failure": None,
        "error": None,
    }


async def test_check_route_names_the_policy_rule(gateway: httpx.AsyncClient) -> None:
    body = {"backend": {"url": "http://169.254.169.254/latest"}, "project": PROJECT, "hostname": "h"}
    response = await gateway.post("/internal/backends/check", json=body)
    assert response.json()["failure"] == "policy"
    assert response.json()["error"] == (
        "address 169.254.169.254 is in denied network 169.254.0.0/16 "
        "(link-local / cloud metadata; allow with LABELLOOP_ALLOWED_NETWORKS)"
    )


async def test_predict_route(gateway: httpx.AsyncClient, fake: FakeBackend) -> None:
    body = {"backend": {"url": fake.url, "batch_size": 2}, "project": PROJECT, "tasks": tasks(3)}
    response = await gateway.post("/internal/predict", json=body)
    assert response.status_code == 200
    result = response.json()
    assert [p["task_id"] for p in result["predictions"]] == [1, 2, 3]
    assert result["model_version"] == "fake-v1" and result["errors"] == []

    body["tasks"] = [{"data": {"text": "no id"}}]
    response = await gateway.post("/internal/predict", json=body)
    assert response.status_code == 400
    assert response.json()["detail"] == "tasks[0].id must be an integer, got None"


async def test_webhook_route(gateway: httpx.AsyncClient, fake: FakeBackend) -> None:
    fake.configure(webhook_fail=503)
    body = {"backend": {"url": fake.url}, "payload": {"action": "START_TRAINING", "project": {"id": 3}}}
    response = await gateway.post("/internal/webhook", json=body)
    assert response.status_code == 200
    assert response.json()["ok"] is False and response.json()["status_code"] == 503
    fake.configure(webhook_fail=None)
    assert (await gateway.post("/internal/webhook", json=body)).json()["ok"] is True


async def test_public_predict_with_the_service_token(
    gateway: httpx.AsyncClient, fake: FakeBackend, stored: dict[str, Any]
) -> None:
    response = await gateway.post("/api/predict", json=public_body(stored["id"]))
    assert response.status_code == 200, response.text
    result = response.json()
    assert [(p["task_id"], p["result"][0]["value"]["choices"]) for p in result["predictions"]] == [
        (0, ["Positive"]),
        (1, ["Negative"]),
    ]
    assert result["model_version"] == "fake-v1"
    (call,) = fake.calls("/predict")
    assert call.body["project"].startswith(f"{stored['project']['id']}.")
    assert call.body["label_config"] == SENTIMENT_CONFIG
    slash = await gateway.post("/api/predict/", json=public_body(stored["id"]))
    assert slash.status_code == 200


async def test_public_predict_bad_input_names_the_field(
    gateway: httpx.AsyncClient, fake: FakeBackend, stored: dict[str, Any]
) -> None:
    many = public_body(stored["id"], tasks=[{"data": {"text": "x"}}] * 101)
    response = await gateway.post("/api/predict", json=many)
    assert response.status_code == 413
    assert response.json()["detail"] == "tasks: at most 100 tasks per request, got 101"

    dup = public_body(stored["id"], tasks=[{"id": 1, "data": {}}, {"id": 1, "data": {}}])
    response = await gateway.post("/api/predict", json=dup)
    assert response.status_code == 400
    assert response.json()["detail"] == "tasks[1].id 1 is not unique"

    response = await gateway.post("/api/predict", json=public_body(stored["id"] + 1000))
    assert response.status_code == 404
    assert response.json()["detail"] == f"ML backend {stored['id'] + 1000} not found."
    assert fake.calls("/predict") == []


async def test_public_predict_takes_no_url_label_config_or_timeout(
    gateway: httpx.AsyncClient, fake: FakeBackend, stored: dict[str, Any]
) -> None:
    """The route used to take any URL and a caller-chosen timeout (one call with 0.0001 s opened the
    backend's breaker for everyone): only a stored backend's id is accepted now, called as configured."""
    for changes in (
        {"backend": {"url": fake.url, "timeout_s": 0.001}},
        {"label_config": SENTIMENT_CONFIG},
        {"timeout_s": 0.001},
    ):
        response = await gateway.post("/api/predict", json=public_body(stored["id"], **changes))
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][:2] == ["body", next(iter(changes))]
    assert fake.calls("/predict") == []


async def test_public_predict_accepts_client_tokens_the_api_vouches_for(
    api: httpx.AsyncClient, gateway: httpx.AsyncClient, stored: dict[str, Any]
) -> None:
    base = str(gateway.base_url)
    for authorization in (f"Token {TEST_API_TOKEN}", f"Bearer {TEST_API_TOKEN}"):
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": authorization}) as client:
            response = await client.post("/api/predict", json=public_body(stored["id"]))
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
    for headers in ({"Authorization": "Token not-a-real-token"}, {}):
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:
            response = await client.post("/api/predict", json=public_body(stored["id"]))
        assert response.status_code == 401


async def test_public_predict_reaches_only_the_callers_organization(
    api: httpx.AsyncClient,
    gateway: httpx.AsyncClient,
    fake: FakeBackend,
    stored: dict[str, Any],
    database_url: str,
) -> None:
    """Another organization's user is told the backend does not exist, as on ``/api/ml/{id}``; a backend's
    own token (which reads its project's tasks) cannot ask for predictions."""
    outsider = await _cli_token(database_url, "--email", "mallory@example.com")
    base = str(gateway.base_url)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Token {outsider}"}) as client:
        response = await client.post("/api/predict", json=public_body(stored["id"]))
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == f"ML backend {stored['id']} not found."
    assert fake.calls("/predict") == []


async def test_an_unreachable_api_is_503(
    api_server: ServerThread, gateway: httpx.AsyncClient, stored: dict[str, Any]
) -> None:
    base = str(gateway.base_url)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Token {TEST_API_TOKEN}"}
    ) as client:
        assert (await client.post("/api/predict", json=public_body(stored["id"]))).status_code == 200
        api_server.stop()
        response = await client.post("/api/predict", json=public_body(stored["id"]))
    assert response.status_code == 503
    assert response.json()["detail"].startswith("cannot look the backend up: annotation API unreachable")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": "Token unknown-token"}) as client:
        response = await client.post("/api/predict", json=public_body(stored["id"]))
    assert response.status_code == 503
    assert response.json()["detail"].startswith("cannot verify the token: annotation API unreachable")


async def _cli_token(database_url: str, *args: str) -> str:
    """A user created by the real CLI (its own organization unless told otherwise); its API token."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.annotation_api.cli",
        "create-user",
        *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    return stdout.decode().strip()
