"""The predict routes validate their body themselves (``LeanRoute``): same answers as FastAPI's own."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes.fake_backend import FakeBackend


@pytest.mark.parametrize("path", ["/internal/predict", "/api/predict", "/api/predict/"])
async def test_malformed_json_is_a_422_at_the_body(gateway: httpx.AsyncClient, path: str) -> None:
    response = await gateway.post(path, content=b'{"tasks": [', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


async def test_missing_and_wrong_fields_are_named(gateway: httpx.AsyncClient, fake: FakeBackend) -> None:
    response = await gateway.post("/internal/predict", json={"backend": {"url": fake.url}, "tasks": "x"})
    assert response.status_code == 422
    locs = sorted(tuple(error["loc"]) for error in response.json()["detail"])
    assert locs == [("body", "project"), ("body", "tasks")]

    response = await gateway.post("/api/predict", json={"backend": 1, "tasks": []})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "tasks"]]


@pytest.mark.parametrize("path", ["/internal/predict", "/api/predict"])
async def test_a_token_with_non_ascii_bytes_is_refused_not_a_500(
    gateway: httpx.AsyncClient, path: str
) -> None:
    headers = {b"Authorization": "Bearer sérvice".encode("latin-1")}
    async with httpx.AsyncClient(base_url=str(gateway.base_url), headers=headers) as client:
        response = await client.post(path, json={})
    assert response.status_code == 401
