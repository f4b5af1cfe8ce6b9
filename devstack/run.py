"""``make run``: the whole labelloop stack in the foreground on one machine.

Starts PostgreSQL and Redis (embedded unless ``DATABASE_URL`` / ``REDIS_URL`` are set), applies the
migrations, then runs the annotation API, the gateway API, a gateway worker and two example ML backends
(scikit-learn, and named entities for interactive pre-annotation) as child processes. The annotation API
runs twice: the one users reach, and a replica on its own port (``LABELLOOP_INTERNAL_API_PORT``, default
the API's + 1) that the gateway worker sends its ``/internal`` lease and report calls to and that alone
runs the background loops (job runner, sweeper, event delivery…; ``LABELLOOP_BACKGROUND_LOOPS``), so bulk
work never competes with users for one process's event loop and database pool (``bench/README.md``). Ctrl-C or SIGTERM
stops all of them (and the embedded servers) within seconds; if any child or embedded server dies, the
rest are stopped too, so a half-running stack never hides a failure. A second ``make run`` on the same
data folder refuses to start (``EmbeddedStack``'s lock).

A child exits only on a real failure: the API and the gateway worker ride out a Redis restart by
themselves (the worker pauses polling, the API's sweeper re-queues from Postgres), so stopping the stack
when one exits is what a developer wants, while production supervisors restart the process instead.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.embedded import EmbeddedStack, StackInUse

REPO_ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 7.0


@dataclass
class Child:
    name: str
    argv: list[str]
    ready_url: str | None
    env: dict[str, str] = field(default_factory=dict)
    """Variables this child gets on top of the stack's."""
    process: subprocess.Popen[bytes] | None = None


def _die_with_parent() -> None:
    """Linux: if this launcher is killed outright, its children get SIGTERM instead of living on."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _secret(data_dir: Path, env_name: str, file_name: str) -> str:
    """The value of ``env_name`` when set, else one generated on first run and kept in the data folder."""
    if os.environ.get(env_name):
        return os.environ[env_name]
    path = data_dir / file_name
    if not path.exists():
        path.write_text(secrets.token_hex(20))
        path.chmod(0o600)
    return path.read_text().strip()


def _port(env_name: str, default: int) -> int:
    return int(os.environ.get(env_name, default))


GATEWAY_UVICORN_ARGS = ("--loop", "uvloop", "--http", "services.model_gateway.http_protocol:HttpProtocol")
"""The gateway's event loop and HTTP parser, named rather than left to ``auto``: without the
``uvicorn[standard]`` extras ``auto`` quietly falls back to asyncio and h11, which costs the gateway
CPU on every interactive predict; named, a missing extra stops startup instead. The protocol is
uvicorn's httptools one with a cap on request heads (``services.model_gateway.http_protocol``).
compose.yaml and deploy/k8s/gateway.yaml pass the same flags."""

RUN_WORKER_MAX_JOBS = "6"
"""Chunks the stack's one gateway worker runs at once, unless ``LABELLOOP_WORKER_MAX_JOBS`` says otherwise:
as many as two workers of the default 3. With 3, one worker left a 1M-task job 0.31 of the backend's direct
rate, the cores partly idle between a chunk's calls; with 6, 0.35, its reports' p99 unchanged (bench/README)."""


def _uvicorn(factory: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1"] + [
        "--port",
        str(port),
        "--no-access-log",
        *extra,
    ]


_READY_TIMEOUT_S = 180.0
"""A first start imports scikit-learn in the example backend (over 20 s on a busy 2-core machine) while
the other children start too; a child that exits stops the wait at once, so a long limit costs nothing
when something is really broken."""


def _wait_ready(children: list[Child], timeout_s: float = _READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    pending = [child for child in children if child.ready_url]
    while pending:
        for child in list(pending):
            assert child.process is not None and child.ready_url is not None
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
            try:
                if httpx.get(child.ready_url, timeout=1).status_code == 200:
                    pending.remove(child)
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError("not ready in time: " + ", ".join(child.name for child in pending))
        time.sleep(0.2)


def _stop_children(children: list[Child]) -> None:
    running = [c for c in children if c.process is not None and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    data_dir = Path(os.environ.get("LABELLOOP_DATA_DIR", REPO_ROOT / ".data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)

    api_port = _port("LABELLOOP_API_PORT", 8080)
    internal_api_port = _port("LABELLOOP_INTERNAL_API_PORT", api_port + 1)
    gateway_port = _port("LABELLOOP_GATEWAY_PORT", 8090)
    backend_port = _port("LABELLOOP_EXAMPLE_BACKEND_PORT", 9090)
    ner_port = _port("LABELLOOP_NER_BACKEND_PORT", 9091)
    api_url = f"http://127.0.0.1:{api_port}"
    internal_api_url = f"http://127.0.0.1:{internal_api_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    backend_url = f"http://127.0.0.1:{backend_port}"
    ner_url = f"http://127.0.0.1:{ner_port}"
    backend_module = os.environ.get("LABELLOOP_EXAMPLE_BACKEND", "examples.sklearn_backend")

    stack = EmbeddedStack(data_dir / "services", durable=True)
    children: list[Child] = []
    try:
        env = dict(os.environ)
        env.update(stack.start(env))
        api_token = _secret(data_dir, "LABELLOOP_API_TOKEN", "api_token")
        env.update(
            LABELLOOP_API_TOKEN=api_token,
            LABELLOOP_SERVICE_TOKEN=_secret(data_dir, "LABELLOOP_SERVICE_TOKEN", "service_token"),
            LABELLOOP_SECRET_KEY=_secret(data_dir, "LABELLOOP_SECRET_KEY", "secret_key"),
            LABELLOOP_PUBLIC_URL=env.get("LABELLOOP_PUBLIC_URL", api_url),
            LABELLOOP_GATEWAY_URL=gateway_url,
            LABELLOOP_API_URL=api_url,
            LABELLOOP_ALLOWED_NETWORKS=env.get("LABELLOOP_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128"),
            LABELLOOP_BACKEND_DATA_DIR=str(data_dir / "example-backend"),
            LABELLOOP_NER_BACKEND_DATA_DIR=str(data_dir / "ner-backend"),
            LABELLOOP_WORKER_PROBE_PORT=env.get("LABELLOOP_WORKER_PROBE_PORT", str(gateway_port + 1)),
            LABELLOOP_WORKER_PROBE_HOST="127.0.0.1",
            # Ctrl-C stops everything at once: no point waiting long for chunks the API will not take.
            LABELLOOP_WORKER_DRAIN_GRACE_S=env.get("LABELLOOP_WORKER_DRAIN_GRACE_S", "2"),
            LABELLOOP_WORKER_MAX_JOBS=env.get("LABELLOOP_WORKER_MAX_JOBS", RUN_WORKER_MAX_JOBS),
        )
        worker_url = f"http://127.0.0.1:{env['LABELLOOP_WORKER_PROBE_PORT']}"
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO_ROOT, env=env, check=True
        )
        children = [
            Child(
                "annotation-api",
                _uvicorn("services.annotation_api.main:app_from_env", api_port),
                f"{api_url}/ready",
                env={"LABELLOOP_BACKGROUND_LOOPS": "false"},
            ),
            Child(
                "annotation-api-internal",
                _uvicorn("services.annotation_api.main:app_from_env", internal_api_port),
                f"{internal_api_url}/ready",
                env={"LABELLOOP_BACKGROUND_LOOPS": "true"},
            ),
            Child(
                "model-gateway",
                _uvicorn("services.model_gateway.main:app_from_env", gateway_port, *GATEWAY_UVICORN_ARGS),
                f"{gateway_url}/ready",
            ),
            Child(
                "gateway-worker",
                [sys.executable, "-m", "services.model_gateway.worker"],
                f"{worker_url}/ready",
                env={"LABELLOOP_API_URL": internal_api_url},
            ),
            Child(
                "example-backend",
                [
                    sys.executable,
                    "-m",
                    backend_module,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(backend_port),
                ],
                f"{backend_url}/health",
            ),
            Child(
                "ner-backend",
                [
                    sys.executable,
                    "-m",
                    "examples.ner_backend",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ner_port),
                ],
                f"{ner_url}/health",
            ),
        ]
        for child in children:
            child.process = subprocess.Popen(
                child.argv, cwd=REPO_ROOT, env={**env, **child.env}, preexec_fn=_die_with_parent
            )
        _wait_ready(children)
        print(
            "\nlabelloop is running\n"
            f"  web console      {api_url}/   (open it in a browser; sign in with the API token below)\n"
            f"  annotation API   {api_url}   (docs: {api_url}/docs)\n"
            f"  /internal API    {internal_api_url}   (the same API; the gateway worker's calls and the "
            "background jobs run here)\n"
            f"  model gateway    {gateway_url}   (docs: {gateway_url}/docs)\n"
            f"  gateway worker   {worker_url}   (/metrics, /health, /ready)\n"
            f"  example backend  {backend_url}   ({backend_module})\n"
            f"  NER backend      {ner_url}   (examples.ner_backend: interactive, named entities)\n"
            f"  database         {env['DATABASE_URL']}\n"
            f"  redis            {env['REDIS_URL']}\n"
            f"  API token        {api_token}\n"
            f"  try: curl -H 'Authorization: Token {api_token}' {api_url}/api/projects\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            for child in children:
                assert child.process is not None
                if child.process.poll() is not None:
                    print(f"{child.name} exited with {child.process.returncode}; stopping", flush=True)
                    return 1
            dead = stack.dead_server()
            if dead is not None:
                print(f"{dead}: every request would fail; stopping (see {stack.data_dir})", flush=True)
                return 1
            time.sleep(0.5)
    except StackInUse as in_use:
        print(f"labelloop: {in_use}", file=sys.stderr, flush=True)
        return 1
    except _Stop as stop:
        print(f"\n{stop}: stopping labelloop", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_children(children)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
