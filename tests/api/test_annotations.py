"""Annotations over real HTTP: validation, counters, and outbox events written with each change."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import orjson

from tests.support.builders import choice, project_with_tasks, read_project


async def _events(database_url: str) -> list[tuple[int, str, dict[str, Any]]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT project_id, action, payload::text FROM outbox_event ORDER BY id")
    finally:
        await conn.close()
    return [(row[0], row[1], orjson.loads(row[2])) for row in rows]


async def _task_counters(database_url: str, task_id: int) -> tuple[int, int, bool]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT total_annotations, cancelled_annotations, is_labeled FROM task WHERE id = $1", task_id
        )
    finally:
        await conn.close()
    assert row is not None
    return row[0], row[1], row[2]


async def test_create_annotation_counts_and_records_event(api: httpx.AsyncClient, database_url: str) -> None:
    project, (task_id, _) = await project_with_tasks(api, 2)
    response = await api.post(
        f"/api/tasks/{task_id}/annotations/",
        json={"result": choice("positive"), "lead_time": 2.5, "unique_id": "ignored", "task": task_id},
    )
    assert response.status_code == 201, response.text
    annotation = response.json()
    assert annotation["task"] == task_id
    assert annotation["project"] == project["id"]
    assert annotation["result"] == choice("positive")
    assert annotation["was_cancelled"] is False
    assert annotation["ground_truth"] is False
    assert annotation["lead_time"] == 2.5
    assert isinstance(annotation["completed_by"], int)
    assert annotation["created_at"] and annotation["updated_at"]
    assert await _task_counters(database_url, task_id) == (1, 0, True)
    counters = await read_project(api, project["id"])
    assert (counters["total_annotations_number"], counters["num_tasks_with_annotations"]) == (1, 1)

    [(event_project, action, payload)] = await _events(database_url)
    assert (event_project, action) == (project["id"], "ANNOTATION_CREATED")
    assert set(payload) == {"action", "annotation", "task", "project"}
    assert payload["action"] == "ANNOTATION_CREATED"
    assert payload["annotation"]["id"] == annotation["id"]
    assert payload["annotation"]["result"] == choice("positive")
    assert payload["task"]["id"] == task_id
    assert payload["task"]["data"] == {"text": "t0"}
    assert payload["task"]["total_annotations"] == 1
    assert payload["project"]["id"] == project["id"]
    assert "<Choices" in payload["project"]["label_config"]


async def test_invalid_result_is_refused_and_nothing_is_written(
    api: httpx.AsyncClient, database_url: str
) -> None:
    _, (task_id, _) = await project_with_tasks(api, 2)
    bad = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["meh"]}}]
    response = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": bad})
    assert response.status_code == 400
    assert "result" in response.json()["validation_errors"]
    assert "meh" in response.json()["detail"]
    not_a_list = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": {"choices": []}})
    assert not_a_list.status_code == 400
    assert "result" in not_a_list.json()["validation_errors"]
    bad_lead = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": [], "lead_time": -1})
    assert bad_lead.status_code == 400
    assert "lead_time" in bad_lead.json()["validation_errors"]
    assert (await api.get(f"/api/tasks/{task_id}/annotations")).json() == []
    assert await _events(database_url) == []
    assert await _task_counters(database_url, task_id) == (0, 0, False)


async def test_unknown_ids_are_404_and_huge_ids_400(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/tasks/999999/annotations", json={"result": []})).status_code == 404
    assert (await api.get("/api/tasks/999999/annotations")).status_code == 404
    assert (await api.get("/api/annotations/999999")).status_code == 404
    assert (await api.patch("/api/annotations/999999", json={"result": []})).status_code == 404
    assert (await api.delete("/api/annotations/999999")).status_code == 404
    assert (await api.get(f"/api/annotations/{2**64}")).status_code == 400


async def test_update_list_and_delete(api: httpx.AsyncClient, database_url: str) -> None:
    project, (task_id, other_task) = await project_with_tasks(api, 2)
    first = (await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice("positive")})).json()
    skipped = (
        await api.post(f"/api/tasks/{task_id}/annotations", json={"result": [], "was_cancelled": True})
    ).json()
    assert await _task_counters(database_url, task_id) == (1, 1, True)
    listed = (await api.get(f"/api/tasks/{task_id}/annotations/")).json()
    assert [item["id"] for item in listed] == [first["id"], skipped["id"]]
    assert (await api.get(f"/api/annotations/{first['id']}/")).json() == first

    response = await api.patch(
        f"/api/annotations/{first['id']}/", json={"result": choice("negative"), "ground_truth": True}
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["result"] == choice("negative")
    assert updated["ground_truth"] is True
    assert updated["lead_time"] is None
    bad = await api.patch(f"/api/annotations/{first['id']}", json={"result": [{"from_name": "nope"}]})
    assert bad.status_code == 400
    assert "result" in bad.json()["validation_errors"]
    assert (await api.get(f"/api/annotations/{first['id']}")).json()["result"] == choice("negative")

    # un-skipping counts the annotation as done
    await api.patch(f"/api/annotations/{skipped['id']}", json={"was_cancelled": False})
    assert await _task_counters(database_url, task_id) == (2, 0, True)

    assert (await api.delete(f"/api/annotations/{first['id']}")).status_code == 204
    assert (await api.delete(f"/api/annotations/{skipped['id']}/")).status_code == 204
    assert (await api.get(f"/api/annotations/{first['id']}")).status_code == 404
    assert await _task_counters(database_url, task_id) == (0, 0, False)
    counters = await read_project(api, project["id"])
    assert (counters["total_annotations_number"], counters["num_tasks_with_annotations"]) == (0, 0)

    events = await _events(database_url)
    assert [action for _, action, _ in events] == [
        "ANNOTATION_CREATED",
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_DELETED",
        "ANNOTATIONS_DELETED",
    ]
    assert events[2][2]["annotation"]["result"] == choice("negative")
    deleted = events[4][2]
    assert set(deleted) == {"action", "annotations", "project"}
    assert deleted["annotations"] == [{"id": first["id"]}]
    assert deleted["project"]["id"] == project["id"]
    assert other_task != task_id


async def test_parent_prediction_must_belong_to_the_task(api: httpx.AsyncClient) -> None:
    _, (task_id, other_task) = await project_with_tasks(api, 2)
    prediction = (
        await api.post("/api/predictions", json={"task": other_task, "result": choice("positive")})
    ).json()
    response = await api.post(
        f"/api/tasks/{task_id}/annotations", json={"result": [], "parent_prediction": prediction["id"]}
    )
    assert response.status_code == 400
    assert "parent_prediction" in response.json()["validation_errors"]
    ok = await api.post(
        f"/api/tasks/{other_task}/annotations",
        json={"result": choice("positive"), "parent_prediction": prediction["id"]},
    )
    assert ok.status_code == 201
    assert ok.json()["parent_prediction"] == prediction["id"]


async def test_deleting_a_prediction_clears_the_parent_prediction_of_its_annotations(
    api: httpx.AsyncClient,
) -> None:
    """Whichever way a prediction goes (alone, by a data manager action, with its model version, with its
    task), the annotations made from it keep their result and show ``parent_prediction`` null; others keep
    theirs."""
    project, tasks = await project_with_tasks(api, 5)
    annotations = []
    for task_id, version in zip(tasks, ["v1", "v1", "v2", "v1", "v1"], strict=True):
        prediction = (
            await api.post(
                "/api/predictions",
                json={"task": task_id, "result": choice("positive"), "model_version": version},
            )
        ).json()
        created = await api.post(
            f"/api/tasks/{task_id}/annotations",
            json={"result": choice("negative"), "parent_prediction": prediction["id"]},
        )
        assert created.status_code == 201, created.text
        annotations.append((created.json()["id"], prediction["id"]))
    alone, by_action, by_version, kept, with_task = annotations
    assert (await api.delete(f"/api/predictions/{alone[1]}")).status_code == 204
    acted = await api.post(
        "/api/dm/actions",
        params={"id": "delete_tasks_predictions", "project": project["id"]},
        json={"selectedItems": {"all": False, "included": [tasks[1]]}},
    )
    assert acted.status_code == 200, acted.text
    versions = await api.request(
        "DELETE", f"/api/projects/{project['id']}/model-versions", json={"model_version": "v2"}
    )
    assert versions.status_code < 300, versions.text
    removed = await api.post(
        "/api/dm/actions",
        params={"id": "delete_tasks", "project": project["id"]},
        json={"selectedItems": {"all": False, "included": [tasks[4]]}},
    )
    assert removed.status_code == 200, removed.text

    shown, in_tasks = {}, {}
    for task_id, (annotation_id, _) in zip(tasks[:4], annotations[:4], strict=True):
        body = (await api.get(f"/api/annotations/{annotation_id}")).json()
        assert body["result"] == choice("negative")
        shown[annotation_id] = body["parent_prediction"]
        (in_task,) = (await api.get(f"/api/tasks/{task_id}")).json()["annotations"]
        in_tasks[in_task["id"]] = in_task["parent_prediction"]
    expected = {alone[0]: None, by_action[0]: None, by_version[0]: None, kept[0]: kept[1]}
    assert shown == expected
    assert in_tasks == expected
    assert (await api.get(f"/api/annotations/{with_task[0]}")).status_code == 404


async def test_annotations_need_a_token(api_server: Any) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as anonymous:
        assert (await anonymous.get("/api/annotations/1")).status_code == 401
        assert (await anonymous.post("/api/tasks/1/annotations", json={"result": []})).status_code == 401


async def test_concurrent_annotations_of_one_task_are_all_counted(
    api: httpx.AsyncClient, database_url: str
) -> None:
    project, (task_id, _) = await project_with_tasks(api, 2)
    responses = await asyncio.gather(
        *(
            api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice("positive")})
            for _ in range(8)
        )
    )
    assert [response.status_code for response in responses] == [201] * 8
    assert await _task_counters(database_url, task_id) == (8, 0, True)
    assert (await read_project(api, project["id"]))["total_annotations_number"] == 8
    assert len(await _events(database_url)) == 8


async def test_values_postgres_cannot_store_are_400(api: httpx.AsyncClient) -> None:
    _, (task_id, _) = await project_with_tasks(api, 2)
    region = choice("positive")[0] | {"meta": {"text": "nul \u0000 inside"}}
    response = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": [region]})
    assert response.status_code == 400, response.text
    assert (await api.get(f"/api/tasks/{task_id}/annotations")).json() == []
