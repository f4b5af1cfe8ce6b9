"""``GET /api/ml/{id}/performance``: a backend's versions over time and their agreement with later labels."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.fakes.fake_backend import FakeBackend, default_predict
from tests.support.builders import choice, connect_backend, import_texts
from tests.support.waiting import wait_job
from tests.support.workers import RunBurst

pytestmark = [
    pytest.mark.usefixtures("gateway_server"),
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]


async def predict_all(api: httpx.AsyncClient, project_id: int, run_burst: RunBurst) -> None:
    response = await api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id}
    )
    assert response.status_code == 200, response.text
    await run_burst()
    assert (await wait_job(api, response.json()["job_id"]))["status"] == "completed"


async def annotate(api: httpx.AsyncClient, task_id: int, label: str) -> None:
    response = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice(label)})
    assert response.status_code == 201, response.text


def expected_label(index: int) -> str:
    """What the fake predicts for the ``index``-th task of ``import_texts`` (odd ones say "good")."""
    return "Positive" if index % 2 else "Negative"


async def test_versions_over_time_with_agreement_of_later_annotations(
    api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, run_burst: RunBurst
) -> None:
    task_ids = await import_texts(api, project["id"], 6)
    backend = await connect_backend(api, project["id"], fake.url)
    url = f"/api/ml/{backend['id']}/performance"
    empty = (await api.get(url)).json()
    assert empty["backend"] == backend["id"]
    assert [
        (v["model_version"], v["predictions"], v["compared"], v["agreement"]) for v in empty["versions"]
    ] == [("fake-v1", 0, 0, None)]

    await predict_all(api, project["id"], run_burst)
    # three annotators agree with fake-v1, one does not
    for index in range(3):
        await annotate(api, task_ids[index], expected_label(index))
    await annotate(api, task_ids[3], "Negative")
    first = (await api.get(url)).json()["versions"]
    assert [(v["model_version"], v["predictions"], v["compared"], v["agreement"]) for v in first] == [
        ("fake-v1", 6, 4, 0.75)
    ]
    assert first[0]["first_seen_at"] is not None

    fake.behaviour.model_version = "fake-v2"
    assert (await api.post(f"/api/ml/{backend['id']}/validate")).json()["model_version"] == "fake-v2"
    await predict_all(api, project["id"], run_burst)
    for index in (4, 5):
        await annotate(api, task_ids[index], expected_label(index))

    versions = (await api.get(url)).json()["versions"]
    # fake-v2 predicted after tasks 0-3 were labeled, so only tasks 4 and 5 compare for it
    assert [(v["model_version"], v["predictions"], v["compared"]) for v in versions] == [
        ("fake-v1", 6, 6),
        ("fake-v2", 6, 2),
    ]
    assert versions[0]["agreement"] == pytest.approx(5 / 6) and versions[1]["agreement"] == 1.0
    assert versions[0]["first_seen_at"] < versions[1]["first_seen_at"]


async def test_cancelled_annotations_versions_only_predicted_and_unknown_backend(
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    run_burst: RunBurst,
    db: asyncpg.Connection,
) -> None:
    task_ids = await import_texts(api, project["id"], 2)
    # Without auto-update the backend's record stays on the checked version whatever it predicts with, so
    # the end of the test does not depend on when the re-check after the annotation's webhook runs.
    backend = await connect_backend(api, project["id"], fake.url, auto_update=False)
    await predict_all(api, project["id"], run_burst)
    skipped = await api.post(
        f"/api/tasks/{task_ids[0]}/annotations", json={"result": [], "was_cancelled": True}
    )
    assert skipped.status_code == 201, skipped.text
    version = (await api.get(f"/api/ml/{backend['id']}/performance")).json()["versions"][0]
    assert (version["compared"], version["agreement"]) == (0, None)
    assert await db.fetchval("SELECT count(*) FROM ml_backend_version") == 1

    # predictions carrying a version no check has seen (the backend's /setup still says fake-v1) make
    # it into the history too, even when the backend does not follow it
    fake.behaviour.predict_fn = lambda task: [
        {**p, "model_version": "fake-next"} for p in default_predict(task)
    ]
    await import_texts(api, project["id"], 2)
    await predict_all(api, project["id"], run_burst)
    versions = (await api.get(f"/api/ml/{backend['id']}/performance")).json()["versions"]
    assert [(v["model_version"], v["predictions"]) for v in versions] == [("fake-v1", 2), ("fake-next", 2)]
    assert (await api.get(f"/api/ml/{backend['id']}")).json()["model_version"] == "fake-v1"

    missing = await api.get("/api/ml/999999/performance")
    assert missing.status_code == 404 and "999999" in missing.text
