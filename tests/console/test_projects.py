"""Projects in the browser: a template, CSV pasted in, edit, delete with confirmation, sign out."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Page, expect

from tests.console.conftest import shot
from tests.console.test_workflow import sign_in
from tests.support.servers import ServerThread


async def test_template_paste_csv_edit_delete_and_sign_out(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient
) -> None:
    await sign_in(page, api_server.url)
    await page.get_by_role("link", name="Create project").first.click()
    await page.get_by_label("Project name").fill("Entities")
    await page.get_by_text("Named entities").click()
    await expect(page.get_by_label("Label config (XML)")).to_have_value(
        re.compile(r'<Labels name="label" toName="text">')
    )
    await expect(page.get_by_text("✓ Valid config")).to_be_visible()
    await page.get_by_role("button", name="Create project").click()

    await page.get_by_label("Or paste tasks").fill(
        'text,source\n"Ada met Babbage, in London",letters\nParis,atlas\n'
    )
    await page.get_by_role("button", name="Import").click()
    await expect(page.locator("tr[data-task]")).to_have_count(2)
    project_id = int(page.url.split("/p/")[1].split("/")[0].split("?")[0])
    tasks = (await api.get("/api/tasks", params={"project": project_id})).json()["tasks"]
    assert [t["data"] for t in tasks] == [
        {"text": "Ada met Babbage, in London", "source": "letters"},
        {"text": "Paris", "source": "atlas"},
    ]

    await page.get_by_role("link", name="Settings").click()
    await page.get_by_label("Project name").fill("People and places")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("heading", name="People and places")).to_be_visible()
    assert (await api.get(f"/api/projects/{project_id}")).json()["title"] == "People and places"

    await page.get_by_role("link", name="Settings").click()
    await page.get_by_role("button", name="Delete project").click()
    await shot(page, "15-delete-confirmation")
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert (await api.get(f"/api/projects/{project_id}")).status_code == 200
    await page.get_by_role("button", name="Delete project").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    assert (await api.get(f"/api/projects/{project_id}")).status_code == 404

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API token")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('labelloop.token')") is None
    await page.goto(f"{api_server.url}/#/projects")
    await expect(page.get_by_label("API token")).to_be_visible()
