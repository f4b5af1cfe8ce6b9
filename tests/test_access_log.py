"""The access line every labelloop service writes per request, as JSON, with the request id."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.logging import JsonFormatter, RequestIdMiddleware
from tests.support.servers import ServerThread


async def _answer(request: Request) -> PlainTextResponse:
    return PlainTextResponse("no", status_code=int(request.query_params.get("status", "200")))


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("labelloop.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def test_one_json_line_per_request_with_its_id(access_lines: io.StringIO) -> None:
    app = RequestIdMiddleware(Starlette(routes=[Route("/thing", _answer, methods=["POST"])]))
    with ServerThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            given = await client.post("/thing?status=404", headers={"X-Request-ID": "trace-me"})
            generated = await client.post("/thing")
    assert given.headers["x-request-id"] == "trace-me"
    new_id = generated.headers["x-request-id"]
    assert len(new_id) == 32 and int(new_id, 16) >= 0
    first, second = [orjson.loads(line) for line in access_lines.getvalue().splitlines()]
    assert first["msg"] == "POST /thing 404" and first["request_id"] == "trace-me"
    assert {key: first[key] for key in ("method", "path", "status")} == {
        "method": "POST",
        "path": "/thing",
        "status": 404,
    }
    assert first["duration_ms"] >= 0 and first["level"] == "info" and first["logger"] == "labelloop.access"
    assert second["request_id"] == new_id and second["status"] == 200
    assert not any(key.startswith("_") for key in first)
