"""What requests leave behind once answered for the cyclic garbage collector, which the services run
rarely (``shared.runtime.tune_garbage_collector``): a cycle holding a request's body stays in memory until
the next collection, so each such request adds its body to the API's RSS.

Here the automatic collector is held off, then run once; the memory that run frees (``tracemalloc``) is
what the requests had left to it.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from shared.runtime import BODY_BYTES_PER_COLLECTION
from tests.support.builders import choice, create_project, import_tasks

_ROWS = 2000
_PADDING = "x" * 1000
"""~1 KB per row: the body is ~2 MB, two of the import's ~1 MB batches."""


@pytest.fixture
def collector_held_off() -> Iterator[None]:
    """No automatic collection while the test runs (imports turn the collector on again, so a threshold
    no allocation count reaches, rather than ``gc.disable``); memory allocations traced."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(10**9)
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
        gc.set_threshold(*thresholds)


def freed_by_the_collector() -> int:
    """Bytes one collection frees: what only reference cycles kept alive."""
    before = tracemalloc.get_traced_memory()[0]
    gc.collect()
    return before - tracemalloc.get_traced_memory()[0]


@pytest.mark.parametrize("path", ["import", "import/predictions"])
@pytest.mark.usefixtures("collector_held_off")
async def test_an_import_leaves_no_reference_cycle_holding_its_rows(
    api: httpx.AsyncClient, path: str
) -> None:
    project = await create_project(api)
    if path == "import":
        items: list[dict[str, Any]] = [{"text": f"{i} {_PADDING}"} for i in range(_ROWS)]
    else:
        ids = (await import_tasks(api, project["id"], [{"text": "t"}] * 10, return_task_ids="true"))[
            "task_ids"
        ]
        region = {**choice("positive")[0], "meta": {"text": [_PADDING]}}
        items = [{"task": ids[i % 10], "result": [region]} for i in range(_ROWS)]
    body = orjson.dumps(items)  # held here: the client's own cycles around it do not free it
    response = await api.post(
        f"/api/projects/{project['id']}/{path}", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text

    assert freed_by_the_collector() < len(body) // 10  # ~3% with the fix; the whole body without


@pytest.mark.usefixtures("collector_held_off")
async def test_bad_bodies_leave_at_most_a_budget_of_garbage(api: httpx.AsyncClient) -> None:
    """A request failing with its body held (here: JSON cut short) leaves its body in reference cycles
    (exception, traceback, frames). The API collects them once ``BODY_BYTES_PER_COLLECTION`` of bodies
    came in, so twenty ~4 MB bad bodies (80 MB, each held twice: bytes and decoded text) leave at most
    what came after the last collection."""
    body = b'{"title": "' + b"x" * 4_000_000 + b'", "label_config": '
    for _ in range(20):
        response = await api.post("/api/projects", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text

    assert freed_by_the_collector() < BODY_BYTES_PER_COLLECTION  # 24 MB here; 160 MB without the budget
