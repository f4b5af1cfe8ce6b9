"""A large file imported in the browser: sent in batches behind a progress bar; a bad row deep in the
file is named by its row number, with what was imported before it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from playwright.async_api import Page, Request, expect

from tests.console.conftest import shot
from tests.console.test_workflow import sign_in
from tests.support.builders import create_project
from tests.support.servers import ServerThread

ROWS = 5_000  # three of the console's 2,000-task batches


async def test_a_large_file_goes_in_batches_and_a_bad_row_is_named(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    project = await create_project(api, title="Big import")
    await sign_in(page, api_server.url)
    batches: list[Request] = []
    page.on("request", lambda r: batches.append(r) if r.url.endswith("/import") else None)
    await page.goto(f"{api_server.url}/#/p/{project['id']}/import")

    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": f"review {i}"}) + "\n" for i in range(ROWS)))
    await page.get_by_label("Files").set_input_files(str(big))
    await page.get_by_role("button", name="Import").click()
    await expect(page.get_by_text(f"Imported {ROWS:,} tasks")).to_be_visible()
    await expect(page.locator("tr[data-task]").first).to_be_visible()
    assert len(batches) == 3
    assert (await api.get(f"/api/projects/{project['id']}")).json()["task_number"] == ROWS

    # Row 4,501 lacks the config's data key: the API refuses that batch; the message names the file's row.
    bad = tmp_path / "bad.jsonl"
    rows = [{"text": f"more {i}"} for i in range(ROWS)]
    rows[4_500] = {"txt": "typo"}
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    await page.get_by_role("link", name="Import").click()
    await page.get_by_label("Files").set_input_files(str(bad))
    await page.get_by_role("button", name="Import").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("Row 4501: data: missing key")
    await expect(alert).to_contain_text("the first 4,000 tasks were imported")
    await expect(page.get_by_label("Import progress")).to_have_attribute("value", "80")
    await shot(page, "20-import-bad-row")
    assert (await api.get(f"/api/projects/{project['id']}")).json()["task_number"] == ROWS + 4_000
