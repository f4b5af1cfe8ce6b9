"""The scikit-learn example backend as a real HTTP server, its models in the test's directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.sklearn_backend.app import create_app
from tests.support.servers import ServerThread


@pytest.fixture
def sklearn_backend(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(create_app(tmp_path / "models")) as server:
        yield server
