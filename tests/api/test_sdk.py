"""The official label-studio-sdk (2.x, unmodified) driving our API through its own methods.

The SDK calls the slash form of every path, does not follow redirects, parses responses into its own
models and pages tasks until an empty page: each of those is exercised here. Project model versions
exist only on the SDK's bundled legacy client, so that one call goes through it.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from label_studio_sdk._legacy.client import Client as LegacyClient
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from tests.conftest import TEST_API_TOKEN
from tests.support.builders import LABEL_CONFIG, choice
from tests.support.servers import ServerThread


@pytest.fixture
def ls(api_server: ServerThread) -> LabelStudio:
    return LabelStudio(base_url=api_server.url, api_key=TEST_API_TOKEN)  # type: ignore[no-untyped-call]


def test_sdk_projects_tasks_predictions_and_actions(ls: LabelStudio, api_server: ServerThread) -> None:
    project = ls.projects.create(title="sdk", label_config=LABEL_CONFIG)
    assert project.id is not None
    updated = ls.projects.update(id=project.id, title="sdk renamed", description="via the SDK")
    assert (updated.title, updated.description) == ("sdk renamed", "via the SDK")
    assert ls.projects.get(id=project.id).title == "sdk renamed"

    imported = ls.projects.import_tasks(
        id=project.id, request=cast(Any, [{"text": f"t{i}"} for i in range(5)]), return_task_ids=True
    )
    assert imported.task_count == 5
    tasks: list[Any] = list(ls.tasks.list(project=project.id, page_size=2))
    assert [task.data["text"] for task in tasks] == [f"t{i}" for i in range(5)]
    task_ids = [task.id for task in tasks]
    assert all(isinstance(task_id, int) for task_id in task_ids)

    first = ls.predictions.create(
        task=task_ids[0], result=choice("positive"), score=0.9, model_version="sdk-v1"
    )
    assert (first.task, first.score, first.model_version) == (task_ids[0], 0.9, "sdk-v1")
    assert first.result == choice("positive")
    ls.predictions.create(task=task_ids[1], result=choice("negative"), model_version="sdk-v2")
    created = ls.projects.import_predictions(
        id=project.id,
        request=cast(
            Any,
            [
                {"task": task_id, "result": choice("positive"), "model_version": "sdk-v1"}
                for task_id in task_ids[2:]
            ],
        ),
    )
    assert created.created == 3
    listed = ls.predictions.list(project=project.id)
    assert len(listed) == 5
    assert [p.id for p in ls.predictions.list(task=task_ids[0])] == [first.id]
    assert ls.predictions.get(id=first.id).model_version == "sdk-v1"
    changed = ls.predictions.update(id=first.id, score=0.5)
    assert changed.score == 0.5

    legacy = LegacyClient(url=api_server.url, api_key=TEST_API_TOKEN, versions={"release": "labelloop"})
    legacy_project = legacy.get_project(project.id)  # type: ignore[no-untyped-call]
    assert legacy_project.get_model_versions() == {"sdk-v1": 4, "sdk-v2": 1}
    assert ls.projects.get(id=project.id).model_version == "sdk-v1"

    ls.predictions.delete(id=first.id)
    with pytest.raises(ApiError) as missing:
        ls.predictions.get(id=first.id)
    assert missing.value.status_code == 404

    actions = {action.id for action in ls.actions.list(project=project.id)}
    assert {"delete_tasks", "delete_tasks_predictions", "delete_tasks_annotations"} <= actions
    ls.actions.create(
        id="delete_tasks_predictions",
        project=project.id,
        selected_items={"all": False, "included": task_ids[1:3]},
    )
    remaining: list[Any] = ls.predictions.list(project=project.id)
    assert sorted(p.task for p in remaining) == task_ids[3:]
    ls.actions.create(
        id="delete_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []}
    )
    assert ls.predictions.list(project=project.id) == []
    assert legacy_project.get_model_versions() == {}

    annotation = ls.annotations.create(id=task_ids[0], result=choice("negative"), lead_time=1.0)
    assert annotation.result == choice("negative")
    assert [a.id for a in ls.annotations.list(id=task_ids[0])] == [annotation.id]
    assert ls.annotations.update(id=annotation.id, ground_truth=True).ground_truth is True
    ls.annotations.delete(id=annotation.id)
    assert ls.annotations.list(id=task_ids[0]) == []

    ls.actions.create(
        id="delete_tasks", project=project.id, selected_items={"all": False, "included": task_ids[:2]}
    )
    assert [task.id for task in cast(Any, ls.tasks.list(project=project.id))] == task_ids[2:]
    final = ls.projects.get(id=project.id)
    assert (final.task_number, final.total_predictions_number, final.total_annotations_number) == (3, 0, 0)
