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
    the workers each ~5–10 µs less per task (bench/README). Only reference cycles wait longer to be freed,
    and the threshold counts objects, not bytes: see ``CycleCollectionBudget`` for cycles holding bodies.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 20, 100)


BODY_BYTES_PER_COLLECTION = 64 * 1024 * 1024
"""Request body bytes a process takes in between two collections forced by ``CycleCollectionBudget``."""


class CycleCollectionBudget:
    """Run a full collection once ``budget_bytes`` of request bodies came in since the last one.

    A request that fails while its body is held (invalid JSON, a label config that does not parse) leaves
    a few dozen objects in reference cycles (the exception, its traceback, the frames) that hold the body
    and what was decoded from it. With the young generation collected only every 50,000 objects
    (``tune_garbage_collector``), thousands of such requests could pass before a collection: a client
    repeating a 4 MB bad body grew the API by ~8 MB a request, unbounded. Counting bytes bounds what cycles
    can hold to about the budget; one collection costs milliseconds (startup's objects are frozen), spent
    once per 64 MB of bodies.
    """

    def __init__(self, budget_bytes: int = BODY_BYTES_PER_COLLECTION) -> None:
        self.budget_bytes = budget_bytes
        self._received = 0

    def spend(self, received: int) -> None:
        """Count a request's body bytes, once it is answered; collect when the budget is spent."""
        self._received += received
        if self._received >= self.budget_bytes:
            self._received = 0
            gc.collect()
