"""The README's "Using it" block, run verbatim by bash against the real stack, gives what it promises.

The block is read from README.md between the walkthrough markers; only the two documented addresses are
replaced by the test's ports. API, gateway and the example backend are real servers, the gateway worker a
real process, and ``labelloop`` the installed console script.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.bulk.conftest import StartWorker, start_worker  # noqa: F401 (fixture reused)
from tests.conftest import TEST_API_TOKEN
from tests.support.servers import ServerThread

REPO_ROOT = Path(__file__).resolve().parents[2]
STEP = re.compile(r"^# (.+)$(?:\n#.*$)*", re.MULTILINE)  # consecutive comment lines: one step


def readme_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", readme, re.S)
    assert found, "README.md lost its walkthrough block"
    return found.group(1)


def run_steps(script: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """Run the block in one bash; each ``# comment`` starts a step; the output of each step by comment."""
    marked = STEP.sub(lambda m: f"echo; echo {shlex.quote('@@step ' + m.group(1))}", script)
    done = subprocess.run(
        ["bash", "-c", marked], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps: dict[str, str] = {}
    for chunk in done.stdout.split("@@step ")[1:]:
        title, _, output = chunk.partition("\n")
        steps[title] = output.strip()
    assert list(steps) == STEP.findall(script)
    return steps


def answers(output: str) -> list[Any]:
    """The JSON documents a step printed (curl adds no newline, so one may precede other output)."""
    decoder = json.JSONDecoder()
    return [decoder.raw_decode(line)[0] for line in output.splitlines() if line.startswith(("{", "["))]


def test_the_readme_walkthrough_shows_predictions_auto_labels_and_versions(
    api_server: ServerThread,
    gateway_server: ServerThread,
    sklearn_backend: ServerThread,
    start_worker: StartWorker,  # noqa: F811
    tmp_path: Path,
) -> None:
    start_worker()
    script = readme_block()
    assert "http://127.0.0.1:8080" in script and "http://127.0.0.1:9090" in script
    script = script.replace("http://127.0.0.1:8080", api_server.url).replace(
        "http://127.0.0.1:9090", sklearn_backend.url
    )
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {key: value for key, value in os.environ.items() if not key.startswith("LABELLOOP_")}
    steps = run_steps(script, tmp_path, {**env, "TOKEN": TEST_API_TOKEN})

    train = next(output for title, output in steps.items() if title.startswith("train"))
    assert re.search(r"job 1 \(train\) completed: .*model sklearn-1-v\d+", train), train
    predicted = next(output for title, output in steps.items() if title.startswith("bulk pre-labeling"))
    job = answers(predicted)[-1]
    assert (job["status"], job["total"], job["predicted"], job["failed"]) == ("completed", 6, 6, 0), job
    assert "job 2 (predict) completed: 6 done (6 predicted)" in predicted

    auto = answers(next(output for title, output in steps.items() if title.startswith("auto-labeling")))[0]
    assert (auto["created"], auto["skipped"]) == (6, 0), "every task, as Label Studio's action does"
    versions = answers(next(output for title, output in steps.items() if title.startswith("which model")))[0]
    assert versions == {job["model_version"]: 6}, "the job names the version its predictions carry"
    refused = answers(
        next(output for title, output in steps.items() if title.startswith("showing a version"))
    )[0]
    assert "no-such-version" in refused["validation_errors"]["model_version"][0]
    exported = orjson.loads((tmp_path / "export.json").read_bytes())
    assert [len(task["annotations"]) for task in exported] == [2, 2, 1, 1, 1, 1]
    assert all(task["predictions"][0]["model_version"] == job["model_version"] for task in exported)
