"""Gateway memory under hostile backends and hostile clients: RSS before, at peak and after each attack.

The gateway runs as in production (uvicorn subprocess, the deployment flags, default caps); a hostile
backend in this process streams endless bodies or endless headers; clients send huge bodies and heads.
The worker side (a ``BackendGateway`` making bulk calls, as each worker process holds one) runs in a
subprocess of its own against the same backend. Prints figures and checks them against ``--bound-mb``
(default 512): the peak must stay under it and RSS must come back near the baseline afterwards.

    make bench-gateway-memory            # or: python -m devstack.exec -- python -m bench.gateway_memory
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import orjson

from bench.gateway_overhead import SERVICE_TOKEN, process
from bench.harness import rss_mb
from devstack.embedded import free_port
from devstack.run import GATEWAY_UVICORN_ARGS
from tests.fakes.fake_backend import SENTIMENT_CONFIG

SLICE = b"a" * 65536
PROJECT = {"id": 1, "created_at_ts": 1_700_000_000, "label_config": SENTIMENT_CONFIG}


async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``/predict`` of a huge-body backend streams up to 1 GB of body; on port+1 semantics are chosen by
    the request path: ``/headers/predict`` streams 16 MB of one header instead."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        await reader.readexactly(length)
        if b" /headers/" in head.split(b"\r\n", 1)[0]:
            writer.write(b"HTTP/1.1 200 OK\r\nx-pad: ")
            for _ in range(256):  # 16 MB
                writer.write(SLICE)
                await writer.drain()
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for _ in range(16384):  # 1 GB
                writer.write(b"10000\r\n" + SLICE + b"\r\n")
                await writer.drain()
    writer.close()


async def sample_peak(pid: int, attack: Awaitable[object]) -> float:
    """The highest RSS of ``pid`` seen every 20 ms while ``attack`` runs."""
    peak = rss_mb(pid)
    task = asyncio.ensure_future(attack)
    while not task.done():
        with contextlib.suppress(FileNotFoundError):  # a worker may exit between two samples
            peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.02)
    await task
    return peak


async def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` (a head, maybe a body) and return the answer's status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await reader.readline()
    except ConnectionError:
        return b"(reset)"
    finally:
        writer.close()


async def gateway_attacks(
    gateway_pid: int, gateway_port: int, backend_url: str, concurrency: int
) -> list[tuple[str, float, float, float]]:
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    auth = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    rows: list[tuple[str, float, float, float]] = []
    async with httpx.AsyncClient(base_url=gateway_url, headers=auth, timeout=120, trust_env=False) as client:

        def public(url: str) -> Callable[[], Awaitable[object]]:
            body = {
                "tasks": [{"data": {"text": "a"}}],
                "label_config": SENTIMENT_CONFIG,
                "backend": {"url": url},
            }
            return lambda: client.post("/api/predict", json=body)

        def internal(url: str) -> Callable[[], Awaitable[object]]:
            body = {"backend": {"url": url}, "project": PROJECT, "tasks": [{"id": 1, "data": {"text": "a"}}]}
            return lambda: client.post("/internal/predict", json=body)

        head = b"POST %s HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n"
        declared = (
            head % b"/api/predict"
            + f"authorization: Bearer {SERVICE_TOKEN}\r\ncontent-length: 3000000000\r\n\r\n".encode()
            + SLICE * 64
        )
        no_token = head % b"/internal/webhook" + b"content-length: 104857600\r\n\r\n" + SLICE * 1600
        long_head = head % b"/internal/predict" + b"x-pad: " + SLICE * 256
        attacks: list[tuple[str, int, Callable[[], Awaitable[object]]]] = [
            ("public predict, backend streams 1 GB body", concurrency, public(backend_url)),
            ("public predict, backend sends 16 MB header", concurrency, public(f"{backend_url}/headers")),
            ("internal predict, backend streams 1 GB body", 4, internal(backend_url)),
            (
                "client declares 3 GB body, sends 4 MB (public)",
                concurrency,
                lambda: raw(gateway_port, declared),
            ),
            (
                "client sends 100 MB body without a token (webhook)",
                concurrency,
                lambda: raw(gateway_port, no_token),
            ),
            (
                "client sends 16 MB of headers",
                concurrency,
                lambda: raw(gateway_port, long_head),
            ),
        ]
        for name, count, attack in attacks:
            before = rss_mb(gateway_pid)
            peak = await sample_peak(gateway_pid, asyncio.gather(*(attack() for _ in range(count))))
            await asyncio.sleep(1.0)  # let closed connections finish closing
            rows.append((f"{name} x{count}", before, peak, rss_mb(gateway_pid)))
    return rows


def worker_side(backend_url: str, concurrency: int) -> None:
    """In a subprocess: bulk predicts from a worker's ``BackendGateway``; prints its own figures as JSON."""
    from services.model_gateway.predictor import BackendGateway
    from services.model_gateway.settings import GatewaySettings
    from shared.gateway_contract import BackendSpec, ProjectRef

    async def run() -> dict[str, float]:
        gateway = BackendGateway(GatewaySettings(allowed_networks="127.0.0.0/8", retry_attempts=1))
        project = ProjectRef(**PROJECT)
        before = rss_mb()
        results = await asyncio.gather(
            *(
                gateway.predict(
                    BackendSpec(url=url, max_concurrency=concurrency),
                    project,
                    [{"id": 1, "data": {"text": "a"}}],
                )
                for url in [backend_url, f"{backend_url}/headers"] * concurrency
            )
        )
        assert all(result.errors and not result.predictions for result in results)
        await gateway.aclose()
        await asyncio.sleep(1.0)
        return {"before": before, "after": rss_mb()}

    print(orjson.dumps(asyncio.run(run())).decode())


async def run_all(args: argparse.Namespace) -> int:
    server = await asyncio.start_server(hostile, "127.0.0.1", 0)
    backend_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    gateway_port = free_port()
    env = {
        **os.environ,
        "LABELLOOP_SERVICE_TOKEN": SERVICE_TOKEN,
        "LABELLOOP_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LABELLOOP_RETRY_ATTEMPTS": "1",
    }
    gateway_cmd = [
        sys.executable, "-m", "uvicorn", "services.model_gateway.main:app_from_env", "--factory",
        "--host", "127.0.0.1", "--port", str(gateway_port), "--no-access-log", "--log-level", "warning",
        *GATEWAY_UVICORN_ARGS,
    ]  # fmt: skip
    async with server:
        with process("gateway", gateway_cmd, f"http://127.0.0.1:{gateway_port}/health", env) as pid:
            rows = await gateway_attacks(pid, gateway_port, backend_url, args.concurrency)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.gateway_memory", "--worker-side", backend_url,
            "--concurrency", str(args.concurrency), stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        communicate = asyncio.ensure_future(worker.communicate())
        peak = await sample_peak(worker.pid, communicate)
        figures = orjson.loads(communicate.result()[0].splitlines()[-1])
        rows.append(
            (
                f"worker BackendGateway, 1 GB bodies and 16 MB headers x{2 * args.concurrency}",
                figures["before"],
                peak,
                figures["after"],
            )
        )
    print(f"RSS in MB, bound {args.bound_mb} MB, back within {args.slack_mb} MB of the baseline afterwards")
    print(f"{'attack':<64} {'before':>7} {'peak':>7} {'after':>7}")
    failed = 0
    for name, before, peak, after in rows:
        ok = peak < args.bound_mb and after < before + args.slack_mb
        failed += not ok
        print(f"{name:<64} {before:7.0f} {peak:7.0f} {after:7.0f}{'' if ok else '  OVER'}")
    return failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=16, help="parallel attackers per attack")
    parser.add_argument("--bound-mb", type=float, default=512.0)
    parser.add_argument(
        "--slack-mb", type=float, default=64.0, help="how far above baseline 'after' may stay"
    )
    parser.add_argument("--worker-side", metavar="BACKEND_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_side:
        worker_side(args.worker_side, args.concurrency)
        return
    started = time.monotonic()
    failed = asyncio.run(run_all(args))
    print(f"({time.monotonic() - started:.0f}s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
