"""Import over real HTTP: both task forms, inline annotations/predictions, all-or-nothing errors."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.annotation_api.db import driver_connection, make_engine
from tests.support.builders import choice, create_project, import_tasks, read_project
from tests.support.waiting import wait_for_lock_wait


async def test_import_bare_and_full_tasks_with_counters(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    tasks = [
        {"text": "bare", "extra": 1},
        {"data": {"text": "full"}, "meta": {"source": "s"}},
        {
            "data": {"text": "with both"},
            "annotations": [{"result": choice("positive"), "lead_time": 1.5}],
            "predictions": [
                {"result": choice("negative"), "score": 0.4, "model_version": "v1"},
                {"result": choice("positive")},
            ],
        },
        {"data": {"text": "skipped"}, "annotations": [{"result": [], "was_cancelled": True}]},
    ]
    body = await import_tasks(api, project["id"], tasks, return_task_ids="true")
    assert body["task_count"] == 4
    assert body["annotation_count"] == 2
    assert body["prediction_count"] == 2
    assert body["data_columns"] == ["extra", "text"]
    assert body["could_be_tasks_list"] is False
    assert body["found_formats"] == []
    assert body["file_upload_ids"] == []
    assert body["duration"] >= 0
    assert len(body["task_ids"]) == 4
    assert body["task_ids"] == sorted(body["task_ids"])
    counters = await read_project(api, project["id"])
    assert counters["task_number"] == 4
    assert counters["total_annotations_number"] == 1
    assert counters["total_predictions_number"] == 2
    assert counters["num_tasks_with_annotations"] == 1
    # a prediction without model_version is "undefined"; that was the last one imported
    assert counters["model_version"] == "undefined"
    second = await import_tasks(api, project["id"], [{"text": "more"}])
    assert "task_ids" not in second
    assert (await read_project(api, project["id"]))["task_number"] == 5


async def test_project_model_version_set_from_import_only_when_empty(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    task = {"data": {"text": "t"}, "predictions": [{"result": choice("positive"), "model_version": "m1"}]}
    await import_tasks(api, project["id"], [task])
    assert (await read_project(api, project["id"]))["model_version"] == "m1"
    task["predictions"][0]["model_version"] = "m2"  # type: ignore[index]
    await import_tasks(api, project["id"], [task])
    assert (await read_project(api, project["id"]))["model_version"] == "m1"


async def test_bad_item_is_named_and_nothing_is_written(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    tasks: list[object] = [{"text": f"t{i}"} for i in range(20)]
    tasks[17] = {"data": {"txt": "typo"}}
    response = await api.post(f"/api/projects/{project['id']}/import", json=tasks)
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == 'tasks[17].data: missing key "text" required by <Text name="text" value="$text">'
    assert list(body["validation_errors"]) == ["tasks[17].data"]
    assert (await read_project(api, project["id"]))["task_number"] == 0
    listed = await api.get("/api/tasks", params={"project": project["id"]})
    if listed.status_code == 200:
        assert listed.json()["tasks"] == []


async def test_invalid_inline_results_are_400(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    cases = {
        "tasks[0].predictions[0].result": {
            "data": {"text": "x"},
            "predictions": [{"result": choice("unknown-label")}],
        },
        "tasks[0].predictions[0].score": {
            "data": {"text": "x"},
            "predictions": [{"result": choice("positive"), "score": "high"}],
        },
        "tasks[0].predictions[0].model_version": {
            "data": {"text": "x"},
            "predictions": [{"result": choice("positive"), "model_version": 3}],
        },
        "tasks[0].annotations[0].result": {"data": {"text": "x"}, "annotations": [{"lead_time": 1}]},
        "tasks[0].annotations": {"data": {"text": "x"}, "annotations": {"result": []}},
        "tasks[0].data": {"data": "text"},
        "tasks[0].meta": {"data": {"text": "x"}, "meta": [1]},
        "tasks[0]": 5,
    }
    for field, task in cases.items():
        response = await api.post(f"/api/projects/{project['id']}/import", json=[task])
        assert response.status_code == 400, (field, response.text)
        assert list(response.json()["validation_errors"]) == [field], response.text
    assert (await read_project(api, project["id"]))["task_number"] == 0


async def test_body_must_be_a_non_empty_json_list(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    url = f"/api/projects/{project['id']}/import"
    headers = {"Content-Type": "application/json"}
    for content in (b"[{", b"{}", b"[]", b"", b'"text"'):
        response = await api.post(url, content=content, headers=headers)
        assert response.status_code == 400, (content, response.text)
        assert "tasks" in response.json()["validation_errors"]
    missing = await api.post("/api/projects/99999/import", json=[{"text": "x"}])
    assert missing.status_code == 404
    assert "99999" in missing.json()["detail"]


async def test_awkward_characters_round_trip_and_nul_is_refused(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    text = 'back\\slash\ttab\nnewline\r "quoted" \\N é 🙂'
    task = {
        "data": {"text": text},
        "meta": {"path": "C:\\tmp\\x"},
        "predictions": [{"result": choice("positive"), "model_version": "v\\1\tx", "score": 1e-5}],
        "annotations": [{"result": choice("negative"), "lead_time": 0.25}],
    }
    await import_tasks(api, project["id"], [task, {"text": "\\"}])
    listed = (await api.get("/api/tasks", params={"project": project["id"], "fields": "all"})).json()["tasks"]
    assert listed[0]["data"] == {"text": text}
    assert listed[0]["meta"] == {"path": "C:\\tmp\\x"}
    assert listed[0]["predictions"][0]["model_version"] == "v\\1\tx"
    assert listed[0]["predictions"][0]["score"] == 1e-5
    assert listed[0]["annotations"][0]["lead_time"] == 0.25
    assert listed[1]["data"] == {"text": "\\"}
    response = await api.post(
        f"/api/projects/{project['id']}/import", json=[{"text": "ok"}, {"text": "nul\u0000"}]
    )
    assert response.status_code == 400
    assert list(response.json()["validation_errors"]) == ["tasks[1].data"]
    assert (await read_project(api, project["id"]))["task_number"] == 2


async def test_raw_writes_join_the_session_transaction(database_url: str) -> None:
    """The bulk paths write through the session's asyncpg connection: a rollback must undo them too,
    even when the raw connection is the first thing the session touches."""
    engine = make_engine(database_url, 1)
    try:
        async with async_sessionmaker(engine)() as session:
            conn = await driver_connection(session)
            await conn.execute(
                "WITH o AS (INSERT INTO organization (title) VALUES ('ghosts') RETURNING id) "
                "INSERT INTO project (title, label_config, organization_id) SELECT 'ghost', '<View/>', id FROM o"
            )
            await session.rollback()
        async with async_sessionmaker(engine)() as session:
            conn = await driver_connection(session)
            assert await conn.fetchval("SELECT count(*) FROM project WHERE title = 'ghost'") == 0
    finally:
        await engine.dispose()


async def test_import_racing_a_label_config_change_validates_against_the_new_config(
    api: httpx.AsyncClient, database_url: str
) -> None:
    project = await create_project(api)
    image_config = '<View><Image name="img" value="$image"/><Choices name="c" toName="img"><Choice value="a"/></Choices></View>'
    changer = await asyncpg.connect(database_url)
    try:
        transaction = changer.transaction()
        await transaction.start()
        await changer.execute("SELECT 1 FROM project WHERE id = $1 FOR UPDATE", project["id"])
        await changer.execute(
            "UPDATE project SET label_config = $2 WHERE id = $1", project["id"], image_config
        )
        pending = asyncio.create_task(api.post(f"/api/projects/{project['id']}/import", json=[{"text": "x"}]))
        await wait_for_lock_wait(database_url, "the import to wait for the label config change")
        await transaction.commit()
        response = await pending
    finally:
        await changer.close()
    assert response.status_code == 400, response.text
    assert '"image"' in response.json()["detail"]
    assert (await read_project(api, project["id"]))["task_number"] == 0
