"""What an import leaves behind once answered: no memory that only the cyclic garbage collector frees.

The services collect reference cycles rarely (``shared.runtime.tune_garbage_collector``), so a cycle an
import leaves holding its rows stays in memory for hundreds of imports: each one's body added to the
API's RSS until the next full collection. Here the collector is held off during the import, then run
once; the memory that run freed (``tracemalloc``) is what the import had left to it.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support.builders import choice, create_project, import_tasks

_ROWS = 2000
_PADDING = "x" * 1000
"""~1 KB per row: the body is ~2 MB, two of the import's ~1 MB batches."""


@pytest.fixture
def collector_held_off() -> Iterator[None]:
    """No automatic collection while the test runs (the import turns the collector on again, so a
    threshold no allocation count reaches, rather than ``gc.disable``); memory allocations traced."""
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
