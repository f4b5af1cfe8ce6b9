"""The unmodified label-studio-sdk 2.x drives the ML backend routes and bulk prediction."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from label_studio_sdk import LabelStudio

from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import import_texts
from tests.support.servers import ServerThread
from tests.support.waiting import wait_job
from tests.support.workers import RunBurst

pytestmark = [
    pytest.mark.usefixtures("gateway_server"),
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]


async def test_sdk_connects_a_backend_and_predicts_all_tasks(
    api_server: ServerThread,
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    (task_id, *_) = await import_texts(api, project["id"], 4)
    client = LabelStudio(base_url=api_server.url, api_key=TEST_API_TOKEN)  # type: ignore[no-untyped-call]
    backend = client.ml.create(url=fake.url, project=project["id"], title="fake", is_interactive=True)
    assert backend.id is not None and backend.state == "CO" and backend.model_version == "fake-v1"
    assert [item.id for item in client.ml.list(project=project["id"])] == [backend.id]
    assert client.ml.get(backend.id).title == "fake"
    assert client.ml.update(backend.id, title="renamed").title == "renamed"

    client.ml.predict_interactive(backend.id, task=task_id, context={})
    assert client.ml.list_model_versions(backend.id).versions == ["fake-v1"]
    client.ml.predict_all_tasks(backend.id, batch_size=2)
    await run_burst()
    job_id = (await api.get("/api/jobs", params={"project": project["id"]})).json()[0]["id"]
    assert (await wait_job(api, job_id))["done"] == 4
    assert await db.fetchval("SELECT count(*) FROM prediction") == 4

    client.ml.delete(backend.id)
    assert client.ml.list(project=project["id"]) == []
