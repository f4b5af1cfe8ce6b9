"""Bodies the gateway cannot parse or pass on are a 422 naming the field, never a 500 (found by fuzzing).

FastAPI's default validation answer echoes the bad input and could not render undecodable bytes, a lone
surrogate or an infinite float; values that validate but cannot be sent on as JSON failed later.
"""

from __future__ import annotations

import httpx
import pytest

from tests.fakes.fake_backend import FakeBackend


def _body(task: str = '{"data": {"text": "a"}}') -> str:
    """The public predict's body; validation answers before the backend id is ever looked up."""
    return f'{{"tasks": [{task}], "backend": 1}}'


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe",
        rb'{"tasks": [{"data": {"text": "\ud800"}}], "backend": "x"}',
        b'{"tasks": [{"data": {"text": 1e400}}], "backend": "x"}',
    ],
)
async def test_unrenderable_bad_input_is_a_422(gateway: httpx.AsyncClient, content: bytes) -> None:
    response = await gateway.post(
        "/api/predict", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (r'{"data": {"text": "\udfff"}}', "tasks.0.data.text"),
        ('{"id": 99999999999999999999999, "data": {"text": "a"}}', "tasks.0.id"),
    ],
)
async def test_values_that_cannot_be_sent_on_are_a_422_naming_the_field(
    gateway: httpx.AsyncClient, fake: FakeBackend, task: str, field: str
) -> None:
    response = await gateway.post(
        "/api/predict", content=_body(task).encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    message = response.json()["detail"][0]["msg"]
    # A lone surrogate may already be refused by the JSON parser, which names its position instead.
    assert f"{field}: " in message or "surrogate" in message, message
    assert not fake.requests  # nothing was sent to the backend


async def test_a_webhook_payload_that_cannot_be_sent_is_refused_not_a_500(
    gateway: httpx.AsyncClient, fake: FakeBackend
) -> None:
    content = f'{{"backend": {{"url": "{fake.url}"}}, "payload": {{"action": "ANNOTATION_CREATED", "n": {10**23}}}}}'
    response = await gateway.post(
        "/internal/webhook", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is False
    assert "cannot be sent as JSON" in response.json()["error"]
    assert not fake.requests
