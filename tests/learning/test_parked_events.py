"""Poisoned events: an event a backend always refuses, or that can never be sent, is parked after bounded
attempts and the backend's queue moves on in order; parked events are listed, re-driven and dropped."""

from __future__ import annotations

import asyncpg
import httpx
import orjson
import pytest

from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts
from tests.support.waiting import wait_for
from tests.support.workers import RunBurst

pytestmark = pytest.mark.usefixtures("gateway_server")
REFUSED = '["Negative"]'
"""In the body of a Negative annotation's event only (the label config names the label too)."""


async def _annotate(api: httpx.AsyncClient, task_id: int, label: str) -> int:
    response = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice(label)})
    assert response.status_code == 201, response.text
    annotation_id: int = response.json()["id"]
    return annotation_id


def _accepted(fake: FakeBackend, refused: str | None = None) -> list[int]:
    """Annotation ids of the webhook calls the fake accepted (those not containing ``refused``)."""
    return [
        call.body["annotation"]["id"]
        for call in fake.calls("/webhook")
        if refused is None or refused not in orjson.dumps(call.body).decode()
    ]


async def _parked(api: httpx.AsyncClient, backend_id: int) -> list[dict[str, object]]:
    response = await api.get(f"/api/ml/{backend_id}/events", params={"state": "parked"})
    assert response.status_code == 200, response.text
    events: list[dict[str, object]] = response.json()
    return events


@pytest.mark.api_settings(event_max_attempts=2)
async def test_an_event_the_backend_always_refuses_is_parked_and_the_queue_moves_on(
    api: httpx.AsyncClient, run_burst: RunBurst, db: asyncpg.Connection, fake: FakeBackend
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 3)
    backend = await connect_backend(api, project_id, fake.url)
    fake.configure(webhook_refuse_text=REFUSED)
    first = await _annotate(api, task_ids[0], "Positive")
    poisoned = await _annotate(api, task_ids[1], "Negative")
    last = await _annotate(api, task_ids[2], "Positive")

    async def moved_on() -> bool:
        await run_burst()
        return _accepted(fake, REFUSED) == [first, last]

    await wait_for(moved_on, what="the events after the refused one")
    refusals = [call for call in fake.calls("/webhook") if call.body["annotation"]["id"] == poisoned]
    assert len(refusals) >= 2, "bounded attempts, then parked"
    parked = await _parked(api, backend["id"])
    assert [event["action"] for event in parked] == ["ANNOTATION_CREATED"]
    assert parked[0]["attempts"] == 2
    assert "422" in str(parked[0]["last_error"]) or "cannot learn" in str(parked[0]["last_error"])
    assert parked[0]["payload"]["annotation"]["id"] == poisoned  # type: ignore[index]
    metrics = (await api.get("/metrics")).text
    assert f'labelloop_outbox_parked_events{{backend="{backend["id"]}"}} 1.0' in metrics

    # Parked means parked: more rounds do not send it again.
    calls = len(fake.calls("/webhook"))
    await run_burst()
    assert len(fake.calls("/webhook")) == calls

    fake.configure(webhook_refuse_text=None)
    fake.clear_requests()
    event_id = parked[0]["id"]
    redriven = await api.post(f"/api/ml/{backend['id']}/events/{event_id}/redrive")
    assert redriven.status_code == 200, redriven.text
    assert redriven.json() == {"redriven": 1}

    async def redelivered() -> bool:
        await run_burst()
        return bool(fake.calls("/webhook"))

    await wait_for(redelivered, what="the re-driven event")
    await run_burst()
    assert _accepted(fake) == [poisoned], "sent again once, and nothing else"
    assert (await api.get(f"/api/ml/{backend['id']}/events")).json() == []
    latest = await db.fetchval("SELECT max(id) FROM outbox_event WHERE project_id = $1", project_id)
    assert await db.fetchval("SELECT last_event_id FROM ml_backend WHERE id = $1", backend["id"]) == latest
    again = await api.post(f"/api/ml/{backend['id']}/events/{event_id}/redrive")
    assert again.status_code == 404, "only a parked event can be re-driven"


async def test_an_event_that_cannot_be_sent_is_parked_at_once_and_can_be_dropped(
    api: httpx.AsyncClient, run_burst: RunBurst, db: asyncpg.Connection, fake: FakeBackend
) -> None:
    """An event stored before the input checks, nested deeper than JSON encoders write (or the worker's
    reader goes): it fails alone, parked at its first attempt, instead of blocking every later event."""
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 2)
    backend = await connect_backend(api, project_id, fake.url)
    deep = "[" * 300 + "]" * 300
    before = await _annotate(api, task_ids[0], "Positive")
    await db.execute(
        "INSERT INTO outbox_event (project_id, action, payload) "
        "VALUES ($1, 'ANNOTATION_CREATED', jsonb_build_object('action', 'ANNOTATION_CREATED', "
        "'annotation', jsonb_build_object('id', 0, 'result', CAST($2 AS jsonb))))",
        project_id,
        deep,
    )
    after = await _annotate(api, task_ids[1], "Positive")

    async def moved_on() -> bool:
        await run_burst()
        return _accepted(fake) == [before, after]

    await wait_for(moved_on, what="the events around the unsendable one")
    parked = await _parked(api, backend["id"])
    assert len(parked) == 1
    assert parked[0]["attempts"] == 1
    assert "JSON" in str(parked[0]["last_error"])

    event_id = parked[0]["id"]
    dropped = await api.delete(f"/api/ml/{backend['id']}/events/{event_id}")
    assert dropped.status_code == 204
    assert await _parked(api, backend["id"]) == []
    assert (await api.delete(f"/api/ml/{backend['id']}/events/{event_id}")).status_code == 404


async def test_redrive_all_and_an_unreachable_backend_parks_nothing(
    api: httpx.AsyncClient, run_burst: RunBurst, db: asyncpg.Connection
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 2)
    fake = FakeBackend().start()
    backend = await connect_backend(api, project_id, fake.url)
    fake.stop()
    await _annotate(api, task_ids[0], "Positive")
    for _ in range(15):  # more rounds than event_max_attempts (10): connection refused is not counted
        await run_burst()
    assert (await api.get(f"/api/ml/{backend['id']}/events")).json() == []
    assert await db.fetchval("SELECT last_event_id FROM ml_backend WHERE id = $1", backend["id"]) == 0
    nothing = await api.post(f"/api/ml/{backend['id']}/events/redrive")
    assert nothing.status_code == 200
    assert nothing.json() == {"redriven": 0}
    assert (await api.get("/api/ml/999999/events")).status_code == 404
    bad_state = await api.get(f"/api/ml/{backend['id']}/events", params={"state": "lost"})
    assert bad_state.status_code in (400, 422)
