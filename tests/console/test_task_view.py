"""The task view: a labeled task opens in the editor with its annotation, and *Update* changes it."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from tests.console.conftest import shot
from tests.console.test_workflow import sign_in
from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import choice, create_project, import_texts
from tests.support.servers import ServerThread


async def test_an_annotation_is_updated_from_the_task_view(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG, title="Updates")
    (task_id,) = await import_texts(api, project["id"], 1)
    created = await api.post(f"/api/tasks/{task_id}/annotations", json={"result": choice("Positive")})
    assert created.status_code == 201, created.text
    annotation_id = created.json()["id"]

    await sign_in(page, api_server.url)
    await page.goto(f"{api_server.url}/#/p/{project['id']}")
    await page.locator(f"tr[data-task='{task_id}'] a").first.click()
    await expect(page.locator("#label-studio[data-ready=true]")).to_have_count(1)
    await expect(page.locator(".task-info")).to_contain_text("1 annotation(s)")
    await expect(page.get_by_label("Positive")).to_be_checked()
    await page.get_by_label("Negative").check()
    # Named by its text (LSF 1.4 calls it "submit" for assistive tech; the console renames it).
    await page.get_by_role("button", name="Update", exact=True).click()
    await expect(page.get_by_text("Annotation updated")).to_be_visible()
    await shot(page, "22-task-view-updated")
    updated = (await api.get(f"/api/annotations/{annotation_id}")).json()
    assert updated["result"][0]["value"]["choices"] == ["Negative"]
    assert (await api.get(f"/api/tasks/{task_id}")).json()["total_annotations"] == 1
