"""The ``labelloop`` console script run as a real process against the real stack.

``cli`` runs the installed script (the venv's ``bin/labelloop``, as ``pip install`` put it there) with a
clean environment pointing at the test's API, and returns its exit code, stdout and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.bulk.conftest import api_settings, project, start_worker  # noqa: F401 (fixtures reused)
from tests.conftest import TEST_API_TOKEN
from tests.support.servers import ServerThread

SCRIPT = Path(sys.executable).with_name("labelloop")


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return orjson.loads(self.stdout)


Cli = Callable[..., Outcome]


def run_script(*args: str, env: dict[str, str], cwd: Path | None = None) -> Outcome:
    done = subprocess.run([str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=90)
    return Outcome(done.returncode, done.stdout, done.stderr)


def base_env(tmp_path: Path) -> dict[str, str]:
    """No inherited LABELLOOP_* variables, and a config path that does not exist unless a test writes it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LABELLOOP_")}
    env["LABELLOOP_CONFIG"] = str(tmp_path / "labelloop.toml")
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def cli(api_server: ServerThread, tmp_path: Path) -> Cli:
    """``cli("jobs", "--json")``: the script with ``--url``/``--token`` of the test's API."""
    env = base_env(tmp_path)

    def run(*args: str, token: str = TEST_API_TOKEN) -> Outcome:
        return run_script("--url", api_server.url, "--token", token, *args, env=env, cwd=tmp_path)

    return run
