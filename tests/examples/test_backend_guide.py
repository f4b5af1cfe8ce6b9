"""The backend in docs/writing-an-ml-backend.md, run as written, predicts through the real stack."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.embedded import free_port
from tests.support.builders import choice, connect_backend, create_project, import_tasks
from tests.support.servers import first_answer
from tests.support.waiting import wait_job
from tests.support.workers import RunBurst

REPO_ROOT = Path(__file__).resolve().parents[2]
GUIDE = REPO_ROOT / "docs" / "writing-an-ml-backend.md"


def guide_code() -> str:
    found = re.search(
        r"<!-- backend:start -->\n```python\n(.*?)```\n<!-- backend:end -->", GUIDE.read_text(), re.S
    )
    assert found, "the guide lost its backend code block"
    return found.group(1)


@pytest.fixture
def guide_backend(tmp_path: Path) -> Iterator[str]:
    """The guide's file served by uvicorn from a directory holding nothing else."""
    (tmp_path / "my_backend.py").write_text(guide_code())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "my_backend:app", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        first_answer(process, f"{url}/health")
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


def test_the_guide_needs_nothing_from_labelloop() -> None:
    imported = re.findall(r"^(?:from|import) (\w+)", guide_code(), re.MULTILINE)
    assert set(imported) <= {"typing", "xml", "fastapi"}, imported


@pytest.mark.usefixtures("gateway_server")
async def test_the_guide_backend_connects_and_predicts(
    api: httpx.AsyncClient, guide_backend: str, run_burst: RunBurst
) -> None:
    project = await create_project(api)
    await import_tasks(api, project["id"], [{"text": "a great film"}, {"text": "dull"}])
    backend = await connect_backend(api, project["id"], guide_backend)
    assert (backend["state"], backend["model_version"]) == ("CO", "keywords-1")
    started = await api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project["id"]}
    )
    await run_burst()
    job = await wait_job(api, started.json()["job_id"])
    assert (job["status"], job["predicted"], job["failed"]) == ("completed", 2, 0), job
    exported: list[dict[str, Any]] = (await api.get(f"/api/projects/{project['id']}/export")).json()
    assert [task["predictions"][0]["result"] for task in exported] == [choice("positive"), choice("negative")]
