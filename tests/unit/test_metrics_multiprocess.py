"""``PROMETHEUS_MULTIPROC_DIR``: a service run as several processes answers ``/metrics`` for all of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

COUNT = "from shared.metrics import TASKS_PREDICTED; TASKS_PREDICTED.labels('7').inc(3)"
SCRAPE = (
    "import asyncio; from shared.metrics import metrics_response; "
    "print(asyncio.run(metrics_response())[0].decode())"
)


def run(code: str, multiproc_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_counts_of_every_process_are_summed(tmp_path: Path) -> None:
    run(COUNT, tmp_path)
    run(COUNT, tmp_path)
    exposition = run(SCRAPE, tmp_path)
    assert 'labelloop_tasks_predicted_total{backend="7"} 6.0' in exposition
