"""``GET /api/projects/{id}/next`` over real HTTP: each sampling mode, reservations and concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.learning.conftest import NewAnnotator
from tests.support.builders import choice, create_project, import_tasks


async def _next(client: httpx.AsyncClient, project_id: int) -> httpx.Response:
    return await client.get(f"/api/projects/{project_id}/next")


async def _tasks(api: httpx.AsyncClient, project_id: int, items: list[Any]) -> list[int]:
    body = await import_tasks(api, project_id, items, return_task_ids="true")
    ids: list[int] = body["task_ids"]
    return ids


async def _annotate(client: httpx.AsyncClient, task_id: int, **fields: Any) -> None:
    body = {"result": choice("positive"), **fields}
    response = await client.post(f"/api/tasks/{task_id}/annotations", json=body)
    assert response.status_code == 201, response.text


async def test_sequential_serves_lowest_free_task_then_no_more(
    api: httpx.AsyncClient, new_annotator: NewAnnotator
) -> None:
    project = await create_project(api)
    ids = await _tasks(api, project["id"], [{"text": f"t{i}"} for i in range(3)])
    await _annotate(api, ids[0])

    first = await _next(api, project["id"])
    assert first.status_code == 200, first.text
    task = first.json()
    assert task["id"] == ids[1]
    assert task["data"] == {"text": "t1"}
    assert task["project"] == project["id"]
    assert task["annotations"] == [] and task["predictions"] == []
    # asking again releases the caller's own reservation, so the same task comes back
    assert (await _next(api, project["id"])).json()["id"] == ids[1]

    other = await new_annotator()
    assert (await _next(other, project["id"])).json()["id"] == ids[2]  # ids[1] is reserved
    await _annotate(other, ids[2])
    empty = await _next(other, project["id"])
    assert empty.status_code == 404
    assert empty.json() == {"detail": "No more tasks"}
    assert (await api.get(f"/api/projects/{project['id']}/next/")).json()["id"] == ids[1]
    await _annotate(api, ids[1])
    assert (await _next(api, project["id"])).status_code == 404


async def test_skipped_task_does_not_come_back_to_the_same_annotator(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    ids = await _tasks(api, project["id"], [{"text": "a"}, {"text": "b"}])
    assert (await _next(api, project["id"])).json()["id"] == ids[0]
    await _annotate(api, ids[0], result=[], was_cancelled=True)
    assert (await _next(api, project["id"])).json()["id"] == ids[1]


async def test_annotating_releases_the_reservation_for_others(
    api: httpx.AsyncClient, new_annotator: NewAnnotator
) -> None:
    project = await create_project(api)
    ids = await _tasks(api, project["id"], [{"text": "a"}, {"text": "b"}])
    assert (await _next(api, project["id"])).json()["id"] == ids[0]
    await _annotate(api, ids[0], result=[], was_cancelled=True)  # skipped: still unlabeled
    assert (await _next(await new_annotator(), project["id"])).json()["id"] == ids[0]


async def test_unknown_project_is_404(api: httpx.AsyncClient) -> None:
    response = await _next(api, 999_999)
    assert response.status_code == 404
    assert "999999" in response.json()["detail"]


async def test_uncertainty_serves_lowest_score_of_selected_version_first(
    api: httpx.AsyncClient, new_annotator: NewAnnotator
) -> None:
    project = await create_project(api, sampling="Uncertainty sampling", model_version="v2")

    def task(text: str, predictions: list[tuple[float, str]]) -> dict[str, Any]:
        return {
            "data": {"text": text},
            "predictions": [
                {"result": choice("positive"), "score": score, "model_version": version}
                for score, version in predictions
            ],
        }

    ids = await _tasks(
        api,
        project["id"],
        [
            task("none", []),
            task("confident", [(0.9, "v2")]),
            task("unsure", [(0.2, "v2"), (0.95, "v1")]),
            task("other version only", [(0.01, "v1")]),
            task("middle", [(0.5, "v2")]),
        ],
    )
    served = []
    for _ in ids:
        # a new annotator each time: the earlier ones keep their reservations
        response = await _next(await new_annotator(), project["id"])
        assert response.status_code == 200, response.text
        served.append(response.json())
    assert [t["id"] for t in served] == [ids[2], ids[4], ids[1], ids[0], ids[3]]
    # annotators see the selected version's predictions only
    assert [(p["model_version"], p["score"]) for p in served[0]["predictions"]] == [("v2", 0.2)]
    assert (await _next(await new_annotator(), project["id"])).status_code == 404


async def test_uniform_serves_every_free_task_exactly_once(
    api: httpx.AsyncClient, new_annotator: NewAnnotator
) -> None:
    project = await create_project(api, sampling="Uniform sampling")
    ids = await _tasks(api, project["id"], [{"text": f"t{i}"} for i in range(12)])
    await _annotate(api, ids[5])
    served = [(await _next(await new_annotator(), project["id"])).json()["id"] for _ in range(len(ids) - 1)]
    assert sorted(served) == sorted(set(ids) - {ids[5]})
    assert (await _next(await new_annotator(), project["id"])).status_code == 404


async def test_uniform_is_not_sequential(api: httpx.AsyncClient) -> None:
    project = await create_project(api, sampling="Uniform sampling")
    ids = await _tasks(api, project["id"], [{"text": f"t{i}"} for i in range(50)])
    # the same annotator asking again gets a fresh random pick each time
    firsts = {(await _next(api, project["id"])).json()["id"] for _ in range(20)}
    assert len(firsts) > 1
    assert firsts <= set(ids)


async def test_concurrent_annotators_get_distinct_tasks(
    api: httpx.AsyncClient, new_annotator: NewAnnotator
) -> None:
    project = await create_project(api)
    ids = await _tasks(api, project["id"], [{"text": f"t{i}"} for i in range(8)])
    annotators = [await new_annotator() for _ in range(10)]
    responses = await asyncio.gather(*(_next(client, project["id"]) for client in annotators))
    served = [r.json()["id"] for r in responses if r.status_code == 200]
    assert sorted(served) == ids
    assert [r.status_code for r in responses].count(404) == 2
