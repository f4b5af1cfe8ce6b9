"""Builders the suites share: a text-classification project, its tasks, a connected ML backend, and the
chunk reports a gateway worker posts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

LABEL_CONFIG = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="positive"/>
    <Choice value="negative"/>
  </Choices>
</View>
"""


def choice(label: str) -> list[dict[str, Any]]:
    """A result choosing ``label`` in the ``sentiment`` Choices of LABEL_CONFIG or SENTIMENT_CONFIG."""
    return [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def chunk_report(predictions: Iterable[tuple[int, str, float | None, str]], **fields: Any) -> dict[str, Any]:
    """A ``ChunkReport`` body (``fields``: errors, model_version, sent) with these predictions, each
    ``(task id, result as JSON text, score, model version)``, in the wire's columns."""
    rows = list(predictions)
    columns = {
        "task_ids": [row[0] for row in rows],
        "results": [row[1] for row in rows],
        "scores": [row[2] for row in rows],
        "model_versions": [row[3] for row in rows],
    }
    return {"predictions": columns, **fields}


async def create_project(
    api: httpx.AsyncClient, label_config: str = LABEL_CONFIG, **fields: Any
) -> dict[str, Any]:
    response = await api.post("/api/projects", json={"title": "p", "label_config": label_config, **fields})
    assert response.status_code == 201, response.text
    project: dict[str, Any] = response.json()
    return project


async def import_tasks(
    api: httpx.AsyncClient, project_id: int, tasks: list[Any], **params: Any
) -> dict[str, Any]:
    response = await api.post(f"/api/projects/{project_id}/import", json=tasks, params=params)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def project_with_tasks(
    api: httpx.AsyncClient, count: int, **fields: Any
) -> tuple[dict[str, Any], list[int]]:
    """A LABEL_CONFIG project with ``count`` text tasks ``t0``, ``t1``, …; the project and the task ids."""
    project = await create_project(api, **fields)
    body = await import_tasks(
        api, project["id"], [{"text": f"t{i}"} for i in range(count)], return_task_ids=True
    )
    return project, body["task_ids"]


async def read_project(api: httpx.AsyncClient, project_id: int) -> dict[str, Any]:
    """The project as the API shows it now (its counters, its model version)."""
    body: dict[str, Any] = (await api.get(f"/api/projects/{project_id}")).json()
    return body


async def import_texts(api: httpx.AsyncClient, project_id: int, count: int) -> list[int]:
    """``count`` text tasks, alternately "good" and "bad"; their ids in import order."""
    tasks = [{"text": f"task {i} is {'good' if i % 2 else 'bad'}"} for i in range(count)]
    ids: list[int] = (await import_tasks(api, project_id, tasks, return_task_ids="true"))["task_ids"]
    return ids


async def connect_backend(api: httpx.AsyncClient, project_id: int, url: str, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/ml", json={"url": url, "project": project_id, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
