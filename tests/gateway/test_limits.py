"""What callers may send the gateway and what a backend may make it hold, through the real server.

Raw sockets, so a test can declare a body it never sends: an answer that arrives anyway proves the gateway
decided without reading (or holding) the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import SERVICE_TOKEN
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.fakes.raw_backend import RawBackend, serve_raw
from tests.support.builders import connect_backend, create_project
from tests.support.servers import ServerThread

PROJECT = {"id": 3, "created_at_ts": 1_700_000_000, "label_config": SENTIMENT_CONFIG}
SERVICE = f"Authorization: Bearer {SERVICE_TOKEN}\r\n".encode()


async def _status(server: ServerThread, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (and ``body``), return the status and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        answer_head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in answer_head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(answer_head.split(b" ", 2)[1]), await reader.readexactly(length)
    finally:
        writer.close()


def _post(path: str, *headers: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: gateway\r\ncontent-type: application/json\r\n" % path.encode()
        + b"".join(headers)
    )


@pytest.mark.parametrize("path", ["/internal/webhook", "/internal/backends/check", "/api/predict"])
async def test_no_body_is_read_before_authentication(gateway_server: ServerThread, path: str) -> None:
    """100 MB declared, nothing sent, no token: the 401 comes without waiting for (or parsing) a byte."""
    status, _ = await _status(gateway_server, _post(path, b"content-length: 100000000\r\n"))
    assert status == 401


@pytest.mark.parametrize(
    ("path", "limit"), [("/internal/predict", 32 * 1024 * 1024), ("/api/predict", 2 * 1024 * 1024)]
)
async def test_a_declared_body_over_the_route_cap_is_refused_unread(
    gateway_server: ServerThread, path: str, limit: int
) -> None:
    status, body = await _status(gateway_server, _post(path, SERVICE, b"content-length: 3000000000\r\n"))
    assert (status, orjson.loads(body)) == (413, {"detail": f"body: at most {limit} bytes on this route"})


async def test_a_chunked_body_is_counted_as_it_arrives(gateway_server: ServerThread) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40)) + b"0\r\n\r\n"  # 2.5 MB
    status, _ = await _status(
        gateway_server, _post("/api/predict", SERVICE, b"transfer-encoding: chunked\r\n"), body
    )
    assert status == 413


async def test_request_headers_over_the_cap_are_refused(gateway_server: ServerThread) -> None:
    padding = b"x-padding: " + b"a" * 200_000 + b"\r\n"
    status, body = await _status(gateway_server, _post("/internal/predict", SERVICE, padding))
    assert (status, body) == (431, b"request line and headers over 65536 bytes")


async def test_a_head_that_never_ends_is_refused_while_it_arrives(gateway_server: ServerThread) -> None:
    """No end of headers ever comes: the gateway answers once it has buffered more than the cap."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway_server.port)
    try:
        writer.write(_post("/internal/predict", SERVICE) + b"x-padding: ")
        writer.write(b"a" * 80_000)  # all read by the gateway, so its close is clean (no reset)
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 431 ")
    finally:
        writer.close()


async def test_headers_under_the_cap_still_work(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/health", headers={"x-padding": "a" * 30_000})
    assert response.status_code == 200


@pytest.fixture
async def big_answer() -> AsyncIterator[RawBackend]:
    """A backend answering 3 MB of JSON whatever it is asked."""
    big = orjson.dumps({"results": [{"result": [], "pad": "x" * 3_000_000}]})
    backend = RawBackend(
        reply=b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(big)
        + big
    )
    async with serve_raw(backend):
        yield backend


async def test_public_predict_holds_less_of_a_backend_answer(
    api: httpx.AsyncClient,
    gateway: httpx.AsyncClient,
    fake: FakeBackend,
    db: asyncpg.Connection,
    big_answer: RawBackend,
) -> None:
    """Any client token reaches the public route, so the gateway holds at most 2 MB of a backend's answer
    there, not the 64 MB an internal call may."""
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url)
    await db.execute("UPDATE ml_backend SET url = $1 WHERE id = $2", big_answer.url, backend["id"])
    public = await gateway.post(
        "/api/predict", json={"tasks": [{"data": {"text": "a"}}], "backend": backend["id"]}
    )
    assert public.json()["errors"] == [
        {"task_id": 0, "message": "/predict: answer larger than 2097152 bytes"}
    ]
    internal = await gateway.post(
        "/internal/predict",
        json={
            "backend": {"url": big_answer.url},
            "project": PROJECT,
            "tasks": [{"id": 1, "data": {"text": "a"}}],
        },
    )
    assert internal.json()["errors"] == [] and internal.json()["predictions"][0]["result"] == []
