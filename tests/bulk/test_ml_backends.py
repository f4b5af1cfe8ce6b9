"""``/api/ml``: connecting backends through the real gateway, reads that never call the backend."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import choice, connect_backend, import_texts
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("gateway_server")

LS_FIELDS = {
    "id",
    "state",
    "readable_state",
    "is_interactive",
    "url",
    "error_message",
    "title",
    "auth_method",
    "basic_auth_user",
    "basic_auth_pass_is_set",
    "description",
    "extra_params",
    "model_version",
    "timeout",
    "created_at",
    "updated_at",
    "auto_update",
    "project",
    "batch_size",
    "max_concurrency",
}


async def test_connect_stores_connected_backend_and_sets_project_version(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    backend = await connect_backend(api, project["id"], fake.url, title="sentiment")
    assert set(backend) >= LS_FIELDS
    assert backend["state"] == "CO" and backend["readable_state"] == "Connected"
    assert backend["model_version"] == "fake-v1"
    assert backend["auto_update"] is True and backend["project"] == project["id"]
    setup = fake.calls("/setup")[-1].body
    assert setup["hostname"].startswith("http://127.0.0.1:")
    assert setup["access_token"], "the backend gets a token to fetch task data with"
    whoami = await api.get(
        "/api/current-user/whoami", headers={"Authorization": f"Token {setup['access_token']}"}
    )
    assert whoami.status_code == 200
    assert whoami.json()["email"] != "admin@labelloop.local"

    refreshed = (await api.get(f"/api/projects/{project['id']}")).json()
    assert refreshed["model_version"] == "fake-v1"

    checks = len(fake.calls("/health")) + len(fake.calls("/setup"))
    listed = (await api.get("/api/ml/", params={"project": project["id"]})).json()
    assert [item["id"] for item in listed] == [backend["id"]]
    assert (await api.get(f"/api/ml/{backend['id']}/")).json()["title"] == "sentiment"
    patched = await api.patch(f"/api/ml/{backend['id']}", json={"title": "renamed", "batch_size": 8})
    assert patched.status_code == 200 and patched.json()["batch_size"] == 8
    assert len(fake.calls("/health")) + len(fake.calls("/setup")) == checks, "reads must not call the backend"


async def test_basic_auth_password_is_used_but_never_returned(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    fake.configure(require_basic_auth=("user", "s3cret-pass"))
    backend = await connect_backend(
        api,
        project["id"],
        fake.url,
        auth_method="BASIC_AUTH",
        basic_auth_user="user",
        basic_auth_pass="s3cret-pass",
    )
    assert backend["basic_auth_pass_is_set"] is True
    for response in (
        await api.get(f"/api/ml/{backend['id']}"),
        await api.get("/api/ml", params={"project": project["id"]}),
    ):
        assert "s3cret-pass" not in response.text


@pytest.mark.parametrize(
    ("setup", "cause"),
    [
        ("down", "connection refused"),
        ("unauthorized", "401"),
        ("garbage", "malformed response"),
        ("no_version", "no model version"),
    ],
)
async def test_failed_check_is_400_naming_the_cause_and_stores_nothing(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    db: asyncpg.Connection,
    setup: str,
    cause: str,
) -> None:
    if setup == "down":
        fake.stop()
    elif setup == "unauthorized":
        fake.configure(require_basic_auth=("user", "pass"))
    elif setup == "garbage":
        fake.configure(garbage="not_json", garbage_paths=frozenset({"/health", "/setup"}))
    else:
        fake.configure(model_version="")
    response = await api.post("/api/ml", json={"url": fake.url, "project": project["id"]})
    assert response.status_code == 400, response.text
    errors = response.json()["non_field_errors"]
    assert cause in errors[0].lower() or cause in errors[0]
    assert await db.fetchval("SELECT count(*) FROM ml_backend") == 0
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == ""


async def test_bad_url_and_unknown_project_are_field_errors(
    api: httpx.AsyncClient, project: dict[str, Any]
) -> None:
    response = await api.post("/api/ml", json={"url": "ftp://x", "project": project["id"]})
    assert response.status_code == 400
    assert "url" in response.json()["validation_errors"]
    response = await api.post("/api/ml", json={"url": "http://127.0.0.1:1", "project": 999_999})
    assert response.status_code == 400
    assert "project" in response.json()["validation_errors"]
    assert (await api.get("/api/ml/424242")).status_code == 404


async def test_patch_of_url_rechecks_and_keeps_the_old_row_on_failure(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    backend = await connect_backend(api, project["id"], fake.url)
    with FakeBackend() as dead:
        dead_url = dead.url
    response = await api.patch(f"/api/ml/{backend['id']}", json={"url": dead_url})
    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["url"] == fake.url

    with FakeBackend() as other:
        other.configure(model_version="other-v7")
        moved = await api.patch(f"/api/ml/{backend['id']}", json={"url": other.url})
        assert moved.status_code == 200, moved.text
        assert moved.json()["model_version"] == "other-v7"
    assert (await api.delete(f"/api/ml/{backend['id']}")).status_code == 204
    assert (await api.get(f"/api/ml/{backend['id']}")).status_code == 404


async def test_validate_records_a_backend_that_went_down(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    backend = await connect_backend(api, project["id"], fake.url)
    fake.stop()
    response = await api.post(f"/api/ml/{backend['id']}/validate")
    assert response.status_code == 200
    assert response.json()["state"] == "DI"
    assert "connection refused" in response.json()["error_message"]
    fake.start()
    assert (await api.post(f"/api/ml/{backend['id']}/validate")).json()["state"] == "CO"


async def test_interactive_annotating_and_versions(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    (task_id,) = await import_texts(api, project["id"], 1)
    plain = await connect_backend(api, project["id"], fake.url)
    refused = await api.post(f"/api/ml/{plain['id']}/interactive-annotating", json={"task": task_id})
    assert refused.status_code == 200
    assert refused.json()["errors"] and "data" not in refused.json()

    interactive = await connect_backend(api, project["id"], fake.url, is_interactive=True)
    context = {"result": choice("Positive")}
    response = await api.post(
        f"/api/ml/{interactive['id']}/interactive-annotating", json={"task": task_id, "context": context}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["result"][0]["value"]["choices"] == ["Positive"]
    assert data["model_version"] == "fake-v1"
    missing = await api.post(f"/api/ml/{interactive['id']}/interactive-annotating", json={"task": 999_999})
    assert missing.status_code == 404

    versions = await api.get(f"/api/ml/{interactive['id']}/versions")
    assert versions.json()["versions"] == ["fake-v1"]


@pytest.mark.api_settings(backend_check_interval_s=0.2)
async def test_periodic_check_follows_a_new_version_and_notices_an_outage(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    backend = await connect_backend(api, project["id"], fake.url)
    pinned = await connect_backend(api, project["id"], fake.url, auto_update=False)
    fake.configure(model_version="fake-v2")

    async def moved() -> bool:
        return bool((await api.get(f"/api/ml/{backend['id']}")).json()["model_version"] == "fake-v2")

    await wait_for(moved, 30, "the backend to move to fake-v2")
    assert (await api.get(f"/api/projects/{project['id']}")).json()["model_version"] == "fake-v2"
    assert (await api.get(f"/api/ml/{pinned['id']}")).json()["model_version"] == "fake-v1"

    fake.stop()

    async def disconnected() -> bool:
        return bool((await api.get(f"/api/ml/{backend['id']}")).json()["state"] == "DI")

    await wait_for(disconnected, 30, "the backend to be seen as disconnected")


@pytest.mark.api_settings(gateway_url="http://127.0.0.1:9")
async def test_gateway_down_is_503_not_500(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    response = await api.post("/api/ml", json={"url": fake.url, "project": project["id"]})
    assert response.status_code == 503, response.text
    assert "gateway" in response.json()["detail"].lower()
    assert await db.fetchval("SELECT count(*) FROM ml_backend") == 0


async def _transactions_held_open(db: asyncpg.Connection, across_s: float = 0.3) -> set[tuple[int, Any]]:
    """Transactions idle (waiting on their client) now and still the same ones ``across_s`` later: a
    request holding one through a remote call. The background loops' own short transactions, which a
    single look can catch between two statements, do not stay open that long."""
    query = (
        "SELECT pid, xact_start FROM pg_stat_activity"
        " WHERE state LIKE 'idle in transaction%' AND datname = current_database()"
    )
    first = {(row["pid"], row["xact_start"]) for row in await db.fetch(query)}
    await asyncio.sleep(across_s)
    return first & {(row["pid"], row["xact_start"]) for row in await db.fetch(query)}


@pytest.mark.parametrize("call", ["validate", "patch url"])
async def test_deleting_a_backend_while_the_gateway_checks_it_is_a_404_not_a_500(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection, call: str
) -> None:
    """The check runs with no transaction open; the write after it finds the row gone and says so."""
    backend = await connect_backend(api, project["id"], fake.url)
    setups = len(fake.calls("/setup"))
    released = threading.Event()
    fake.configure(hold_setup=released)
    try:
        if call == "validate":
            pending = asyncio.create_task(api.post(f"/api/ml/{backend['id']}/validate"))
        else:
            moved = {"url": fake.url + "/"}
            pending = asyncio.create_task(api.patch(f"/api/ml/{backend['id']}", json=moved))
        await fake.wait_for_calls("/setup", setups + 1, timeout_s=30)
        assert await _transactions_held_open(db) == set()
        assert (await api.delete(f"/api/ml/{backend['id']}")).status_code == 204
    finally:
        released.set()
    response = await pending
    assert response.status_code == 404, response.text
    assert "deleted while the gateway was checking it" in response.json()["detail"]
    assert (await api.get(f"/api/ml/{backend['id']}")).status_code == 404
