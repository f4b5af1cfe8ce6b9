"""``GET /api/jobs/{id}/events``: live job progress as server-sent events, over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.waiting import wait_for
from tests.support.workers import RunBurst

pytestmark = [
    pytest.mark.usefixtures("gateway_server"),
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]


async def start_job(api: httpx.AsyncClient, project_id: int) -> int:
    response = await api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
    )
    assert response.status_code == 200, response.text
    job_id: int = response.json()["job_id"]
    return job_id


async def read_stream(api: httpx.AsyncClient, job_id: int, frames: list[str]) -> httpx.Response:
    """Every SSE frame (``data: …`` or ``: comment``) until the server ends the stream."""
    async with api.stream("GET", f"/api/jobs/{job_id}/events") as response:
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            while "\n\n" in buffer:
                frame, buffer = buffer.split("\n\n", 1)
                frames.append(frame)
    return response


def jobs_in(frames: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(frame.removeprefix("data: ")) for frame in frames if frame.startswith("data: ")]


@pytest.mark.api_settings(job_events_poll_s=0.05)
async def test_events_follow_a_bulk_job_to_completion(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, run_burst: RunBurst
) -> None:
    fake.behaviour.predict_delay_s = 0.2
    await import_texts(api, project["id"], 40)
    await connect_backend(api, project["id"], fake.url, batch_size=5)
    job_id = await start_job(api, project["id"])

    frames: list[str] = []
    reader = asyncio.create_task(read_stream(api, job_id, frames))
    await run_burst()
    response = await asyncio.wait_for(reader, 30)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = jobs_in(frames)
    assert events[0]["id"] == job_id and events[0]["total"] == 40
    assert events[-1]["status"] == "completed" and events[-1]["done"] == 40
    assert events[-1] == (await api.get(f"/api/jobs/{job_id}")).json()
    processed = [event["processed"] for event in events]
    assert processed == sorted(processed)
    assert any(0 < count < 40 for count in processed), processed
    # an event per change, not per poll: consecutive events always differ
    states = [(e["status"], e["processed"], e["updated_at"]) for e in events]
    assert all(a != b for a, b in itertools.pairwise(states)), states


@pytest.mark.api_settings(job_events_poll_s=0.05, job_events_keepalive_s=0.1)
async def test_an_idle_stream_sends_keep_alives_and_ends_when_the_job_is_cancelled(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    await import_texts(api, project["id"], 5)
    await connect_backend(api, project["id"], fake.url)
    job_id = await start_job(api, project["id"])  # no worker runs: it stays queued (or running: planned)

    frames: list[str] = []
    reader = asyncio.create_task(read_stream(api, job_id, frames))

    async def keep_alive_seen() -> bool:
        return ": keep-alive" in frames

    await wait_for(keep_alive_seen, what="a keep-alive comment")
    assert (await api.post(f"/api/jobs/{job_id}/cancel")).status_code == 200
    await asyncio.wait_for(reader, 30)

    events = jobs_in(frames)
    assert [event["status"] for event in events][1:] == ["cancelled"]
    assert events[0]["status"] in ("queued", "running") and events[0]["processed"] == 0


async def test_unknown_job_is_404_and_no_token_is_401(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    missing = await api.get("/api/jobs/999999/events")
    assert missing.status_code == 404 and "999999" in missing.text
    await import_texts(api, project["id"], 1)
    await connect_backend(api, project["id"], fake.url)
    job_id = await start_job(api, project["id"])
    anonymous = await api.get(f"/api/jobs/{job_id}/events", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    wrong = await api.get(f"/api/jobs/{job_id}/events", headers={"Authorization": "Token nope"})
    assert wrong.status_code == 401
