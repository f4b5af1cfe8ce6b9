"""Process-wide runtime settings every labelloop service applies once at startup."""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 50_000
"""Container allocations between two young-generation collections (Python's default: 700)."""


def tune_garbage_collector() -> None:
    """Collect the young generation every 50,000 allocations instead of 700, and keep what startup built
    (modules, the app, settings) out of every later collection.

    A chunk report or a page of tasks allocates tens of thousands of short-lived containers (pydantic models,
    ORM rows, decoded JSON) that reference counting frees anyway; with the default threshold the collector
    ran dozens of times per request, scanning them. `make bench-bulk`, 100k tasks: the `/internal` API and
    the workers each ~5–10 µs less per task (bench/README). Only reference cycles wait longer to be freed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 20, 100)
