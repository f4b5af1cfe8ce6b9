"""Predictions over real HTTP: single CRUD, bulk import (all-or-nothing), model versions, counters."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from tests.support.builders import choice, project_with_tasks, read_project


async def _list(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/api/predictions/", params=params)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def test_create_defaults_version_and_adopts_it(api: httpx.AsyncClient) -> None:
    project, (task_id, *_) = await project_with_tasks(api, 3)
    response = await api.post(
        "/api/predictions/", json={"task": task_id, "result": choice("positive"), "cluster": None}
    )
    assert response.status_code == 201, response.text
    prediction = response.json()
    assert set(prediction) == {
        "id",
        "task",
        "project",
        "result",
        "score",
        "model_version",
        "ml_backend",
        "job",
        "created_at",
        "updated_at",
    }
    assert (prediction["task"], prediction["project"]) == (task_id, project["id"])
    assert prediction["model_version"] == "undefined"
    assert (prediction["score"], prediction["ml_backend"], prediction["job"]) == (None, None, None)
    after = await read_project(api, project["id"])
    assert after["model_version"] == "undefined"
    assert after["total_predictions_number"] == 1
    second = await api.post(
        "/api/predictions",
        json={"task": task_id, "result": choice("negative"), "score": 0.25, "model_version": "v2"},
    )
    assert second.json()["model_version"] == "v2"
    assert second.json()["score"] == 0.25
    after = await read_project(api, project["id"])
    assert (after["model_version"], after["total_predictions_number"]) == ("undefined", 2)


async def test_bad_predictions_name_the_field(api: httpx.AsyncClient) -> None:
    project, (task_id, *_) = await project_with_tasks(api, 3)
    other, (foreign_task, *_) = await project_with_tasks(api, 3)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"task": task_id, "result": [{"from_name": "x", "to_name": "text", "type": "choices"}]}, "result"),
        ({"task": task_id, "result": "positive"}, "result"),
        ({"task": task_id, "result": choice("positive"), "score": "high"}, "score"),
        ({"task": 987654, "result": choice("positive")}, "task"),
        ({"task": 2**64, "result": choice("positive")}, "task"),
        ({"result": choice("positive")}, "task"),
        ({"task": task_id, "result": choice("positive"), "project": other["id"]}, "project"),
        ({"task": task_id, "result": choice("positive"), "model_version": "v" * 300}, "model_version"),
    ]
    for body, field in cases:
        response = await api.post("/api/predictions", json=body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.json()["validation_errors"], (body, response.json())
    assert await _list(api, project=project["id"]) == []
    assert (await read_project(api, project["id"]))["model_version"] == ""
    assert foreign_task != task_id


async def test_list_get_update_delete(api: httpx.AsyncClient) -> None:
    project, tasks = await project_with_tasks(api, 3)
    created = []
    for task_id in tasks:
        for label in ("positive", "negative"):
            response = await api.post("/api/predictions", json={"task": task_id, "result": choice(label)})
            created.append(response.json()["id"])
    other, (other_task, *_) = await project_with_tasks(api, 3)
    await api.post("/api/predictions", json={"task": other_task, "result": choice("positive")})

    assert [p["id"] for p in await _list(api, project=project["id"])] == created
    assert [p["id"] for p in await _list(api, task__project=project["id"])] == created
    assert [p["id"] for p in await _list(api, task=tasks[1])] == created[2:4]
    assert len(await _list(api)) == 7
    pages = [await _list(api, project=project["id"], page=page, page_size=4) for page in (1, 2, 3)]
    assert [[p["id"] for p in page] for page in pages] == [created[:4], created[4:], []]
    assert (await api.get("/api/predictions", params={"page": 0})).status_code == 400

    one = (await api.get(f"/api/predictions/{created[0]}/")).json()
    assert one["result"] == choice("positive")
    response = await api.patch(
        f"/api/predictions/{created[0]}/",
        json={"score": 0.75, "model_version": "v9", "result": choice("negative")},
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["score"], updated["model_version"], updated["result"]) == (0.75, "v9", choice("negative"))
    moved = await api.patch(f"/api/predictions/{created[0]}", json={"task": other_task})
    assert moved.status_code == 400
    assert "task" in moved.json()["validation_errors"]
    bad = await api.patch(f"/api/predictions/{created[0]}", json={"result": [{"type": "choices"}]})
    assert bad.status_code == 400
    assert (await api.get(f"/api/predictions/{created[0]}")).json()["score"] == 0.75

    assert (await api.delete(f"/api/predictions/{created[0]}")).status_code == 204
    assert (await api.get(f"/api/predictions/{created[0]}")).status_code == 404
    assert (await api.delete(f"/api/predictions/{created[0]}/")).status_code == 404
    assert (await api.patch("/api/predictions/999999", json={"score": 1})).status_code == 404
    assert (await read_project(api, project["id"]))["total_predictions_number"] == 5
    task = (await api.get(f"/api/tasks/{tasks[0]}")).json()
    assert task["total_predictions"] == 1
    assert other["id"] != project["id"]


async def test_import_predictions_all_or_nothing(api: httpx.AsyncClient) -> None:
    project, tasks = await project_with_tasks(api, 3)
    _, (foreign_task, *_) = await project_with_tasks(api, 3)
    url = f"/api/projects/{project['id']}/import/predictions"
    good = {"task": tasks[0], "result": choice("positive"), "score": 0.5, "model_version": "m1"}
    bad_cases: list[tuple[list[Any], str]] = [
        ([good, {"task": tasks[1], "result": [{"from_name": "sentiment"}]}], "1.result"),
        ([good, good, {"task": foreign_task, "result": choice("positive")}], "2.task"),
        ([good, {"task": tasks[1], "result": choice("positive"), "score": "x"}], "1.score"),
        ([good, {"result": choice("positive")}], "1.task"),
        ([{"task": 999999, "result": []}], "0.task"),
    ]
    for body, field in bad_cases:
        response = await api.post(url, json=body)
        assert response.status_code == 400, response.text
        assert field in response.json()["validation_errors"], response.json()
    not_a_list = await api.post(url, json={"task": tasks[0]})
    assert not_a_list.status_code == 400
    assert "body" in not_a_list.json()["validation_errors"]
    malformed = await api.post(url, content=b'[{"task": 1,', headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    too_big = await api.post(url, json=[good, {"task": 2**64, "result": []}])
    assert too_big.status_code == 400
    assert "1.task" in too_big.json()["validation_errors"]
    assert await _list(api, project=project["id"]) == []

    items = [
        {"task": tasks[0], "result": choice("positive"), "score": 0.9, "model_version": "m1"},
        {"task": tasks[0], "result": choice("negative"), "model_version": "m2"},
        {"task": tasks[1], "result": choice("negative")},
        {"task": tasks[2], "result": [], "score": 0.1, "model_version": "m2", "neighbors": None},
    ]
    response = await api.post(url + "/", json=items)
    assert response.status_code == 201, response.text
    assert response.json() == {"created": 4}
    listed = await _list(api, project=project["id"])
    assert [(p["task"], p["model_version"], p["score"]) for p in listed] == [
        (tasks[0], "m1", 0.9),
        (tasks[0], "m2", None),
        (tasks[1], "undefined", None),
        (tasks[2], "m2", 0.1),
    ]
    counters = await read_project(api, project["id"])
    assert counters["total_predictions_number"] == 4
    assert counters["model_version"] == "m2"  # the last imported version, as the project had none
    assert (await api.get(f"/api/tasks/{tasks[0]}")).json()["total_predictions"] == 2
    assert (await api.post("/api/projects/999999/import/predictions", json=items)).status_code == 404
    assert (await api.post(url, json=[])).json() == {"created": 0}


async def test_model_versions_list_extended_and_delete(api: httpx.AsyncClient, database_url: str) -> None:
    project, tasks = await project_with_tasks(api, 3)
    url = f"/api/projects/{project['id']}/model-versions"
    assert (await api.get(url)).json() == {}
    conn = await asyncpg.connect(database_url)
    try:
        backend_id = await conn.fetchval(
            "INSERT INTO ml_backend (project_id, url, title, model_version, state) "
            "VALUES ($1, 'http://127.0.0.1:9', 'b1', 'live-v3', 'CO') RETURNING id",
            project["id"],
        )
    finally:
        await conn.close()
    items = [
        {"task": tasks[0], "result": choice("positive"), "model_version": "a"},
        {"task": tasks[1], "result": choice("positive"), "model_version": "a"},
        {"task": tasks[1], "result": choice("negative"), "model_version": "b"},
        {"task": tasks[2], "result": choice("negative")},
    ]
    await api.post(f"/api/projects/{project['id']}/import/predictions", json=items)
    assert (await api.get(url + "/")).json() == {"a": 2, "b": 1, "undefined": 1}
    extended = (await api.get(url, params={"extended": "true"})).json()
    assert set(extended) == {"static", "live"}
    assert extended["live"] == [
        {
            "id": backend_id,
            "title": "b1",
            "url": "http://127.0.0.1:9",
            "model_version": "live-v3",
            "state": "CO",
        }
    ]
    assert sorted((v["model_version"], v["count"]) for v in extended["static"]) == [
        ("a", 2),
        ("b", 1),
        ("undefined", 1),
    ]
    assert all(v["latest"] for v in extended["static"])

    response = await api.request("DELETE", url, json={"model_version": "a"})
    assert response.status_code == 200, response.text
    assert response.json()["deleted_predictions"] == 2  # a small project: done within the request
    assert response.json()["detail"] == "Deleted 2 predictions"
    assert (await api.get(url)).json() == {"b": 1, "undefined": 1}
    assert (await api.request("DELETE", url, json={"model_version": "zzz"})).json()[
        "deleted_predictions"
    ] == 0
    missing = await api.request("DELETE", url, json={})
    assert missing.status_code == 400
    assert "model_version" in missing.json()["validation_errors"]
    counters = await read_project(api, project["id"])
    assert counters["total_predictions_number"] == 2
    assert (await api.get(f"/api/tasks/{tasks[0]}")).json()["total_predictions"] == 0
    assert (await api.get(f"/api/tasks/{tasks[1]}")).json()["total_predictions"] == 1
    assert (await api.get("/api/projects/999999/model-versions")).status_code == 404


async def test_import_predictions_streams_many_batches_all_or_nothing(api: httpx.AsyncClient) -> None:
    """A body of several batches (imports.predictions.BATCH_BYTES each): a bad item in a later batch, or
    a task of another project there, names its index and leaves nothing written; a good one counts."""
    project, tasks = await project_with_tasks(api, 4)
    _, (foreign_task, *_) = await project_with_tasks(api, 1)
    url = f"/api/projects/{project['id']}/import/predictions"
    count = 30_000  # ~3 MB: three batches or more
    items = [
        {"task": tasks[i % 4], "result": choice("positive" if i % 2 else "negative"), "score": 0.5}
        | {"model_version": f"v{i // 10_000}", "extra": "ignored"}
        for i in range(count)
    ]
    late = count - 5
    for bad, field in (
        ({"task": tasks[0], "result": [{"from_name": "sentiment"}]}, f"{late}.result"),
        ({"task": foreign_task, "result": choice("positive")}, f"{late}.task"),
        ({"task": "1", "result": choice("positive")}, f"{late}.task"),
        ({"task": tasks[0], "result": choice("positive"), "score": True}, f"{late}.score"),
        (
            {"task": tasks[0], "result": choice("positive"), "model_version": "x" * 256},
            f"{late}.model_version",
        ),
        ({"task": tasks[0], "result": choice("positive"), "note": "a\x00b"}, f"{late}.note"),
        ({"task": tasks[0], "result": choice("positive"), "score": 1e20}, f"{late}.score"),
    ):
        response = await api.post(url, json=[*items[:late], bad, *items[late + 1 :]])
        assert response.status_code == 400, response.text
        assert field in response.json()["validation_errors"], response.json()
    assert await _list(api, project=project["id"], page=1) == []
    assert (await read_project(api, project["id"]))["total_predictions_number"] == 0

    response = await api.post(url, json=[{**item, "task": float(item["task"])} for item in items])
    assert response.status_code == 201, response.text
    assert response.json() == {"created": count}
    after = await read_project(api, project["id"])
    assert after["total_predictions_number"] == count
    assert after["model_version"] == "v2"
    for task_id in tasks:
        assert (await api.get(f"/api/tasks/{task_id}")).json()["total_predictions"] == count // 4
    versions = (await api.get(f"/api/projects/{project['id']}/model-versions")).json()
    assert versions == {"v0": 10_000, "v1": 10_000, "v2": 10_000}
