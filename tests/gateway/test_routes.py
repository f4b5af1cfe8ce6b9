"""The gateway's HTTP routes on a real server: service-token internal routes and the public predict."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.gateway.conftest import tasks
from tests.support.servers import ServerThread

PROJECT = {"id": 3, "created_at_ts": 1_700_000_000, "label_config": SENTIMENT_CONFIG}


def public_body(backend_url: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tasks": [{"data": {"text": "great"}}, {"data": {"text": "meh"}}],
        "label_config": SENTIMENT_CONFIG,
        "backend": {"url": backend_url},
    }
    return {**body, **changes}


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


async def test_public_predict_with_the_service_token(gateway: httpx.AsyncClient, fake: FakeBackend) -> None:
    response = await gateway.post("/api/predict", json=public_body(fake.url))
    assert response.status_code == 200
    result = response.json()
    assert [(p["task_id"], p["result"][0]["value"]["choices"]) for p in result["predictions"]] == [
        (0, ["Positive"]),
        (1, ["Negative"]),
    ]
    assert result["model_version"] == "fake-v1"
    assert fake.calls("/predict")[0].body["project"] == "0.0"
    slash = await gateway.post("/api/predict/", json=public_body(fake.url))
    assert slash.status_code == 200


async def test_public_predict_bad_input_names_the_field(
    gateway: httpx.AsyncClient, fake: FakeBackend
) -> None:
    response = await gateway.post("/api/predict", json=public_body(fake.url, label_config="<View><Nope"))
    assert response.status_code == 400
    assert response.json()["detail"].startswith("label_config: ")

    many = public_body(fake.url, tasks=[{"data": {"text": "x"}}] * 101)
    response = await gateway.post("/api/predict", json=many)
    assert response.status_code == 413
    assert response.json()["detail"] == "tasks: at most 100 tasks per request, got 101"

    response = await gateway.post("/api/predict", json=public_body("ftp://files.example/model"))
    assert response.status_code == 400
    assert response.json()["detail"] == "backend.url: backend url must look like http(s)://host[:port][/path]"

    dup = public_body(fake.url, tasks=[{"id": 1, "data": {}}, {"id": 1, "data": {}}])
    response = await gateway.post("/api/predict", json=dup)
    assert response.status_code == 400
    assert response.json()["detail"] == "tasks[1].id 1 is not unique"
    assert fake.calls("/predict") == []


async def test_public_predict_applies_the_address_policy(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/api/predict", json=public_body("http://169.254.169.254"))
    assert response.status_code == 200
    errors = response.json()["errors"]
    assert len(errors) == 2
    assert "in denied network 169.254.0.0/16" in errors[0]["message"]


async def test_public_predict_accepts_client_tokens_the_api_vouches_for(
    api: httpx.AsyncClient, gateway: httpx.AsyncClient, fake: FakeBackend
) -> None:
    base = str(gateway.base_url)
    for authorization in (f"Token {TEST_API_TOKEN}", f"Bearer {TEST_API_TOKEN}"):
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": authorization}) as client:
            response = await client.post("/api/predict", json=public_body(fake.url))
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
    for headers in ({"Authorization": "Token not-a-real-token"}, {}):
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:
            response = await client.post("/api/predict", json=public_body(fake.url))
        assert response.status_code == 401


async def test_client_token_answers_are_cached_and_an_unreachable_api_is_503(
    api: httpx.AsyncClient, api_server: ServerThread, gateway: httpx.AsyncClient, fake: FakeBackend
) -> None:
    base = str(gateway.base_url)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Token {TEST_API_TOKEN}"}
    ) as client:
        assert (await client.post("/api/predict", json=public_body(fake.url))).status_code == 200
        api_server.stop()
        response = await client.post("/api/predict", json=public_body(fake.url))
        assert response.status_code == 200  # vouched for a moment ago: no need to ask again
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": "Token unknown-token"}) as client:
        response = await client.post("/api/predict", json=public_body(fake.url))
    assert response.status_code == 503
    assert response.json()["detail"].startswith("cannot verify the token: annotation API unreachable")


async def test_a_callers_tiny_timeout_does_not_open_the_breaker_for_everyone(
    gateway: httpx.AsyncClient, fake: FakeBackend
) -> None:
    """Timeouts the public caller chose are its own limit, not a sign the backend is down: after more of
    them than the breaker's threshold, internal calls to the same backend still go through."""
    fake.configure(predict_delay_s=0.2)
    for _ in range(7):  # breaker threshold is 5
        response = await gateway.post(
            "/api/predict", json=public_body(fake.url, backend={"url": fake.url, "timeout_s": 0.001})
        )
        assert {error["message"] for error in response.json()["errors"]} == {
            "/predict: no answer within 0.001s"
        }
    fake.configure(predict_delay_s=0.0)
    internal = await gateway.post(
        "/internal/predict", json={"backend": {"url": fake.url}, "project": PROJECT, "tasks": tasks(2)}
    )
    assert internal.json()["errors"] == [] and len(internal.json()["predictions"]) == 2
