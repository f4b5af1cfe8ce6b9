"""Export over real HTTP: every task, with annotations and predictions, as a streamed JSON download."""

from __future__ import annotations

import httpx
import orjson

from services.annotation_api.exports import service as export_service
from tests.support.builders import choice, create_project, import_tasks


async def test_export_streams_every_task_with_annotations_and_predictions(api: httpx.AsyncClient) -> None:
    """More tasks than one export batch, so the keyset walk has to continue across batches."""
    project = await create_project(api)
    tasks = [
        {
            "data": {"text": f"t{i}"},
            "meta": {"i": i},
            "annotations": [{"result": choice("positive")}] if i % 2 else [],
            "predictions": [{"result": choice("negative"), "score": i / 10, "model_version": "v1"}],
        }
        for i in range(2 * export_service.BATCH_SIZE + 5)
    ]
    ids = (await import_tasks(api, project["id"], tasks, return_task_ids=True))["task_ids"]
    other = await create_project(api)
    await import_tasks(api, other["id"], [{"text": "not exported"}])
    async with api.stream(
        "GET",
        f"/api/projects/{project['id']}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-disposition"].startswith("attachment;")
        assert f"project-{project['id']}" in response.headers["content-disposition"]
        assert "content-length" not in response.headers  # streamed, not buffered
        exported = orjson.loads(await response.aread())
    assert [task["id"] for task in exported] == ids
    for i, task in enumerate(exported):
        assert task["data"] == {"text": f"t{i}"}
        assert task["meta"] == {"i": i}
        assert [a["result"] for a in task["annotations"]] == ([choice("positive")] if i % 2 else [])
        assert [(p["score"], p["model_version"]) for p in task["predictions"]] == [(i / 10, "v1")]


async def test_export_of_empty_project_and_errors(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    response = await api.get(f"/api/projects/{project['id']}/export/")
    assert response.status_code == 200
    assert response.json() == []
    missing = await api.get("/api/projects/5555/export")
    assert missing.status_code == 404
    assert "5555" in missing.json()["detail"]
    unsupported = await api.get(f"/api/projects/{project['id']}/export", params={"exportType": "COCO"})
    assert unsupported.status_code == 400
    assert "exportType" in unsupported.json()["validation_errors"]
