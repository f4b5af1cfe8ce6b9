"""Interactive pre-annotation in the browser: label one span, the NER example backend proposes the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from examples.ner_backend.app import create_app
from tests.conftest import TEST_API_TOKEN
from tests.console.conftest import shot
from tests.support.servers import ServerThread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("gateway_server")

NER_CONFIG = """<View>
  <Labels name="label" toName="text">
    <Label value="PER" background="#f97316"/>
    <Label value="LOC" background="#10b981"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""
TEXT = "Ada Lovelace met Charles Babbage in London. Later Ada wrote to Babbage from Paris."


@pytest.fixture
def ner_backend(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(create_app(tmp_path / "ner")) as server:
        yield server


async def test_a_labeled_span_brings_suggestions_for_its_other_occurrences(
    page: Page, api_server: ServerThread, api: httpx.AsyncClient, ner_backend: ServerThread
) -> None:
    project = (await api.post("/api/projects", json={"title": "People", "label_config": NER_CONFIG})).json()
    imported = await api.post(
        f"/api/projects/{project['id']}/import", json=[{"text": TEXT}], params={"return_task_ids": True}
    )
    task_id = imported.json()["task_ids"][0]
    backend = await api.post(
        "/api/ml",
        json={"project": project["id"], "url": ner_backend.url, "title": "Entities", "is_interactive": True},
    )
    assert backend.status_code == 201, backend.text

    await page.goto(api_server.url)
    await page.evaluate("token => localStorage.setItem('labelloop.token', token)", TEST_API_TOKEN)
    await page.goto(f"{api_server.url}/#/p/{project['id']}/task/{task_id}")
    await expect(page.locator("#label-studio[data-ready=true]")).to_have_count(1)
    await expect(page.get_by_label("Auto-accept suggestions")).to_be_visible()

    # Pick PER, then select the first "Babbage": the second one comes back as a suggestion.
    await page.locator("#label-studio").get_by_text("PER", exact=True).first.click()
    box = await page.evaluate(
        """() => {
          const root = document.querySelector('#label-studio .lsf-richtext__container') || document.querySelector('#label-studio');
          const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
          for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const at = node.textContent.indexOf('Babbage');
            if (at >= 0) {
              const range = document.createRange();
              range.setStart(node, at); range.setEnd(node, at + 'Babbage'.length);
              const r = range.getBoundingClientRect();
              return {x: r.left, y: r.top + r.height / 2, w: r.width};
            }
          }
          return null;
        }"""
    )
    assert box is not None
    await page.mouse.move(box["x"] + 1, box["y"])
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["w"] - 1, box["y"], steps=5)
    await page.mouse.up()
    await expect(page.get_by_test_id("suggestion-status")).to_have_text("1 suggestion(s)", timeout=15_000)

    async def two_regions() -> bool:
        count = await page.evaluate("window.labelloopEditor.store.annotationStore.selected.regions.length")
        return bool(count == 2)

    await wait_for(two_regions, what="the suggested second Babbage in the annotation")
    await shot(page, "13-interactive-suggestion")
    await page.get_by_role("button", name="Submit").click()

    async def saved() -> bool:
        annotations = (await api.get(f"/api/tasks/{task_id}/annotations")).json()
        return len(annotations) == 1

    await wait_for(saved, what="the annotation with the suggestion")
    spans = sorted(
        r["value"]["start"] for r in (await api.get(f"/api/tasks/{task_id}/annotations")).json()[0]["result"]
    )
    assert [TEXT[s : s + 7] for s in spans] == ["Babbage", "Babbage"]
