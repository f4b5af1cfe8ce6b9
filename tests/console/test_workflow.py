"""The seed's whole ML-assisted workflow, done in a real browser against the real stack."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.conftest import TEST_API_TOKEN
from tests.console.conftest import shot
from tests.fakes.fake_backend import FakeBackend
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("gateway_server", "worker")

TEXTS = [
    "I love this, great value",
    "Broken on arrival",
    "Best purchase this year",
    "Slow and noisy",
    "Nice and happy",
    "Never again",
]


async def sign_in(page: Page, url: str) -> None:
    await page.goto(url)
    await expect(page.get_by_label("API token")).to_be_visible()
    await page.get_by_label("API token").fill(TEST_API_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()


async def test_sign_in_create_import_predict_label_train(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient, fake: FakeBackend, tmp_path: Path
) -> None:
    fake.configure(model_version="fake-v1")
    await page.goto(api_server.url)
    await shot(page, "01-sign-in")
    await page.get_by_label("API token").fill("wrong-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not accepted")
    await sign_in(page, api_server.url)
    await shot(page, "02-projects-empty")

    await page.get_by_role("link", name="Create project").first.click()
    await page.get_by_label("Project name").fill("Reviews")
    await page.get_by_label("Label config (XML)").fill("<View><Choices name='x' toName='nothing'/></View>")
    await expect(page.locator("#config-error")).to_be_visible()
    await page.get_by_text("Text classification").click()
    await expect(page.get_by_text("✓ Valid config")).to_be_visible()
    await shot(page, "03-new-project")
    await page.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("heading", name="Import tasks")).to_be_visible()
    project_id = int(page.url.split("/p/")[1].split("/")[0])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken}\n')
    await page.get_by_label("Files").set_input_files(str(bad))
    await page.get_by_role("button", name="Import").click()
    await expect(page.get_by_role("alert")).to_contain_text("Row 2")
    good = tmp_path / "reviews.jsonl"
    good.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    await page.get_by_label("Files").set_input_files(str(good))
    await shot(page, "04-import")
    await page.get_by_role("button", name="Import").click()
    await expect(page.locator("tr[data-task]")).to_have_count(len(TEXTS))
    await shot(page, "05-data-manager")

    # Connect the model: a refused address first (the exact reason is shown), then the fake backend.
    await page.get_by_role("link", name="Machine learning").click()
    await page.get_by_role("button", name="Connect model").first.click()
    await page.get_by_label("Name").fill("Fake sentiment")
    await page.get_by_label("Backend URL").fill("http://127.0.0.1:9")
    await page.get_by_role("button", name="Validate and Save").click()
    await expect(page.get_by_test_id("backend-error")).to_contain_text("Refused")
    await shot(page, "06-ml-refused")
    await page.get_by_label("Backend URL").fill(fake.url)
    await page.get_by_role("button", name="Validate and Save").click()
    await expect(page.get_by_test_id("backend-version")).to_have_text("fake-v1")
    await shot(page, "07-ml-connected")

    # Retrieve predictions for every task and watch the job reach 100%.
    await page.get_by_role("link", name="Data manager").click()
    await page.get_by_label("Select all tasks").check()
    await page.get_by_role("button", name="Retrieve predictions").click()
    await expect(page.get_by_test_id("job-percent")).to_have_text("100%", timeout=30_000)
    await expect(page.locator(".job .badge")).to_have_text("completed")
    await shot(page, "08-job-done")
    await page.reload()
    await expect(page.get_by_test_id("job-percent")).to_have_text("100%")
    await expect(page.locator("tr[data-task] .pill.info")).to_have_count(len(TEXTS))

    # Sort by score: the less certain (negative, 0.6) tasks come first.
    await page.get_by_role("button", name="Score").click()
    tasks = (await api.get("/api/tasks", params={"project": project_id, "page_size": 100})).json()["tasks"]
    by_id = {t["id"]: t["data"]["text"] for t in tasks}
    negatives = {"Broken on arrival", "Slow and noisy", "Never again"}
    shown: list[str] = []

    async def least_certain_first() -> bool:
        nonlocal shown
        ids = await page.locator("tr[data-task]").evaluate_all("rows => rows.map(r => r.dataset.task)")
        shown = [by_id[int(i)] for i in ids]
        return len(shown) == len(TEXTS) and set(shown[:3]) == negatives

    await wait_for(least_certain_first, what=f"negative (0.6) tasks first, shown {shown}")
    assert "ordering=prediction_score" in page.url
    await expect(page.get_by_test_id("score").first).to_have_text("0.60")
    await shot(page, "09-sorted-by-score")

    # Label three tasks in the stream, the prediction shown as pre-annotation; submit by button and keyboard.
    await page.get_by_role("button", name="Label all tasks").click()
    for n in range(3):
        await expect(page.locator(".task-info")).to_contain_text("pre-annotation: fake-v1")
        await expect(page.locator("#label-studio[data-ready=true]")).to_have_count(1)
        labeled_task = await page.locator(".task-info strong").inner_text()
        predicted = page.locator("#label-studio input:checked")
        await expect(predicted).to_have_count(1)
        if n == 0:
            await shot(page, "10-editor-preannotation")
        if n == 1:
            await page.keyboard.press("Control+Enter")
        else:
            await page.get_by_role("button", name="Submit").click()
        await expect(page.get_by_text(f"{n + 1} labeled in this session")).to_be_visible()
        await expect(page.locator(".task-info strong")).not_to_have_text(labeled_task)
    await fake.wait_for_calls("/webhook", 3, timeout_s=30)
    created = [call.body["action"] for call in fake.calls("/webhook") if isinstance(call.body, dict)]
    assert created.count("ANNOTATION_CREATED") == 3, created

    counts: list[int] = []

    async def three_annotated() -> bool:
        nonlocal counts
        listed = await api.get("/api/tasks", params={"project": project_id, "page_size": 100})
        counts = [t["total_annotations"] for t in listed.json()["tasks"]]
        return sorted(counts) == [0, 0, 0, 1, 1, 1]

    try:
        await wait_for(three_annotated, what="three annotated tasks")
    except AssertionError:
        raise AssertionError(f"annotations per task: {counts}") from None

    # Start Training: the backend trains on them and reports a new version.
    fake.configure(version_after_train="fake-v2")
    await page.get_by_role("link", name="Machine learning").click()
    await page.get_by_role("button", name="Start Training").click()
    await expect(page.locator(".train-status .badge")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("backend-version")).to_have_text("fake-v2", timeout=30_000)
    await shot(page, "11-ml-trained")

    # The model page: versions over time; fake-v1's pre-annotations were accepted as they were.
    await page.get_by_role("link", name="Model page").click()
    await expect(
        page.get_by_role("img", name="Agreement of each model version with later annotations")
    ).to_be_visible()
    await expect(page.locator("tr[data-version='fake-v1']")).to_contain_text("100.0%")
    await shot(page, "12-model-page")

    # The version picker: pick fake-v1, then delete that version's predictions.
    await page.go_back()
    await page.get_by_label("Predictions shown to annotators").select_option("fake-v1")
    await expect(page.locator("tr[data-version='fake-v1']")).to_contain_text("shown")
    await shot(page, "13-ml-versions")
    await page.locator("tr[data-version='fake-v1']").get_by_role("button", name="Delete predictions").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(page.locator("tr[data-version='fake-v1']")).to_have_count(0)
    versions = (await api.get(f"/api/projects/{project_id}/model-versions")).json()
    assert "fake-v1" not in versions

    # The data manager's job panel: each job's card counts what its kind does. A training run shows its
    # status and version, no task counts; the prediction job its predicted tasks.
    await page.get_by_role("link", name="Data manager").click()
    training = page.locator(".job", has_text="Training")
    await expect(training.locator(".badge")).to_have_text("completed")
    await expect(training).not_to_contain_text("predicted")
    await expect(page.locator(".job", has_text="Retrieve predictions").first).to_contain_text(
        f"{len(TEXTS)} predicted"
    )
    await shot(page, "14-job-panel")
