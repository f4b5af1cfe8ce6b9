"""Online learning: annotation events reach every backend's /webhook, in order, with its credentials,
and a backend that was down receives everything it missed once it is back."""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import asyncpg
import httpx
import pytest
from arq import create_pool
from arq.connections import RedisSettings

from services.model_gateway.learning import deliver_events
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.worker import shutdown, startup
from shared.learning_contract import delivery_lock_key
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts
from tests.support.waiting import wait_for
from tests.support.workers import RunBurst

pytestmark = pytest.mark.usefixtures("gateway_server")


async def _annotate(api: httpx.AsyncClient, task_id: int) -> int:
    response = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice("Positive")})
    assert response.status_code == 201, response.text
    annotation_id: int = response.json()["id"]
    return annotation_id


async def _churn(api: httpx.AsyncClient, task_ids: list[int]) -> list[tuple[str, int]]:
    """Create, update and delete annotations; the (action, annotation id) events they must produce."""
    expected: list[tuple[str, int]] = []
    first = await _annotate(api, task_ids[0])
    expected.append(("ANNOTATION_CREATED", first))
    second = await _annotate(api, task_ids[1])
    expected.append(("ANNOTATION_CREATED", second))
    updated = await api.patch(f"/api/annotations/{first}", json={"lead_time": 3.5})
    assert updated.status_code == 200, updated.text
    expected.append(("ANNOTATION_UPDATED", first))
    deleted = await api.delete(f"/api/annotations/{second}")
    assert deleted.status_code == 204, deleted.text
    expected.append(("ANNOTATIONS_DELETED", second))
    third = await _annotate(api, task_ids[2])
    expected.append(("ANNOTATION_CREATED", third))
    return expected


def _received(fake: FakeBackend) -> list[tuple[str, int]]:
    events = []
    for call in fake.calls("/webhook"):
        body = call.body
        if body["action"] == "ANNOTATIONS_DELETED":
            events.extend(("ANNOTATIONS_DELETED", item["id"]) for item in body["annotations"])
        else:
            events.append((body["action"], body["annotation"]["id"]))
    return events


async def _cursor(db: asyncpg.Connection, backend_id: int) -> int:
    cursor: int = await db.fetchval("SELECT last_event_id FROM ml_backend WHERE id = $1", backend_id)
    return cursor


async def test_events_reach_each_backend_in_order_with_basic_auth(
    api: httpx.AsyncClient, run_burst: RunBurst, db: asyncpg.Connection
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 4)
    before = await _annotate(api, task_ids[3])  # made before any backend was connected
    with FakeBackend() as plain, FakeBackend() as guarded:
        guarded.configure(require_basic_auth=("ml", "s3cret"))
        first = await connect_backend(api, project_id, plain.url)
        second = await connect_backend(
            api,
            project_id,
            guarded.url,
            auth_method="BASIC_AUTH",
            basic_auth_user="ml",
            basic_auth_pass="s3cret",
        )
        expected = await _churn(api, task_ids)

        async def delivered() -> bool:
            await run_burst()
            return len(_received(plain)) == len(_received(guarded)) == len(expected)

        await wait_for(delivered, what="every event at both backends")
        assert _received(plain) == expected
        assert _received(guarded) == expected
        assert before not in {annotation_id for _, annotation_id in _received(plain)}

        token = base64.b64encode(b"ml:s3cret").decode()
        assert {call.headers["authorization"] for call in guarded.calls("/webhook")} == {f"Basic {token}"}
        created = plain.calls("/webhook")[0].body
        assert created["project"]["id"] == project_id
        assert created["project"]["label_config"] == SENTIMENT_CONFIG
        assert created["task"]["id"] == task_ids[0]
        assert created["annotation"]["result"] == choice("Positive")

    latest = await db.fetchval("SELECT max(id) FROM outbox_event WHERE project_id = $1", project_id)
    assert await _cursor(db, first["id"]) == latest
    assert await _cursor(db, second["id"]) == latest


@pytest.mark.api_settings(sweep_interval_s=3600.0)
async def test_the_annotation_request_itself_rings_the_worker(
    api: httpx.AsyncClient, run_burst: RunBurst, fake: FakeBackend
) -> None:
    """With the delivery loop idle, delivery rests on the after-commit enqueue alone."""
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 1)
    await connect_backend(api, project_id, fake.url)
    annotation_id = await _annotate(api, task_ids[0])
    await run_burst()
    assert _received(fake) == [("ANNOTATION_CREATED", annotation_id)]


async def test_a_backend_that_was_down_receives_every_event_in_order_when_back(
    api: httpx.AsyncClient, run_burst: RunBurst, db: asyncpg.Connection
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 3)
    fake = FakeBackend().start()
    backend = await connect_backend(api, project_id, fake.url)
    fake.stop()
    try:
        expected = await _churn(api, task_ids)
        await run_burst()  # deliveries fail: connection refused
        assert await _cursor(db, backend["id"]) == 0
        assert fake.calls("/webhook") == []

        revived = FakeBackend(port=fake.port).start()
        try:

            async def caught_up() -> bool:
                await run_burst()  # the API's delivery loop keeps ringing for the backend
                return len(_received(revived)) >= len(expected)

            await wait_for(caught_up, what="the missed events after the restart")
            assert _received(revived) == expected
            ids = [call.body.get("annotation", {}).get("id") for call in revived.calls("/webhook")]
            assert len(ids) == len(expected), "no event delivered twice"
        finally:
            revived.stop()
    finally:
        fake.stop()
    latest = await db.fetchval("SELECT max(id) FROM outbox_event WHERE project_id = $1", project_id)
    assert await _cursor(db, backend["id"]) == latest


async def test_a_failing_webhook_holds_the_cursor_until_it_succeeds(
    api: httpx.AsyncClient, run_burst: RunBurst, db: asyncpg.Connection, fake: FakeBackend
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 2)
    backend = await connect_backend(api, project_id, fake.url)
    fake.configure(webhook_fail=500)
    first = await _annotate(api, task_ids[0])
    second = await _annotate(api, task_ids[1])
    await wait_for(lambda: _ran(run_burst, fake), what="a refused delivery attempt")
    assert await _cursor(db, backend["id"]) == 0
    fake.configure(webhook_fail=None)
    fake.clear_requests()

    async def delivered() -> bool:
        await run_burst()
        return len(fake.calls("/webhook")) >= 2

    await wait_for(delivered, what="delivery once the backend accepts")
    assert _received(fake) == [("ANNOTATION_CREATED", first), ("ANNOTATION_CREATED", second)]


async def _ran(run_burst: RunBurst, fake: FakeBackend) -> bool:
    await run_burst()
    return bool(fake.calls("/webhook"))


async def test_concurrent_deliveries_of_one_backend_send_each_event_once_in_order(
    api: httpx.AsyncClient, fake: FakeBackend, gateway_settings: GatewaySettings
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 3)
    backend = await connect_backend(api, project_id, fake.url)
    fake.configure(webhook_delay_s=0.05)  # deliveries overlap for sure
    expected = await _churn(api, task_ids)
    # As arq does: the Redis pool is in the context before startup (which shares it for backend slots).
    ctx: dict[str, Any] = {"settings": gateway_settings}
    ctx["redis"] = await create_pool(RedisSettings.from_dsn(gateway_settings.redis_url))
    await startup(ctx)
    try:
        outcomes = await asyncio.gather(*(deliver_events(ctx, backend["id"]) for _ in range(6)))
    finally:
        await ctx["redis"].aclose()
        await shutdown(ctx)
    assert _received(fake) == expected, outcomes
    assert sum("the running delivery takes the rest" in outcome for outcome in outcomes) >= 1


async def test_internal_event_routes_need_the_service_token(
    api: httpx.AsyncClient, fake: FakeBackend
) -> None:
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    backend = await connect_backend(api, project_id, fake.url)
    path = f"/internal/backends/{backend['id']}/events"
    assert (await api.get(path)).status_code == 401  # a client token is not enough
    service = {"Authorization": "Bearer service-token-for-tests"}
    pending = await api.get(path, headers=service)
    assert pending.status_code == 200
    assert pending.json()["events"] == []
    assert pending.json()["backend"]["url"] == fake.url
    missing = await api.get("/internal/backends/999999/events", headers=service)
    assert missing.status_code == 404
    bogus = await api.post(f"{path}/ack", json={"last_event_id": 12345}, headers=service)
    assert bogus.status_code == 200
    assert bogus.json()["last_event_id"] == 0, "an ack past the project's events moves nothing"


async def test_a_delivery_slower_than_the_lock_lifetime_keeps_the_lock(
    api: httpx.AsyncClient, fake: FakeBackend, gateway_settings: GatewaySettings
) -> None:
    """A webhook call outliving the lock's lifetime must not let a second deliverer in (order would break)."""
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 2)
    backend = await connect_backend(api, project_id, fake.url)
    released = threading.Event()
    fake.configure(hold_webhook=released)
    first = await _annotate(api, task_ids[0])
    # A lifetime the keeper renews every 0.5 s: short against the held webhook call, long enough that a
    # loaded machine (the API runs in this process's threads) never lets it lapse between two renewals.
    settings = gateway_settings.model_copy(update={"delivery_lock_ttl_s": 1.5, "webhook_timeout_s": 60.0})
    ctx: dict[str, Any] = {"settings": settings}
    ctx["redis"] = redis = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    await startup(ctx)
    try:
        slow = asyncio.create_task(deliver_events(ctx, backend["id"]))
        await fake.wait_for_calls("/webhook", 1, timeout_s=30)
        second = await _annotate(api, task_ids[1])
        key = delivery_lock_key(backend["id"])
        holder = await redis.get(key)
        renewals = 0
        previous = await redis.pttl(key)

        async def renewed_three_times() -> bool:
            nonlocal renewals, previous
            remaining = await redis.pttl(key)
            renewals += remaining > previous
            previous = remaining
            return renewals >= 3

        await wait_for(renewed_three_times, what="the held lock to be extended past its lifetime")
        assert await redis.get(key) == holder
        stepped_aside = await deliver_events(ctx, backend["id"])
        assert "the running delivery takes the rest" in stepped_aside
        released.set()
        outcome = await slow
    finally:
        released.set()
        await redis.aclose()
        await shutdown(ctx)
    assert _received(fake) == [("ANNOTATION_CREATED", first), ("ANNOTATION_CREATED", second)], outcome


async def test_a_backend_deleted_mid_delivery_ends_the_run_quietly(
    api: httpx.AsyncClient, fake: FakeBackend, gateway_settings: GatewaySettings
) -> None:
    """The acknowledgement of an event delivered just before the delete finds no backend: the run stops
    saying so, the event counted, instead of failing the job with a traceback."""
    project_id = (await create_project(api, SENTIMENT_CONFIG))["id"]
    task_ids = await import_texts(api, project_id, 1)
    backend = await connect_backend(api, project_id, fake.url)
    released = threading.Event()
    fake.configure(hold_webhook=released)
    await _annotate(api, task_ids[0])
    ctx: dict[str, Any] = {"settings": gateway_settings}
    ctx["redis"] = await create_pool(RedisSettings.from_dsn(gateway_settings.redis_url))
    await startup(ctx)
    try:
        delivery = asyncio.create_task(deliver_events(ctx, backend["id"]))
        await fake.wait_for_calls("/webhook", 1, timeout_s=30)
        assert (await api.delete(f"/api/ml/{backend['id']}")).status_code == 204
        released.set()
        outcome = await delivery
    finally:
        released.set()
        await ctx["redis"].aclose()
        await shutdown(ctx)
    assert outcome == f"backend {backend['id']}: 1 delivered, stopped: the backend was deleted"
