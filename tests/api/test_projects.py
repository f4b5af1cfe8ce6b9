"""Projects over real HTTP: CRUD, paging, label-config validation and counters."""

from __future__ import annotations

import httpx

from tests.support.builders import LABEL_CONFIG, create_project, import_tasks

IMAGE_CONFIG = """
<View>
  <Image name="img" value="$image"/>
  <Choices name="c" toName="img"><Choice value="cat"/></Choices>
</View>
"""


async def test_create_returns_ls_fields_and_defaults(api: httpx.AsyncClient) -> None:
    project = await create_project(api, title="Sentiment", description="d")
    assert project["title"] == "Sentiment"
    assert project["label_config"] == LABEL_CONFIG
    assert project["model_version"] == ""
    assert project["sampling"] == "Sequential sampling"
    assert project["show_collab_predictions"] is True
    assert project["evaluate_predictions_automatically"] is False
    assert project["repredict_on_new_version"] is False
    for counter in (
        "task_number",
        "total_predictions_number",
        "total_annotations_number",
        "num_tasks_with_annotations",
    ):
        assert project[counter] == 0
    assert project["created_at"]
    assert project["created_by"]["email"] == "admin@labelloop.local"
    assert project["created_by"]["id"] >= 1
    fetched = await api.get(f"/api/projects/{project['id']}/")
    assert fetched.status_code == 200
    assert fetched.json() == project


async def test_invalid_label_config_names_tag_and_attribute(api: httpx.AsyncClient) -> None:
    bad = '<View><Text name="t" value="$text"/><Choices name="c"><Choice value="a"/></Choices></View>'
    response = await api.post("/api/projects/", json={"title": "x", "label_config": bad})
    assert response.status_code == 400
    body = response.json()
    assert body["tag"] == "Choices"
    assert body["attribute"] == "toName"
    assert "toName" in body["validation_errors"]["label_config"][0]
    assert (await api.get("/api/projects")).json()["count"] == 0


async def test_wrong_types_and_unknown_sampling_are_400_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/projects", json={"label_config": LABEL_CONFIG, "sampling": "Random"})
    assert response.status_code == 400
    assert "sampling" in response.json()["validation_errors"]
    response = await api.post("/api/projects", json={"label_config": LABEL_CONFIG, "title": ["x"]})
    assert response.status_code == 400
    assert "title" in response.json()["validation_errors"]


async def test_list_is_paginated(api: httpx.AsyncClient) -> None:
    for index in range(3):
        await create_project(api, title=f"p{index}")
    first = (await api.get("/api/projects", params={"page_size": 2})).json()
    assert first["count"] == 3
    assert len(first["results"]) == 2
    assert first["previous"] is None
    assert first["next"] is not None
    second = (await api.get(first["next"])).json()
    assert len(second["results"]) == 1
    assert second["next"] is None
    assert second["previous"] is not None
    assert {p["created_by"]["email"] for p in first["results"]} == {"admin@labelloop.local"}
    titles = {p["title"] for p in first["results"] + second["results"]}
    assert titles == {"p0", "p1", "p2"}


async def test_patch_is_partial_and_delete_removes(api: httpx.AsyncClient) -> None:
    project = await create_project(api, title="before", description="keep")
    patched = await api.patch(
        f"/api/projects/{project['id']}",
        json={"title": "after", "model_version": "", "sampling": "Uncertainty sampling"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["title"], body["description"], body["model_version"], body["sampling"]) == (
        "after",
        "keep",
        "",
        "Uncertainty sampling",
    )
    assert (await api.delete(f"/api/projects/{project['id']}/")).status_code == 204
    missing = await api.get(f"/api/projects/{project['id']}")
    assert missing.status_code == 404
    assert str(project["id"]) in missing.json()["detail"]
    assert (await api.delete(f"/api/projects/{project['id']}")).status_code == 404
    assert (await api.patch("/api/projects/999999", json={"title": "x"})).status_code == 404


async def test_label_config_change_must_keep_tasks_valid(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    await import_tasks(api, project["id"], [{"text": "hello"}])
    refused = await api.patch(f"/api/projects/{project['id']}", json={"label_config": IMAGE_CONFIG})
    assert refused.status_code == 400
    message = refused.json()["validation_errors"]["label_config"][0]
    assert '"image"' in message
    assert "<Image" in message
    assert (await api.get(f"/api/projects/{project['id']}")).json()["label_config"] == LABEL_CONFIG
    validate = await api.post(f"/api/projects/{project['id']}/validate", json={"label_config": IMAGE_CONFIG})
    assert validate.status_code == 400
    compatible = LABEL_CONFIG.replace('<Choice value="negative"/>', '<Choice value="neutral"/>')
    ok = await api.post(f"/api/projects/{project['id']}/validate/", json={"label_config": compatible})
    assert ok.status_code == 200
    patched = await api.patch(f"/api/projects/{project['id']}", json={"label_config": compatible})
    assert patched.status_code == 200
    assert patched.json()["label_config"] == compatible


async def test_validate_reports_broken_xml(api: httpx.AsyncClient) -> None:
    project = await create_project(api)
    response = await api.post(f"/api/projects/{project['id']}/validate", json={"label_config": "<View>"})
    assert response.status_code == 400
    assert "label_config" in response.json()["validation_errors"]
    missing = await api.post("/api/projects/424242/validate", json={"label_config": LABEL_CONFIG})
    assert missing.status_code == 404
