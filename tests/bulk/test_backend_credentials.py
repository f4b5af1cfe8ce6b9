"""ML backend credentials: passwords never shown nor stored in clear, and a backend's token reads only
its own project."""

from __future__ import annotations

import os
from typing import Any

import asyncpg
import httpx
import pytest

from services.annotation_api.secret_box import cipher_for
from tests.conftest import SECRET_KEY
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_texts
from tests.support.databases import alembic, drop_database, recreate_database, unique_name

pytestmark = pytest.mark.usefixtures("gateway_server")


def _decrypt(stored: str) -> str:
    cipher = cipher_for(SECRET_KEY)
    assert cipher is not None
    return cipher.decrypt(stored.encode()).decode()


async def test_password_in_url_becomes_encrypted_basic_auth_and_is_never_returned(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, db: asyncpg.Connection
) -> None:
    fake.configure(require_basic_auth=("ann", "p@ss word"))
    with_credentials = fake.url.replace("http://", "http://ann:p%40ss%20word@")
    backend = await connect_backend(api, project["id"], with_credentials)
    assert backend["url"] == fake.url
    assert backend["auth_method"] == "BASIC_AUTH" and backend["basic_auth_user"] == "ann"
    assert backend["basic_auth_pass_is_set"] is True
    for response in (
        await api.get(f"/api/ml/{backend['id']}"),
        await api.get("/api/ml", params={"project": project["id"]}),
        await api.post(f"/api/ml/{backend['id']}/validate"),
    ):
        assert response.status_code == 200, response.text
        assert "p%40ss" not in response.text and "p@ss" not in response.text
        assert "ann:" not in response.text

    row = await db.fetchrow("SELECT url, basic_auth_pass FROM ml_backend WHERE id = $1", backend["id"])
    assert row["url"] == fake.url
    assert "p@ss" not in row["basic_auth_pass"], "the password is encrypted at rest"
    assert _decrypt(row["basic_auth_pass"]) == "p@ss word"

    fake.configure(require_basic_auth=("bob", "other"))
    moved = await api.patch(
        f"/api/ml/{backend['id']}", json={"url": fake.url.replace("http://", "http://bob:other@")}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["url"] == fake.url and moved.json()["basic_auth_user"] == "bob"
    assert "other" not in moved.text


async def test_backend_token_reads_only_its_project_and_dies_with_the_backend(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend
) -> None:
    own_task = (await import_texts(api, project["id"], 2))[0]
    created = await api.post(f"/api/tasks/{own_task}/annotations", json={"result": choice("Positive")})
    assert created.status_code == 201, created.text
    other = await create_project(api, project["label_config"], title="someone else's")
    other_task = (await import_texts(api, other["id"], 1))[0]
    backend = await connect_backend(api, project["id"], fake.url)
    token = fake.calls("/setup")[-1].body["access_token"]
    headers = {"Authorization": f"Token {token}"}

    async def status(method: str, path: str, **kwargs: Any) -> int:
        return (await api.request(method, path, headers=headers, **kwargs)).status_code

    pid = project["id"]
    for path, params in (
        (f"/api/projects/{pid}", None),
        ("/api/tasks", {"project": pid}),
        (f"/api/tasks/{own_task}", None),
        (f"/api/tasks/{own_task}/annotations", None),
        (f"/api/annotations/{created.json()['id']}", None),
        (f"/api/projects/{pid}/export", None),
    ):
        assert await status("GET", path, params=params) == 200, path
    for path, params in (
        (f"/api/projects/{other['id']}", None),
        ("/api/tasks", {"project": other["id"]}),
        (f"/api/tasks/{other_task}", None),
        (f"/api/tasks/{other_task}/annotations", None),
        (f"/api/projects/{other['id']}/export", None),
    ):
        assert await status("GET", path, params=params) == 404, path
    assert await status("GET", "/api/projects") == 403
    assert await status("GET", "/api/ml", params={"project": pid}) == 403
    assert await status("GET", f"/api/ml/{backend['id']}") == 403
    assert await status("PATCH", f"/api/projects/{pid}", json={"title": "x"}) == 403
    assert await status("DELETE", f"/api/tasks/{own_task}") == 403
    assert (
        await status("POST", f"/api/tasks/{own_task}/annotations", json={"result": choice("Negative")}) == 403
    )
    assert await status("POST", "/api/projects", json={"label_config": project["label_config"]}) == 403

    assert (await api.delete(f"/api/ml/{backend['id']}")).status_code == 204
    assert await status("GET", f"/api/projects/{pid}") == 401, "deleting the backend revokes its token"
    # The token passed the pre-body check moments ago (the writes above); the route still refuses it.
    before = (await api.get(f"/api/tasks/{own_task}/annotations")).json()
    assert (
        await status("POST", f"/api/tasks/{own_task}/annotations", json={"result": choice("Negative")}) == 401
    )
    assert await status("PATCH", f"/api/projects/{pid}", json={"title": "x"}) == 401
    assert (await api.get(f"/api/tasks/{own_task}/annotations")).json() == before
    assert (await api.get(f"/api/projects/{pid}")).json()["title"] == project["title"]
    await connect_backend(api, project["id"], fake.url)
    assert fake.calls("/setup")[-1].body["access_token"] != token, "a new backend gets a new token"


async def test_migration_moves_url_credentials_encrypts_passwords_and_drops_unscoped_tokens(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_name("lltest_migrate")
    url = await recreate_database(stack_env["DATABASE_URL"], name)
    try:
        alembic(url, "upgrade", "0001")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """
                INSERT INTO project (id, label_config) VALUES (1, '<View/>');
                INSERT INTO ml_backend (project_id, url, auth_method, basic_auth_user, basic_auth_pass)
                VALUES (1, 'http://u:pw%21@127.0.0.1:9/x', 'NONE', NULL, NULL),
                       (1, 'http://127.0.0.1:9', 'BASIC_AUTH', 'v', 'clear-pass');
                INSERT INTO "user" (id, email) VALUES (7, 'ml-backend+project1@labelloop.local');
                INSERT INTO api_token (user_id, key_digest) VALUES (7, 'digest-of-an-unscoped-token');
                """
            )
        finally:
            await conn.close()
        monkeypatch.delenv("LABELLOOP_SECRET_KEY", raising=False)
        with pytest.raises(Exception, match="exit status"):
            alembic(url, "upgrade", "head")
        monkeypatch.setenv("LABELLOOP_SECRET_KEY", SECRET_KEY)
        assert os.environ["LABELLOOP_SECRET_KEY"] == SECRET_KEY
        alembic(url, "upgrade", "head")
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT url, auth_method, basic_auth_user, basic_auth_pass, access_token_salt"
                " FROM ml_backend ORDER BY id"
            )
            assert await conn.fetchval("SELECT count(*) FROM api_token") == 0
        finally:
            await conn.close()
        assert [row["url"] for row in rows] == ["http://127.0.0.1:9/x", "http://127.0.0.1:9"]
        assert [(row["auth_method"], row["basic_auth_user"]) for row in rows] == [
            ("BASIC_AUTH", "u"),
            ("BASIC_AUTH", "v"),
        ]
        assert [_decrypt(row["basic_auth_pass"]) for row in rows] == ["pw!", "clear-pass"]
        assert all(len(row["access_token_salt"]) == 32 for row in rows)
    finally:
        await drop_database(stack_env["DATABASE_URL"], name)
