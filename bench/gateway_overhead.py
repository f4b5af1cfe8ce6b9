"""Gateway overhead on an interactive predict: the same one-task predict straight to an instant backend
and through the gateway's HTTP route, alternated call by call so drift hits both sides alike.

Both servers run as separate processes, as in production (the fake backend's bench mode and the gateway
under uvicorn with its default logging). Run with ``make bench-gateway`` (which provides REDIS_URL, the
gateway's readiness dependency) or ``python -m devstack.exec -- python -m bench.gateway_overhead``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import orjson

from devstack.embedded import free_port
from devstack.run import GATEWAY_UVICORN_ARGS
from tests.fakes.fake_backend import SENTIMENT_CONFIG

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE_TOKEN = "bench-service-token"
PROJECT = {"id": 1, "created_at_ts": 1_700_000_000, "label_config": SENTIMENT_CONFIG}
TASK = {"id": 1, "data": {"text": "a great product, would buy again"}}


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


@contextmanager
def process(name: str, command: list[str], health_url: str, env: dict[str, str]) -> Iterator[int]:
    """Start a server process, wait (bounded) until its health URL answers, yield its pid, stop it.

    Its log goes to a file, not a pipe: nobody reads a pipe during the run, and a full pipe would
    block the server.
    """
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_until_healthy(name, child, health_url, log)
            yield child.pid
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_until_healthy(name: str, child: subprocess.Popen[bytes], health_url: str, log: IO[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if child.poll() is not None:
            log.seek(0)
            error = log.read().decode("utf-8", "replace")
            raise RuntimeError(f"{name} exited with {child.returncode}: {error[-2000:]}")
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer {health_url} within 30s")
        time.sleep(0.05)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Results:
    direct_ms: list[float] = field(default_factory=list)
    gateway_ms: list[float] = field(default_factory=list)
    gateway_user_s: float = 0.0
    gateway_system_s: float = 0.0
    backend_cpu_s: float = 0.0


async def measure(
    backend_url: str,
    gateway_url: str,
    route: str,
    calls: int,
    warmup: int,
    gateway_pid: int,
    backend_pid: int,
) -> Results:
    direct_body = orjson.dumps(
        {
            "tasks": [TASK],
            "project": f"{PROJECT['id']}.{PROJECT['created_at_ts']}",
            "label_config": SENTIMENT_CONFIG,
            "params": {"login": None, "password": None, "context": None},
        }
    )
    if route == "public":
        gateway_path = "/api/predict"
        public_project = {"id": PROJECT["id"], "created_at_ts": PROJECT["created_at_ts"]}
        gateway_body = orjson.dumps(
            {
                "backend": {"url": backend_url},
                "project": public_project,
                "label_config": SENTIMENT_CONFIG,
                "tasks": [TASK],
                "interactive": True,
            }
        )
    else:
        gateway_path = "/internal/predict"
        gateway_body = orjson.dumps(
            {"backend": {"url": backend_url}, "project": PROJECT, "tasks": [TASK], "interactive": True}
        )
    json_headers = {"Content-Type": "application/json"}
    gateway_headers = {**json_headers, "Authorization": f"Bearer {SERVICE_TOKEN}"}
    results = Results()
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:

        async def direct() -> float:
            started = time.perf_counter()
            response = await client.post(f"{backend_url}/predict", content=direct_body, headers=json_headers)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200 and response.json()["results"], response.text
            return elapsed * 1000

        async def through_gateway() -> float:
            started = time.perf_counter()
            response = await client.post(
                f"{gateway_url}{gateway_path}", content=gateway_body, headers=gateway_headers
            )
            elapsed = time.perf_counter() - started
            result = response.json()
            assert response.status_code == 200 and result["predictions"] and not result["errors"], (
                response.text
            )
            return elapsed * 1000

        for _ in range(warmup):
            await direct()
            await through_gateway()
        gateway_cpu, backend_cpu = cpu_seconds(gateway_pid), cpu_seconds(backend_pid)
        for index in range(calls):
            # Alternate which goes first so neither side always pays for the other's after-effects.
            if index % 2:
                results.gateway_ms.append(await through_gateway())
                results.direct_ms.append(await direct())
            else:
                results.direct_ms.append(await direct())
                results.gateway_ms.append(await through_gateway())
        gateway_user, gateway_system = cpu_seconds(gateway_pid)
        results.gateway_user_s = gateway_user - gateway_cpu[0]
        results.gateway_system_s = gateway_system - gateway_cpu[1]
        results.backend_cpu_s = sum(cpu_seconds(backend_pid)) - sum(backend_cpu)
    return results


def report(results: Results, route: str, uvicorn_args: list[str]) -> None:
    direct, gateway = results.direct_ms, results.gateway_ms
    calls = len(direct)
    paired = [g - d for g, d in zip(gateway, direct, strict=True)]
    path = "/api/predict" if route == "public" else "/internal/predict"
    print(
        f"interactive predict via {path}, 1 task, {calls} calls each way, sequential, alternated; "
        f"uvicorn {' '.join(uvicorn_args) or '(defaults)'}; load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'path':<22}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'straight to backend':<22}{statistics.median(direct):>10.3f}{percentile(direct, 0.99):>10.3f}")
    print(f"{'through gateway':<22}{statistics.median(gateway):>10.3f}{percentile(gateway, 0.99):>10.3f}")
    p50 = statistics.median(gateway) - statistics.median(direct)
    p99 = percentile(gateway, 0.99) - percentile(direct, 0.99)
    print(f"{'difference':<22}{p50:>10.3f}{p99:>10.3f}")
    print(
        f"paired per-call difference: median {statistics.median(paired):.3f} ms, p99 {percentile(paired, 0.99):.3f} ms"
    )
    # The backend process served both paths, so its CPU is per 2 calls.
    user_ms, system_ms = results.gateway_user_s / calls * 1000, results.gateway_system_s / calls * 1000
    print(
        f"CPU per call: gateway process {user_ms + system_ms:.3f} ms "
        f"(user {user_ms:.3f}, system {system_ms:.3f}), "
        f"instant backend {results.backend_cpu_s / (2 * calls) * 1000:.3f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--route",
        choices=("internal", "public"),
        default="internal",
        help="the annotation API's /internal/predict, or the public /api/predict (label config inline)",
    )
    parser.add_argument(
        "--uvicorn-args",
        default=" ".join(GATEWAY_UVICORN_ARGS),
        help="extra uvicorn flags for the gateway, e.g. '--loop asyncio --http h11' to compare",
    )
    args = parser.parse_args(argv)
    uvicorn_args = args.uvicorn_args.split()
    if args.calls < 1:
        parser.error("--calls must be positive")
    backend_port, gateway_port = free_port(), free_port()
    backend_url, gateway_url = f"http://127.0.0.1:{backend_port}", f"http://127.0.0.1:{gateway_port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "LABELLOOP_SERVICE_TOKEN": SERVICE_TOKEN,
        "LABELLOOP_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    backend_cmd = [sys.executable, "-m", "tests.fakes.fake_backend", "--port", str(backend_port)]
    gateway_cmd = [
        sys.executable, "-m", "uvicorn", "services.model_gateway.main:app_from_env", "--factory",
        "--host", "127.0.0.1", "--port", str(gateway_port), "--no-access-log", "--log-level", "warning",
        *uvicorn_args,
    ]  # fmt: skip
    with (
        process("fake backend", backend_cmd, f"{backend_url}/health", env) as backend_pid,
        process("gateway", gateway_cmd, f"{gateway_url}/health", env) as gateway_pid,
    ):
        results = asyncio.run(
            measure(backend_url, gateway_url, args.route, args.calls, args.warmup, gateway_pid, backend_pid)
        )
    report(results, args.route, uvicorn_args)


if __name__ == "__main__":
    main()
