"""The garbage-collector settings every service applies at startup (shared/runtime.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.runtime import YOUNG_GENERATION_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_young_collections_are_rarer_and_startup_objects_are_left_out() -> None:
    gc.unfreeze()
    built_at_startup = [[n] for n in range(3)]
    assert all(_collected_over(item) for item in built_at_startup)
    tune_garbage_collector()
    assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD > 700
    assert not any(_collected_over(item) for item in built_at_startup)
    assert gc.get_freeze_count() >= len(built_at_startup)


def _collected_over(item: object) -> bool:
    """Whether the collector's generations (not the frozen objects) hold ``item``."""
    return any(candidate is item for candidate in gc.get_objects())
