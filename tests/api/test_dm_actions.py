"""Data manager actions over real HTTP: selections, set-based deletes, counters and outbox events."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import orjson

from services.annotation_api.outbox import DELETED_IDS_PER_EVENT
from tests.support.builders import choice, create_project, import_tasks
from tests.support.waiting import wait_job_result


async def _labeled_project(api: httpx.AsyncClient, tasks: int = 4) -> tuple[int, list[int]]:
    """Every task has one annotation and two predictions."""
    project = await create_project(api)
    items = [
        {
            "data": {"text": f"t{i}"},
            "annotations": [{"result": choice("positive")}],
            "predictions": [
                {"result": choice("positive"), "model_version": "v1"},
                {"result": choice("negative"), "model_version": "v2"},
            ],
        }
        for i in range(tasks)
    ]
    body = await import_tasks(api, project["id"], items, return_task_ids=True)
    return project["id"], body["task_ids"]


async def _act(
    api: httpx.AsyncClient, action: str, project_id: int, body: Any = None, **kwargs: Any
) -> httpx.Response:
    return await api.post(
        "/api/dm/actions/", params={"id": action, "project": project_id}, json=body, **kwargs
    )


def _answer(response: httpx.Response) -> dict[str, Any]:
    """Label Studio's answer: the body without the ``job_id`` labelloop adds (a small selection is
    done within the request, so the job is already completed)."""
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert isinstance(body.pop("job_id"), int)
    return body


async def _counts(api: httpx.AsyncClient, project_id: int) -> tuple[int, int, int, int]:
    p = (await api.get(f"/api/projects/{project_id}")).json()
    return (
        p["task_number"],
        p["total_annotations_number"],
        p["total_predictions_number"],
        p["num_tasks_with_annotations"],
    )


async def _task(database_url: str, task_id: int) -> tuple[int, int, bool] | None:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT total_annotations, (SELECT count(*) FROM prediction p WHERE p.task_id = t.id), is_labeled "
            "FROM task t WHERE id = $1",
            task_id,
        )
    finally:
        await conn.close()
    return None if row is None else (row[0], row[1], row[2])


async def test_lists_registered_actions(api: httpx.AsyncClient) -> None:
    project_id, _ = await _labeled_project(api, tasks=1)
    response = await api.get("/api/dm/actions", params={"project": project_id})
    assert response.status_code == 200, response.text
    actions = {item["id"]: item for item in response.json()}
    assert {"delete_tasks", "delete_tasks_predictions", "delete_tasks_annotations"} <= set(actions)
    for item in actions.values():
        assert isinstance(item["title"], str) and isinstance(item["order"], int)
    assert actions["delete_tasks"]["dialog"]["type"] == "confirm"
    orders = [item["order"] for item in response.json()]
    assert orders == sorted(orders)
    assert (await api.get("/api/dm/actions/", params={"project": 999999})).status_code == 404
    missing = await api.get("/api/dm/actions")
    assert missing.status_code == 400
    assert "project" in missing.json()["validation_errors"]


async def test_delete_predictions_of_included_tasks_only(api: httpx.AsyncClient, database_url: str) -> None:
    project_id, tasks = await _labeled_project(api)
    other_id, other_tasks = await _labeled_project(api, tasks=1)
    body = {"selectedItems": {"all": False, "included": [tasks[0], tasks[2], other_tasks[0], 999999]}}
    response = await _act(api, "delete_tasks_predictions", project_id, body)
    assert response.status_code == 200, response.text
    assert _answer(response) == {"processed_items": 4, "detail": "Deleted 4 predictions"}
    assert await _task(database_url, tasks[0]) == (1, 0, True)
    assert await _task(database_url, tasks[1]) == (1, 2, True)
    assert await _counts(api, project_id) == (4, 4, 4, 4)
    assert await _counts(api, other_id) == (1, 1, 2, 1)  # another project's task id is ignored


async def test_all_with_excluded_and_no_body_mean_all_tasks(
    api: httpx.AsyncClient, database_url: str
) -> None:
    project_id, tasks = await _labeled_project(api)
    body = {
        "selectedItems": {"all": True, "excluded": [tasks[1]]},
        "filters": {"conjunction": "and", "items": []},
    }
    response = await _act(api, "delete_tasks_predictions", project_id, body)
    assert response.json()["processed_items"] == 6
    assert await _task(database_url, tasks[1]) == (1, 2, True)
    response = await api.post(
        "/api/dm/actions", params={"id": "delete_tasks_predictions", "project": project_id}
    )
    assert response.status_code == 200, response.text
    assert response.json()["processed_items"] == 2
    assert await _counts(api, project_id) == (4, 4, 0, 4)
    empty = await _act(api, "delete_tasks_predictions", project_id, {})
    assert _answer(empty) == {"processed_items": 0, "detail": "Deleted 0 predictions"}


async def test_delete_annotations_writes_one_deleted_event(api: httpx.AsyncClient, database_url: str) -> None:
    project_id, tasks = await _labeled_project(api, tasks=3)
    selection = {"selectedItems": {"all": False, "included": tasks[:2]}, "ordering": ["tasks:id"]}
    response = await _act(api, "delete_tasks_annotations", project_id, selection)
    assert _answer(response) == {"processed_items": 2, "detail": "Deleted 2 annotations"}
    assert await _task(database_url, tasks[0]) == (0, 2, False)
    assert await _task(database_url, tasks[2]) == (1, 2, True)
    assert await _counts(api, project_id) == (3, 1, 6, 1)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT project_id, action, payload::text FROM outbox_event ORDER BY id")
        annotation_ids = await conn.fetch("SELECT id FROM annotation ORDER BY id")
    finally:
        await conn.close()
    [(event_project, action, payload)] = [(r[0], r[1], orjson.loads(r[2])) for r in rows]
    assert (event_project, action, payload["action"]) == (
        project_id,
        "ANNOTATIONS_DELETED",
        "ANNOTATIONS_DELETED",
    )
    remaining = {r[0] for r in annotation_ids}
    deleted_ids = [item["id"] for item in payload["annotations"]]
    assert len(deleted_ids) == 2 and not remaining & set(deleted_ids)
    assert payload["project"]["id"] == project_id
    nothing = await _act(api, "delete_tasks_annotations", project_id, selection)
    assert nothing.json()["processed_items"] == 0


async def test_delete_tasks(api: httpx.AsyncClient, database_url: str) -> None:
    project_id, tasks = await _labeled_project(api)
    other_id, other_tasks = await _labeled_project(api, tasks=1)
    body = {"selectedItems": {"all": False, "included": [tasks[3], other_tasks[0]]}}
    response = await _act(api, "delete_tasks", project_id, body)
    assert response.status_code == 200, response.text
    assert response.json()["processed_items"] == 1
    assert "1 task" in response.json()["detail"]
    assert await _task(database_url, tasks[3]) is None
    assert await _task(database_url, other_tasks[0]) is not None
    assert await _counts(api, project_id) == (3, 3, 6, 3)
    response = await _act(
        api, "delete_tasks", project_id, {"selectedItems": {"all": True, "excluded": [tasks[0]]}}
    )
    assert response.json()["processed_items"] == 2
    assert await _counts(api, project_id) == (1, 1, 2, 1)
    assert await _counts(api, other_id) == (1, 1, 2, 1)


async def test_bad_requests_name_the_field(api: httpx.AsyncClient) -> None:
    project_id, tasks = await _labeled_project(api, tasks=1)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"selectedItems": {"all": False}}, "selectedItems.included"),
        ({"selectedItems": {"all": False, "included": "1,2"}}, "selectedItems.included"),
        ({"selectedItems": {"all": False, "included": [1, True]}}, "selectedItems.included"),
        ({"selectedItems": {"all": False, "included": [2**64]}}, "selectedItems.included"),
        ({"selectedItems": {"all": True, "excluded": [-1]}}, "selectedItems.excluded"),
        ({"selectedItems": {"included": [1]}}, "selectedItems.all"),
        ({"selectedItems": [1, 2]}, "selectedItems"),
        (
            {"selectedItems": {"all": True}, "filters": {"conjunction": "and", "items": [{"filter": "x"}]}},
            "filters.items",
        ),
        ({"filters": "x"}, "filters"),
    ]
    for body, field in cases:
        response = await _act(api, "delete_tasks", project_id, body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.json()["validation_errors"], (body, response.json())
    unknown = await _act(api, "format_disk", project_id, {})
    assert unknown.status_code == 400
    assert "id" in unknown.json()["validation_errors"]
    not_object = await _act(api, "delete_tasks", project_id, [1, 2])
    assert not_object.status_code == 400
    assert (await _act(api, "delete_tasks", 999999, {})).status_code == 404
    assert await _counts(api, project_id) == (1, 1, 2, 1)
    assert tasks


async def test_bulk_annotation_delete_splits_events(api: httpx.AsyncClient, database_url: str) -> None:
    project = await create_project(api)
    count = DELETED_IDS_PER_EVENT + 1
    items = [
        {"data": {"text": str(i)}, "annotations": [{"result": choice("positive")}]} for i in range(count)
    ]
    await import_tasks(api, project["id"], items)
    conn = await asyncpg.connect(database_url)
    try:
        before = [row[0] for row in await conn.fetch("SELECT id FROM annotation ORDER BY id")]
        response = await _act(api, "delete_tasks_annotations", project["id"])
        assert response.json()["processed_items"] == count
        assert (await wait_job_result(api, response.json()["job_id"]))["processed_items"] == count
        rows = await conn.fetch("SELECT action, payload::text FROM outbox_event ORDER BY id")
    finally:
        await conn.close()
    batches = [[item["id"] for item in orjson.loads(row[1])["annotations"]] for row in rows]
    assert {row[0] for row in rows} == {"ANNOTATIONS_DELETED"}
    assert [len(batch) for batch in batches] == [DELETED_IDS_PER_EVENT, 1]
    assert [annotation_id for batch in batches for annotation_id in batch] == before
    assert await _counts(api, project["id"]) == (count, 0, 0, 0)
