"""Small builders shared by the API tests: a text-classification project and its tasks."""

from __future__ import annotations

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
    """A valid result for LABEL_CONFIG."""
    return [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


async def create_project(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/projects", json={"title": "p", "label_config": LABEL_CONFIG, **fields})
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
