"""``make run`` and ``devstack.exec`` on one data folder: they share the servers instead of colliding, and
the supervisor stops, saying why, when Postgres dies under it; only its internal API runs the background
loops. Real processes and real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from devstack.embedded import EmbeddedStack, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**env, "LABELLOOP_DATA_DIR": str(data_dir), "LABELLOOP_LOG_LEVEL": "WARNING", **extra}


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """The embedded servers of ``tmp_path``, as ``make run`` would own them."""
    stack = EmbeddedStack(tmp_path / "services", durable=False)
    stack.start({})
    yield stack
    stack.stop()


async def _select_one(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


def test_exec_attaches_to_the_running_stack_and_a_second_run_refuses(
    tmp_path: Path, running_stack: EmbeddedStack
) -> None:
    assert running_stack.postgres is not None and running_stack.redis is not None
    printed = subprocess.run(
        [sys.executable, "-m", "devstack.exec", "--", sys.executable, "-c"]
        + ["import os; print(os.environ['DATABASE_URL'], os.environ['REDIS_URL'])"],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert printed.stdout.split() == [running_stack.postgres.url, running_stack.redis.url]
    assert "running stack" in printed.stderr
    assert running_stack.dead_server() is None
    assert (tmp_path / "services" / "postgres" / "cluster" / "postmaster.pid").exists()
    assert asyncio.run(_select_one(running_stack.postgres.url)) == 1

    second = subprocess.run(
        [sys.executable, "-m", "devstack.run"],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "already runs the servers" in second.stderr
    assert running_stack.dead_server() is None


def test_run_keeps_the_loops_off_the_users_api_and_stops_when_postgres_dies(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        LABELLOOP_API_PORT=str(free_port()),
        LABELLOOP_INTERNAL_API_PORT=str(free_port()),
        LABELLOOP_GATEWAY_PORT=str(free_port()),
        LABELLOOP_EXAMPLE_BACKEND_PORT=str(free_port()),
        LABELLOOP_NER_BACKEND_PORT=str(free_port()),
        LABELLOOP_WORKER_PROBE_PORT=str(free_port()),
        LABELLOOP_EXAMPLE_BACKEND="examples.simple_backend",
    )
    errors = tmp_path / "run.stderr"
    with errors.open("w") as stderr:  # the child keeps its own copy
        run = subprocess.Popen(
            [sys.executable, "-m", "devstack.run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line)
            if "labelloop is running" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(timeout=90), "".join(lines) + errors.read_text()[-3000:]
        loops = {
            name: httpx.get(f"http://127.0.0.1:{env[name]}/ready").json()["background_loops"]
            for name in ("LABELLOOP_API_PORT", "LABELLOOP_INTERNAL_API_PORT")
        }
        assert loops == {"LABELLOOP_API_PORT": False, "LABELLOOP_INTERNAL_API_PORT": True}, (
            "users' API: no loops"
        )
        pid_file = tmp_path / "services" / "postgres" / "cluster" / "postmaster.pid"
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        assert run.wait(timeout=60) == 1
        reader.join(timeout=10)
        assert any("postgres exited" in line and "stopping" in line for line in lines), "".join(lines)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=30)
        reader.join(timeout=10)
        if run.stdout is not None:
            run.stdout.close()
