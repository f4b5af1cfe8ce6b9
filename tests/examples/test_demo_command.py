"""``python -m examples.demo`` (what ``make demo`` runs) as a real process against the real stack: it
finds the services through the same port variables as ``make run``, says what it creates, and deletes its
projects unless ``--keep``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.bulk.conftest import REPO_ROOT, StartWorker, start_worker  # noqa: F401 (fixture reused)
from tests.conftest import TEST_API_TOKEN, Ports
from tests.support.servers import ServerThread

SMALL = ["--rounds", "1", "--per-round", "10", "--pool-size", "20", "--test-size", "10"]


def run_demo(ports: Ports, backend: ServerThread, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LABELLOOP_")}
    env |= {
        "LABELLOOP_API_PORT": str(ports.api),
        "LABELLOOP_EXAMPLE_BACKEND_PORT": str(backend.port),
        "LABELLOOP_API_TOKEN": TEST_API_TOKEN,
    }
    command = [sys.executable, "-m", "examples.demo", *SMALL, "--out", str(out), *extra]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(300)  # two demo processes, each loading scikit-learn and training
async def test_demo_uses_the_run_ports_says_what_it_creates_and_cleans_up(
    api: httpx.AsyncClient,
    ports: Ports,
    gateway_server: ServerThread,
    sklearn_backend: ServerThread,
    start_worker: StartWorker,  # noqa: F811
    tmp_path: Path,
) -> None:
    start_worker()
    done = run_demo(ports, sklearn_backend, tmp_path, "--strategies", "uncertainty")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"creating 1 projects on {ports.api_url} (20 tasks each); deleted at the end" in done.stdout
    assert "serving one in this process" not in done.stdout, "the backend on the configured port was used"
    deleted = re.findall(r"^project (\d+) deleted$", done.stdout, re.MULTILINE)
    assert len(deleted) == 1
    assert (await api.get("/api/projects")).json()["count"] == 0

    kept = run_demo(ports, sklearn_backend, tmp_path, "--strategies", "random", "--keep")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "they are kept (--keep)" in kept.stdout and "deleted" not in kept.stdout
    assert (await api.get("/api/projects")).json()["count"] == 1
