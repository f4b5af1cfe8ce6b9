"""``predictions_to_annotations`` (auto-labeling) over real HTTP: version, threshold, idempotence,
counters and the events backends learn from."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from tests.support.builders import choice, create_project, import_tasks


async def _run(api: httpx.AsyncClient, project_id: int, body: dict[str, Any] | None = None) -> httpx.Response:
    params = {"id": "predictions_to_annotations", "project": project_id}
    return await api.post("/api/dm/actions", params=params, json=body)


def _task(text: str, *predictions: tuple[str, float | None, str]) -> dict[str, Any]:
    return {
        "data": {"text": text},
        "predictions": [
            {"result": choice(label), "score": score, "model_version": version}
            for label, score, version in predictions
        ],
    }


async def test_threshold_version_and_idempotence(api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    project = await create_project(api, model_version="v2")
    body = await import_tasks(
        api,
        project["id"],
        [
            _task("sure", ("positive", 0.9, "v2")),
            _task("unsure", ("negative", 0.3, "v2")),
            _task("old version only", ("positive", 0.99, "v1")),
            _task("no prediction"),
            _task("two of v2", ("negative", 0.8, "v2"), ("positive", 0.95, "v2")),
            _task("no score", ("negative", None, "v2")),
        ],
        return_task_ids="true",
    )
    ids = body["task_ids"]
    response = await _run(
        api, project["id"], {"selectedItems": {"all": True, "excluded": [ids[5]]}, "threshold": 0.5}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "job_id": response.json()["job_id"],
        "processed_items": 2,
        "detail": "Created 2 annotations, skipped 3",
        "created": 2,
        "skipped": 3,
    }
    rows = await db.fetch(
        "SELECT a.task_id, a.result, a.parent_prediction_id, a.completed_by_id, p.score "
        "FROM annotation a JOIN prediction p ON p.id = a.parent_prediction_id "
        "WHERE a.project_id = $1 ORDER BY a.task_id",
        project["id"],
    )
    assert [row["task_id"] for row in rows] == [ids[0], ids[4]]
    assert [row["score"] for row in rows] == [0.9, 0.95], "the newest qualifying prediction of the task"
    assert all(row["completed_by_id"] is not None for row in rows)

    refreshed = (await api.get(f"/api/projects/{project['id']}")).json()
    assert refreshed["total_annotations_number"] == 2
    assert refreshed["num_tasks_with_annotations"] == 2
    task = (await api.get(f"/api/tasks/{ids[0]}")).json()
    assert task["is_labeled"] is True and task["total_annotations"] == 1

    events = await db.fetch(
        "SELECT action, payload FROM outbox_event WHERE project_id = $1 ORDER BY id", project["id"]
    )
    assert [event["action"] for event in events] == ["ANNOTATION_CREATED", "ANNOTATION_CREATED"]
    assert '"parent_prediction"' in events[0]["payload"] and f'"id": {ids[0]}' in events[0]["payload"]

    again = await _run(api, project["id"], {"threshold": 0.1})
    assert again.json()["created"] == 1, "only the task still without an annotation from v2 (0.3 ≥ 0.1)"
    assert again.json()["skipped"] == 5
    older = await _run(api, project["id"], {"model_version": "v1"})
    assert older.json()["created"] == 1


async def test_version_defaults_to_the_project_and_bad_input_names_the_field(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    await import_tasks(api, project["id"], [_task("t", ("positive", 0.7, "m"))])
    no_version = await _run(api, project["id"])
    # importing a prediction selects its version for a project without one
    assert no_version.status_code == 200, no_version.text
    assert no_version.json()["created"] == 1
    bad = await _run(api, project["id"], {"threshold": "high"})
    assert bad.status_code == 400
    assert "threshold" in bad.json()["validation_errors"]
    bad_version = await _run(api, project["id"], {"model_version": 3})
    assert bad_version.status_code == 400
    assert "model_version" in bad_version.json()["validation_errors"]
    listed = await api.get("/api/dm/actions", params={"project": project["id"]})
    assert "predictions_to_annotations" in [entry["id"] for entry in listed.json()]
