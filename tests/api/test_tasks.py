"""Task pages and single-task CRUD over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.annotation_api.counters import refresh_project_counters, refresh_task_counters
from services.annotation_api.db import make_engine
from tests.support.builders import choice, create_project, import_tasks
from tests.support.waiting import wait_for_lock_wait


async def _ids(api: httpx.AsyncClient, **params: Any) -> list[int]:
    response = await api.get("/api/tasks", params=params)
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()["tasks"]]


async def _scored_project(api: httpx.AsyncClient) -> tuple[int, list[int]]:
    """Tasks 0..5: scores (v1) 0.5, 0.9, none, 0.1, none, 0.7; task 3 also has a v2 0.99 prediction."""
    project = await create_project(api, model_version="v1")
    scores: list[float | None] = [0.5, 0.9, None, 0.1, None, 0.7]
    tasks = []
    for index, score in enumerate(scores):
        predictions = (
            [] if score is None else [{"result": choice("positive"), "score": score, "model_version": "v1"}]
        )
        if index == 3:
            predictions.append({"result": choice("negative"), "score": 0.99, "model_version": "v2"})
        tasks.append({"data": {"text": f"t{index}"}, "predictions": predictions})
    body = await import_tasks(api, project["id"], tasks, return_task_ids=True)
    return project["id"], body["task_ids"]


async def test_pages_and_keyset_cover_every_task_once(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    ids = (await import_tasks(api, project["id"], [{"text": str(i)} for i in range(7)], return_task_ids=1))[
        "task_ids"
    ]
    paged: list[int] = []
    page = 1
    while True:
        chunk = await _ids(api, project=project["id"], page=page, page_size=3)
        if not chunk:
            break
        paged += chunk
        page += 1
    assert paged == ids
    assert page == 4  # pages 1-3 had tasks, page 4 (past the end) is empty, not an error
    keyset: list[int] = []
    after = 0
    while chunk := await _ids(api, project=project["id"], after=after, page_size=3):
        keyset += chunk
        after = chunk[-1]
    assert keyset == ids
    assert await _ids(api, project=project["id"], ordering="-id", page_size=2) == ids[::-1][:2]
    assert await _ids(api, project=project["id"], ordering="-id", after=ids[2]) == ids[:2][::-1]
    assert await _ids(api, project=project["id"], ordering="-id", page=2, page_size=3) == ids[::-1][3:6]
    assert await _ids(api, project=project["id"], ordering="-id", page=3, page_size=3) == [ids[0]]
    assert await _ids(api, project=project["id"], ordering="-id", page=4, page_size=3) == []
    body = (await api.get("/api/tasks/", params={"project": project["id"], "page_size": 2})).json()
    assert (body["total"], body["total_annotations"], body["total_predictions"]) == (7, 0, 0)
    task = body["tasks"][0]
    assert set(task) >= {
        "id",
        "data",
        "meta",
        "project",
        "created_at",
        "updated_at",
        "is_labeled",
        "total_annotations",
        "total_predictions",
    }
    assert "annotations" not in task


async def test_fields_all_embeds_annotations_and_predictions(api: httpx.AsyncClient) -> None:
    project_id, ids = await _scored_project(api)
    project = await create_project(api)
    await import_tasks(
        api, project["id"], [{"data": {"text": "a"}, "annotations": [{"result": choice("negative")}]}]
    )
    tasks = (await api.get("/api/tasks", params={"project": project_id, "fields": "all"})).json()["tasks"]
    by_id = {task["id"]: task for task in tasks}
    assert [p["model_version"] for p in by_id[ids[3]]["predictions"]] == ["v1", "v2"]
    assert by_id[ids[3]]["predictions"][0]["score"] == 0.1
    assert by_id[ids[3]]["predictions"][0]["result"] == choice("positive")
    assert by_id[ids[2]]["predictions"] == []
    assert all(task["annotations"] == [] for task in tasks)
    selected = (
        await api.get(
            "/api/tasks", params={"project": project_id, "fields": "all", "only_selected_version": "true"}
        )
    ).json()["tasks"]
    assert [p["model_version"] for p in selected[3]["predictions"]] == ["v1"]
    labeled = (await api.get("/api/tasks", params={"project": project["id"], "fields": "all"})).json()
    annotation = labeled["tasks"][0]["annotations"][0]
    assert annotation["result"] == choice("negative")
    assert annotation["task"] == labeled["tasks"][0]["id"]
    assert labeled["tasks"][0]["is_labeled"] is True
    assert labeled["total_annotations"] == 1


async def test_filters_and_totals(api: httpx.AsyncClient) -> None:
    project_id, ids = await _scored_project(api)
    await api.post(
        f"/api/projects/{project_id}/import",
        json=[{"data": {"text": "done"}, "annotations": [{"result": choice("positive")}]}],
    )
    labeled = (await api.get("/api/tasks", params={"project": project_id, "is_labeled": "true"})).json()
    assert [t["data"]["text"] for t in labeled["tasks"]] == ["done"]
    assert (labeled["total"], labeled["total_annotations"], labeled["total_predictions"]) == (1, 1, 0)
    assert len(await _ids(api, project=project_id, is_labeled="false")) == 6
    assert await _ids(api, project=project_id, is_labeled="false", page=2, page_size=4) == ids[4:]
    assert await _ids(api, project=project_id, has_predictions_of="v1", page=2, page_size=2) == [
        ids[3],
        ids[5],
    ]
    assert await _ids(api, project=project_id, has_predictions_of="v1", page=3, page_size=2) == []
    v2 = (await api.get("/api/tasks", params={"project": project_id, "has_predictions_of": "v2"})).json()
    assert [t["id"] for t in v2["tasks"]] == [ids[3]]
    assert (v2["total"], v2["total_predictions"]) == (1, 2)
    keyset = (
        await api.get("/api/tasks", params={"project": project_id, "has_predictions_of": "v2", "after": 0})
    ).json()
    assert [t["id"] for t in keyset["tasks"]] == [ids[3]]
    assert (keyset["total"], keyset["total_annotations"], keyset["total_predictions"]) == (None, None, None)
    assert await _ids(api, project=project_id, has_predictions_of="v1", after=ids[1]) == [ids[3], ids[5]]
    assert await _ids(api, project=project_id, has_predictions_of="v1", after=ids[3], ordering="-id") == [
        ids[1],
        ids[0],
    ]
    unfiltered = (await api.get("/api/tasks", params={"project": project_id, "after": ids[0]})).json()
    assert unfiltered["total"] == 7
    assert await _ids(api, project=project_id, has_predictions_of="v1", is_labeled="true") == []
    everything = (await api.get("/api/tasks", params={"project": project_id})).json()
    assert (everything["total"], everything["total_annotations"], everything["total_predictions"]) == (
        7,
        1,
        5,
    )


async def test_ordering_by_selected_version_score(api: httpx.AsyncClient) -> None:
    project_id, ids = await _scored_project(api)
    ascending = [ids[3], ids[0], ids[5], ids[1], ids[2], ids[4]]
    assert await _ids(api, project=project_id, ordering="prediction_score") == ascending
    descending = [ids[1], ids[5], ids[0], ids[3], ids[2], ids[4]]
    assert await _ids(api, project=project_id, ordering="-prediction_score") == descending
    paged = []
    for page in range(1, 5):
        paged += await _ids(api, project=project_id, ordering="prediction_score", page=page, page_size=2)
    assert paged == ascending
    assert await _ids(api, project=project_id, ordering="prediction_score", page=3, page_size=2) == [
        ids[2],
        ids[4],
    ]
    # the project now shows v2: only task 3 has a score, all others follow by id
    await api.patch(f"/api/projects/{project_id}", json={"model_version": "v2"})
    assert await _ids(api, project=project_id, ordering="-prediction_score") == [ids[3], *ids[:3], *ids[4:]]
    refused = await api.get(
        "/api/tasks", params={"project": project_id, "ordering": "prediction_score", "after": 1}
    )
    assert refused.status_code == 400
    assert "after" in refused.json()["validation_errors"]


async def _walk(api: httpx.AsyncClient, page_size: int, **params: Any) -> list[int]:
    """Every task, following next_after from the first page until it is null."""
    walked: list[int] = []
    after: str | None = None
    while True:
        query = {**params, "page_size": page_size} | ({"after": after} if after is not None else {})
        response = await api.get("/api/tasks", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        walked += [task["id"] for task in body["tasks"]]
        after = body["next_after"]
        if after is None:
            return walked
        assert len(walked) < 100, "next_after must come to an end"


async def test_keyset_pages_in_score_order_keep_ties_and_unscored_tasks_in_place(
    api: httpx.AsyncClient,
) -> None:
    """Ties broken by task id and unscored tasks last, across page boundaries, in both directions; each
    task once (a task with two scored predictions counts at its highest)."""
    project = await create_project(api, model_version="v1")
    scores: list[float | None] = [0.5, None, 0.5, 0.2, 0.5, None, 0.2, 0.9, None, 0.5, 0.5]
    tasks = []
    for index, score in enumerate(scores):
        predictions = (
            [] if score is None else [{"result": choice("positive"), "score": score, "model_version": "v1"}]
        )
        if index == 10:  # a lower second prediction of v1, and a v2 one that is not shown
            predictions.append({"result": choice("negative"), "score": 0.1, "model_version": "v1"})
        if index == 1:
            predictions.append({"result": choice("negative"), "score": 0.3, "model_version": "v2"})
        tasks.append({"data": {"text": f"t{index}"}, "predictions": predictions})
    ids = (await import_tasks(api, project["id"], tasks, return_task_ids=True))["task_ids"]
    scored = [(score, task_id) for score, task_id in zip(scores, ids, strict=True) if score is not None]
    unscored = [task_id for score, task_id in zip(scores, ids, strict=True) if score is None]
    ascending = [task_id for _, task_id in sorted(scored)] + unscored
    descending = [task_id for _, task_id in sorted(scored, reverse=True)] + unscored

    for page_size in (1, 2, 3, 4, 11, 20):
        assert await _walk(api, page_size, project=project["id"], ordering="prediction_score") == ascending
        assert await _walk(api, page_size, project=project["id"], ordering="-prediction_score") == descending
    paged: list[int] = []
    for page in range(1, 5):
        paged += await _ids(api, project=project["id"], ordering="prediction_score", page=page, page_size=3)
    assert paged == ascending
    # Cursors name a task's score and id: a tie's second page, and the unscored tail.
    tie = (
        await api.get(
            "/api/tasks", params={"project": project["id"], "ordering": "prediction_score", "page_size": 4}
        )
    ).json()
    assert tie["next_after"] == f"0.5,{ascending[3]}"
    assert (
        await _ids(api, project=project["id"], ordering="prediction_score", after=tie["next_after"])
        == (ascending[4:])
    )
    assert await _ids(api, project=project["id"], ordering="prediction_score", after=f"null,{ids[1]}") == [
        ids[5],
        ids[8],
    ]
    assert await _walk(api, 4, project=project["id"], ordering="id") == ids
    for ordering, after in (
        ("prediction_score", "abc"),
        ("prediction_score", "0.5"),
        ("prediction_score", "nan,3"),
        ("prediction_score", "0.5,x"),
        ("-prediction_score", "0.5,-3"),
        ("id", "0.5,3"),
        ("id", "-1"),
    ):
        refused = await api.get(
            "/api/tasks", params={"project": project["id"], "ordering": ordering, "after": after}
        )
        assert refused.status_code == 400, (ordering, after)
        assert "after" in refused.json()["validation_errors"], refused.text


async def _scores(api: httpx.AsyncClient, **params: Any) -> dict[int, float | None]:
    response = await api.get("/api/tasks", params=params)
    assert response.status_code == 200, response.text
    return {task["id"]: task["predictions_score"] for task in response.json()["tasks"]}


async def test_pages_carry_the_shown_versions_prediction_score(api: httpx.AsyncClient) -> None:
    project_id, ids = await _scored_project(api)
    v1 = {ids[0]: 0.5, ids[1]: 0.9, ids[2]: None, ids[3]: 0.1, ids[4]: None, ids[5]: 0.7}
    assert await _scores(api, project=project_id) == v1
    assert await _scores(api, project=project_id, fields="all", after=ids[2]) == {
        task_id: v1[task_id] for task_id in ids[3:]
    }
    by_score = await _scores(api, project=project_id, ordering="-prediction_score", page_size=3)
    assert list(by_score.items()) == [(ids[1], 0.9), (ids[5], 0.7), (ids[0], 0.5)]

    await api.patch(f"/api/projects/{project_id}", json={"model_version": "v2"})
    assert await _scores(api, project=project_id) == {
        task_id: 0.99 if task_id == ids[3] else None for task_id in ids
    }
    single = (await api.get(f"/api/tasks/{ids[3]}")).json()
    assert single["predictions_score"] == 0.99
    # no version chosen: the highest score of any version, as ordering=prediction_score sorts
    await api.patch(f"/api/projects/{project_id}", json={"model_version": ""})
    assert (await api.get(f"/api/tasks/{ids[3]}")).json()["predictions_score"] == 0.99
    assert (await api.get(f"/api/tasks/{ids[0]}")).json()["predictions_score"] == 0.5
    assert (await api.get(f"/api/tasks/{ids[2]}")).json()["predictions_score"] is None


async def test_bad_query_parameters_are_400_naming_them(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    for params, field in (
        ({}, "project"),
        ({"project": "x"}, "project"),
        ({"project": project["id"], "ordering": "title"}, "ordering"),
        ({"project": project["id"], "page": 0}, "page"),
        ({"project": project["id"], "is_labeled": "maybe"}, "is_labeled"),
    ):
        response = await api.get("/api/tasks", params=params)
        assert response.status_code == 400, params
        assert field in response.json()["validation_errors"], response.text
    missing = await api.get("/api/tasks", params={"project": 777777})
    assert missing.status_code == 404
    assert "777777" in missing.json()["detail"]


async def test_single_task_crud_keeps_counters(api: httpx.AsyncClient, database_url: str) -> None:
    project = await create_project(api)
    created = await api.post(
        "/api/tasks", json={"project": project["id"], "data": {"text": "x"}, "meta": {"m": 1}}
    )
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["data"], task["meta"], task["project"]) == ({"text": "x"}, {"m": 1}, project["id"])
    assert task["annotations"] == [] and task["predictions"] == []
    missing_key = await api.post("/api/tasks/", json={"project": project["id"], "data": {"txt": "x"}})
    assert missing_key.status_code == 400
    assert '"text"' in missing_key.json()["validation_errors"]["data"][0]
    patched = await api.patch(f"/api/tasks/{task['id']}/", json={"meta": {"m": 2}})
    assert patched.status_code == 200
    assert (patched.json()["data"], patched.json()["meta"]) == ({"text": "x"}, {"m": 2})
    bad_patch = await api.patch(f"/api/tasks/{task['id']}", json={"data": {"other": 1}})
    assert bad_patch.status_code == 400
    assert (await api.get(f"/api/tasks/{task['id']}")).json()["data"] == {"text": "x"}
    await import_tasks(
        api, project["id"], [{"data": {"text": "y"}, "annotations": [{"result": choice("positive")}]}]
    )
    labeled_id = (await _ids(api, project=project["id"]))[-1]
    assert (await api.get(f"/api/projects/{project['id']}")).json()["num_tasks_with_annotations"] == 1
    assert (await api.delete(f"/api/tasks/{labeled_id}")).status_code == 204
    assert (await api.get(f"/api/tasks/{labeled_id}")).status_code == 404
    assert (await api.delete(f"/api/tasks/{labeled_id}/")).status_code == 404
    counters = (await api.get(f"/api/projects/{project['id']}")).json()
    assert (
        counters["task_number"],
        counters["total_annotations_number"],
        counters["num_tasks_with_annotations"],
    ) == (
        1,
        0,
        0,
    )
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM annotation") == 0
    finally:
        await conn.close()
    for path in ("/api/tasks/99999999", "/api/tasks/99999999/"):
        response = await api.get(path)
        assert response.status_code == 404
        assert "99999999" in response.json()["detail"]
    assert (await api.post("/api/tasks", json={"project": 888888, "data": {"text": "x"}})).status_code == 404


async def test_counter_refresh_functions_recount_in_bulk(api: httpx.AsyncClient, database_url: str) -> None:
    """The functions annotation writers call (task counters and project deltas, one statement), and the
    project repair, which also counts predictions (tasks count theirs when read)."""
    project = await create_project(api)
    ids = (await import_tasks(api, project["id"], [{"text": str(i)} for i in range(3)], return_task_ids=1))[
        "task_ids"
    ]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO annotation (task_id, project_id, result, was_cancelled) "
            "SELECT t, $2, '[]', c FROM unnest($1::bigint[], $3::bool[]) AS u(t, c)",
            [ids[0], ids[0], ids[1]],
            project["id"],
            [False, False, True],
        )
        await conn.execute(
            "INSERT INTO prediction (task_id, project_id, result) SELECT t, $2, '[]' FROM unnest($1::bigint[]) t",
            [ids[1], ids[2], ids[2]],
            project["id"],
        )
    finally:
        await conn.close()
    engine = make_engine(database_url, 1)
    try:
        async with async_sessionmaker(engine).begin() as session:
            await refresh_task_counters(session, ids)
            await refresh_task_counters(session, ids)  # idempotent: nothing changes the second time
        tasks = {
            t["id"]: t
            for t in (await api.get("/api/tasks", params={"project": project["id"]})).json()["tasks"]
        }
        assert [
            (
                tasks[i]["total_annotations"],
                tasks[i]["cancelled_annotations"],
                tasks[i]["total_predictions"],
                tasks[i]["is_labeled"],
            )
            for i in ids
        ] == [(2, 0, 0, True), (0, 1, 1, False), (0, 0, 2, False)]
        counters = (await api.get(f"/api/projects/{project['id']}")).json()
        expected = {
            "task_number": 3,
            "total_annotations_number": 2,
            "total_predictions_number": 3,
            "num_tasks_with_annotations": 1,
        }
        # Predictions written behind the API's back are counted by the repair only.
        assert {key: counters[key] for key in expected} == {**expected, "total_predictions_number": 0}
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE project SET task_number = 0, total_predictions_number = 42")
        finally:
            await conn.close()
        async with async_sessionmaker(engine).begin() as session:
            await refresh_project_counters(session, project["id"])
        counters = (await api.get(f"/api/projects/{project['id']}")).json()
        assert {key: counters[key] for key in expected} == expected
    finally:
        await engine.dispose()


async def test_concurrent_refreshes_count_what_the_other_committed(
    api: httpx.AsyncClient, database_url: str
) -> None:
    """Two writers add an annotation to the same task; the second refresh waits for the first's lock and
    must then count both annotations, not only what its statement's snapshot held before waiting."""
    project = await create_project(api)
    (task_id,) = (await import_tasks(api, project["id"], [{"text": "x"}], return_task_ids=1))["task_ids"]
    insert = text("INSERT INTO annotation (task_id, project_id, result) VALUES (:task, :project, '[]')")
    values = {"task": task_id, "project": project["id"]}
    engine = make_engine(database_url, 3)
    maker = async_sessionmaker(engine)
    try:
        async with maker() as first, maker() as second:
            await first.execute(insert, values)
            await refresh_task_counters(first, [task_id])
            # The first refresh's task lock must not block inserts that reference the task (FK checks).
            await asyncio.wait_for(second.execute(insert, values), timeout=20)
            waiting = asyncio.create_task(refresh_task_counters(second, [task_id]))
            await wait_for_lock_wait(database_url, "the second refresh to wait for the first's lock")
            await first.commit()
            await waiting
            await second.commit()
    finally:
        await engine.dispose()
    task = (await api.get(f"/api/tasks/{task_id}")).json()
    assert task["total_annotations"] == 2
    assert (await api.get(f"/api/projects/{project['id']}")).json()["total_annotations_number"] == 2
