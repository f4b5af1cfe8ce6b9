"""Online learning seen from the editor: the scikit-learn example backend learns each submitted annotation
(delivered by webhook) and reports a new model version, which the label stream's side panel shows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from examples.sklearn_backend.app import create_app
from tests.console.conftest import shot
from tests.console.test_workflow import sign_in
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import choice, create_project, import_tasks
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("gateway_server", "worker")

SEEDS = [("I love it, great value", "Positive"), ("Broken on arrival, never again", "Negative")]
TEXTS = [
    "Great value, love the sound",
    "Never again, broken and slow",
    "Love it, best purchase this year",
    "Slow, noisy and broken after a week",
    "Great fit, love the colour",
    "Arrived late, the box was broken",
    "Comfortable and the battery lasts, great",
    "The left ear stopped working, never again",
    "Good bass, a bit heavy",
    "Okay sound, slow pairing",
]


@pytest.fixture
def sklearn_backend(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(create_app(tmp_path / "models")) as server:
        yield server


async def backend_version(api: httpx.AsyncClient, backend_id: int) -> str:
    version: str = (await api.get(f"/api/ml/{backend_id}")).json()["model_version"]
    return version


async def test_three_submits_reach_the_backend_and_the_editor_shows_its_new_version(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient, sklearn_backend: ServerThread
) -> None:
    # Each task the stream serves gets a prediction of the model's version at that moment (Label Studio's
    # "retrieve predictions when loading a task automatically"), so later tasks show the learned model.
    project = await create_project(
        api, SENTIMENT_CONFIG, title="Headphone reviews", evaluate_predictions_automatically=True
    )
    seeded = await import_tasks(
        api, project["id"], [{"text": text} for text, _ in SEEDS], return_task_ids=True
    )
    await import_tasks(api, project["id"], [{"text": text} for text in TEXTS])
    project_ref = f"sklearn-{project['id']}-v"
    await sign_in(page, api_server.url)

    # Connect the example backend on the Machine learning screen, and let uncertainty drive the stream.
    await page.goto(f"{api_server.url}/#/p/{project['id']}/ml")
    await page.get_by_role("button", name="Connect model").first.click()
    await page.get_by_label("Name").fill("Sentiment (sklearn)")
    await page.get_by_label("Backend URL").fill(sklearn_backend.url)
    await page.get_by_role("button", name="Validate and Save").click()
    await expect(page.get_by_test_id("backend-version")).to_have_text(f"{project_ref}0")
    await page.get_by_label(re.compile("Uncertainty")).check()
    await expect(page.get_by_text("Sampling: Uncertainty")).to_be_visible()
    (backend,) = (await api.get("/api/ml", params={"project": project["id"]})).json()
    backend_id = backend["id"]
    assert (await api.get(f"/api/projects/{project['id']}")).json()["sampling"] == "Uncertainty sampling"
    await page.get_by_role("link", name="Data manager").click()
    await expect(page.locator("tr[data-task]")).to_have_count(len(SEEDS) + len(TEXTS))

    # Before any label the model has nothing to say: the job card says why, instead of a bare "0 predicted".
    await page.get_by_label("Select all tasks").check()
    await page.get_by_role("button", name="Retrieve predictions").click()
    await expect(page.locator(".job .badge")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("job-hint")).to_contain_text("learned from a few annotations")
    await page.get_by_role("button", name=re.compile(r"Dismiss job")).click()

    # Two labels of two classes: the example model starts predicting once it has seen both.
    for task_id, (_, label) in zip(seeded["task_ids"], SEEDS, strict=True):
        answer = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice(label)})
        assert answer.status_code == 201, answer.text

    async def learned_both() -> bool:
        return await backend_version(api, backend_id) == f"{project_ref}2"

    await wait_for(learned_both, 30, "the backend to learn the two seed annotations (version v2)")
    # Retrieve predictions from the data manager, then sort by score: the README's data manager screenshot.
    await page.get_by_label("Select all tasks").check()
    await page.get_by_role("button", name="Retrieve predictions").click()
    await expect(page.get_by_test_id("job-percent")).to_have_text("100%", timeout=30_000)
    await expect(page.locator(".job .badge")).to_have_text("completed")
    await expect(page.locator("tr[data-task] .pill.info")).to_have_count(len(SEEDS) + len(TEXTS))
    await page.get_by_label("Select all tasks").uncheck()
    await page.get_by_role("button", name="Score").click()
    await expect(page.get_by_test_id("score").first).not_to_have_text("—")
    await expect(page.locator(".toast")).to_have_count(0)  # notices fade; the screenshot is the README's
    await shot(page, "19-data-manager-learning")
    least_certain = await page.get_by_test_id("score").first.inner_text()

    # The stream follows /next: with uncertainty sampling the first task is one the model is least sure of.
    await page.get_by_role("link", name="Label", exact=True).click()
    await expect(page.locator(".task-info")).to_contain_text(f"score {least_certain}")
    live_version = page.get_by_test_id("live-version")
    await expect(live_version).to_have_text(f"version {project_ref}2")
    for n in range(3):
        shown_version = (
            f"pre-annotation: {project_ref}2"
            if n == 0
            else re.compile(rf"pre-annotation: {project_ref}[2-5]\b")
        )
        await expect(page.locator(".task-info")).to_contain_text(shown_version)
        await expect(page.locator("#label-studio[data-ready=true]")).to_have_count(1)
        await expect(page.locator("#label-studio input:checked")).to_have_count(1)
        if n == 0:
            await expect(page.locator(".toast")).to_have_count(0)
            await shot(page, "17-editor-learning-preannotation")
        labeled_task = await page.locator(".task-info strong").inner_text()
        await page.get_by_role("button", name="Submit").click()
        await expect(page.get_by_text(f"{n + 1} labeled in this session")).to_be_visible()
        await expect(page.locator(".task-info strong")).not_to_have_text(labeled_task)

    # Each learned annotation is one online step, one version: v2 + 3 submits = v5, in the API and on screen.
    async def learned_three() -> bool:
        return await backend_version(api, backend_id) == f"{project_ref}5"

    await wait_for(learned_three, 30, "the backend to learn the three submitted annotations (version v5)")
    await expect(live_version).to_have_text(f"version {project_ref}5", timeout=30_000)
    await expect(page.get_by_text("new version after your annotations")).to_be_visible()
    # The task served after the submits is pre-annotated by a model that learned from them.
    await expect(page.locator(".task-info")).to_contain_text(
        re.compile(rf"pre-annotation: {project_ref}[3-5]\b")
    )
    await shot(page, "18-editor-new-version")

    # Skip from the keyboard: a cancelled annotation, and the stream moves on.
    await expect(page.locator("#label-studio[data-ready=true]")).to_have_count(1)
    skipped_task = int((await page.locator(".task-info strong").inner_text()).removeprefix("Task "))
    await page.keyboard.press("Control+Space")
    await expect(page.get_by_text(f"Task {skipped_task} skipped")).to_be_visible()
    await expect(page.locator(".task-info strong")).not_to_have_text(f"Task {skipped_task}")
    skipped = (await api.get(f"/api/tasks/{skipped_task}")).json()
    assert [a["was_cancelled"] for a in skipped["annotations"]] == [True]
