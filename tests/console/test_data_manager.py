"""The data manager's score sort in the browser: keyset pages (score and id) while scrolling, in the API's
order, ties and tasks without a score included."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.console.conftest import shot
from tests.console.test_workflow import sign_in
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.support.builders import choice, connect_backend, create_project, import_tasks, import_texts
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for

TASKS = 130  # more than two of the console's 50-task pages
PAGE = 50


def score_of(index: int) -> float | None:
    """Few distinct scores, so ties straddle page boundaries; every seventh task has none."""
    return None if index % 7 == 0 else (index % 4) / 4


async def test_scrolling_the_score_sort_pages_by_score_and_id(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient
) -> None:
    project = await create_project(api, title="Scored")
    tasks: list[dict[str, Any]] = []
    for index in range(TASKS):
        score = score_of(index)
        predictions = [] if score is None else [{"result": choice("positive"), "score": score}]
        tasks.append({"data": {"text": f"review {index}"}, "predictions": predictions})
    ids = (await import_tasks(api, project["id"], tasks, return_task_ids=True))["task_ids"]
    scored = sorted(
        (score, task_id)
        for task_id, score in zip(ids, map(score_of, range(TASKS)), strict=True)
        if score is not None
    )
    unscored = [task_id for index, task_id in enumerate(ids) if score_of(index) is None]
    expected = {
        "prediction_score": [task_id for _, task_id in scored] + unscored,
        "-prediction_score": [task_id for _, task_id in reversed(scored)] + unscored,
    }

    await sign_in(page, api_server.url)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/tasks?" in r.url else None)
    await page.goto(f"{api_server.url}/#/p/{project['id']}?ordering=prediction_score")
    rows = page.locator("tr[data-task]")
    for ordering in ("prediction_score", "-prediction_score"):
        shown: list[int] = []

        async def all_rows_in_order() -> bool:
            nonlocal shown
            await page.locator(".more").scroll_into_view_if_needed()
            shown = [int(i) for i in await rows.evaluate_all("rs => rs.map(r => r.dataset.task)")]
            return len(shown) == TASKS

        await wait_for(all_rows_in_order, 60, f"all {TASKS} rows after scrolling ({ordering})")
        assert shown == expected[ordering]
        await expect(page.locator(".more")).to_have_text(f"All {TASKS} tasks shown")
        if ordering == "prediction_score":
            await page.locator("tr[data-task]").first.scroll_into_view_if_needed()
            await shot(page, "16-data-manager-scored")
            await page.get_by_role("button", name="Score").click()
    assert not [url for url in requests if "page=" in url], "score pages go by keyset, never page="
    assert any("after=0.5%2C" in url or "after=null%2C" in url for url in requests), requests


async def test_pages_keep_loading_while_the_end_of_the_list_stays_in_view(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient
) -> None:
    """On a screen taller than a page of rows, the end of the list is still in view when the first page
    arrives: the next one loads without any scrolling (the observer reports only changes, so loading used to
    stop there until the user scrolled away and back)."""
    project = await create_project(api, title="Tall")
    await import_texts(api, project["id"], TASKS)
    await page.set_viewport_size({"width": 1280, "height": 4000})
    await sign_in(page, api_server.url)
    await page.goto(f"{api_server.url}/#/p/{project['id']}")
    rows = page.locator("tr[data-task]")

    async def second_page_shown() -> bool:
        return await rows.count() > PAGE

    await wait_for(second_page_shown, 30, "a second page of rows without scrolling")
    assert await page.evaluate("window.scrollY") == 0


@pytest.mark.usefixtures("gateway_server", "worker")
async def test_a_running_job_can_be_cancelled_and_its_card_survives_a_reload(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG, title="Held")
    await import_texts(api, project["id"], 40)
    await connect_backend(api, project["id"], fake.url, batch_size=5)
    gate = threading.Event()
    fake.configure(predict_gate=gate, ungated_predicts=0)  # the backend holds every call: the job runs on
    try:
        await sign_in(page, api_server.url)
        await page.goto(f"{api_server.url}/#/p/{project['id']}")
        await page.get_by_label("Select all tasks").check()
        await page.get_by_role("button", name="Retrieve predictions").click()
        card = page.locator(".job")
        await expect(card.locator(".badge")).to_have_text("running")
        await fake.wait_for_calls("/predict", 1, timeout_s=30)
        await page.reload()  # rebuilt from GET /api/jobs
        await expect(card.locator(".badge")).to_have_text("running")
        await shot(page, "21-job-running")
        await card.get_by_role("button", name="Cancel").click()
        await expect(card.locator(".badge")).to_have_text("cancelled")
        job_id = int((await card.get_attribute("data-job")) or 0)
        assert (await api.get(f"/api/jobs/{job_id}")).json()["status"] == "cancelled"
        await page.reload()
        await expect(card.locator(".badge")).to_have_text("cancelled")
    finally:
        gate.set()
