"""``make demo`` / ``python -m examples.demo``: uncertainty vs random sampling on a running stack.

Needs the stack ``make run`` starts, on the same ports (LABELLOOP_API_PORT, LABELLOOP_EXAMPLE_BACKEND_PORT;
token from LABELLOOP_API_TOKEN or ``$LABELLOOP_DATA_DIR/api_token``). It creates one project per sampling
strategy and deletes them when done, unless ``--keep``. The loop needs the scikit-learn example backend: when the one at --backend-url
is something else (``make run`` serves examples.simple_backend unless LABELLOOP_EXAMPLE_BACKEND says
otherwise), the demo serves its own on a free 127.0.0.1 port for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import httpx
import orjson
import uvicorn

from examples.demo.datasets import digit_items, split
from examples.demo.loop import STRATEGIES, Curve, DemoError, LoopSettings, learning_curve
from examples.demo.report import labels_to_reach, plot, table
from examples.sklearn_backend.app import MODEL_CLASS, create_app


def _token(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("LABELLOOP_API_TOKEN"):
        return os.environ["LABELLOOP_API_TOKEN"]
    path = Path(os.environ.get("LABELLOOP_DATA_DIR", ".data")) / "api_token"
    if path.exists():
        return path.read_text().strip()
    raise DemoError("no API token: pass --token, set LABELLOOP_API_TOKEN, or start the stack with `make run`")


def _is_sklearn_backend(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/health", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("model_class") == MODEL_CLASS


@contextmanager
def _own_backend(data_dir: Path) -> Iterator[str]:
    """Serve the scikit-learn backend in this process, on a free loopback port, for the run."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so, and without it
    # every keep-alive response waits for a delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(data_dir), log_level="warning", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DemoError("could not start the scikit-learn backend")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def _run(args: argparse.Namespace, backend_url: str) -> list[Curve]:
    pool, test = split(digit_items(), args.test_size, args.seed)
    if args.pool_size:
        pool = pool[: args.pool_size]
    print(f"digits: {len(pool)} tasks to label, {len(test)} held out (seed {args.seed})")
    settings = LoopSettings(rounds=args.rounds, per_round=args.per_round)
    headers = {"Authorization": f"Token {_token(args.token)}"}
    curves: list[Curve] = []
    created: list[int] = []
    async with (
        httpx.AsyncClient(base_url=args.api_url, headers=headers, timeout=60) as api,
        httpx.AsyncClient(base_url=backend_url, timeout=60) as backend,
    ):
        try:
            response = await api.get("/api/projects", params={"page_size": 1})
        except httpx.ConnectError as exc:
            raise DemoError(
                f"the annotation API at {args.api_url} is not running (start it with `make run`)"
            ) from exc
        if response.status_code == 401:
            raise DemoError(f"the annotation API at {args.api_url} refused the token (pass --token)")
        print(
            f"creating {len(args.strategies)} projects on {args.api_url} ({len(pool)} tasks each); "
            + ("they are kept (--keep)" if args.keep else "deleted at the end (--keep keeps them)")
        )
        try:
            for strategy in args.strategies:
                curve = await learning_curve(
                    api, backend, backend_url, strategy, pool, test, settings, created=created
                )
                curves.append(curve)
        finally:
            if not args.keep:
                await _delete_projects(api, created)
    return curves


async def _delete_projects(api: httpx.AsyncClient, project_ids: list[int]) -> None:
    for project_id in project_ids:
        response = await api.delete(f"/api/projects/{project_id}")
        outcome = "deleted" if response.status_code in (204, 404) else f"NOT deleted ({response.status_code})"
        print(f"project {project_id} {outcome}")


def _default_url(port_env: str, default_port: int) -> str:
    """The address ``make run`` serves on: the same port variables, the same defaults."""
    return f"http://127.0.0.1:{os.environ.get(port_env) or default_port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Active learning demo: uncertainty vs random sampling.")
    parser.add_argument("--api-url", default=_default_url("LABELLOOP_API_PORT", 8080))
    parser.add_argument(
        "--token", default=None, help="API token (default: $LABELLOOP_API_TOKEN or .data/api_token)"
    )
    parser.add_argument(
        "--backend-url",
        default=_default_url("LABELLOOP_EXAMPLE_BACKEND_PORT", 9090),
        help="the scikit-learn example backend",
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's projects (default: delete them)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=20, help="tasks labeled per round")
    parser.add_argument("--test-size", type=int, default=400, help="digits held out for evaluation")
    parser.add_argument("--pool-size", type=int, default=0, help="tasks imported (default: all the rest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategies", nargs="+", choices=sorted(STRATEGIES), default=["uncertainty", "random"]
    )
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    args = parser.parse_args(argv)

    try:
        with _backend(args) as backend_url:
            curves = asyncio.run(_run(args, backend_url))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(curves))
    print(labels_to_reach(curves))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curves.json").write_bytes(
        orjson.dumps([asdict(curve) for curve in curves], option=orjson.OPT_INDENT_2)
    )
    title = f"Digits, {args.per_round} labels per round: held-out accuracy (seed {args.seed})"
    problem = plot(curves, args.out / "learning_curves.png", title)
    print(problem or f"\nlearning curves: {args.out / 'learning_curves.png'}")
    return 0


@contextmanager
def _backend(args: argparse.Namespace) -> Iterator[str]:
    if _is_sklearn_backend(args.backend_url):
        yield args.backend_url
        return
    print(f"no {MODEL_CLASS} at {args.backend_url}; serving one in this process for the demo")
    with _own_backend(args.out / "backend-data") as url:
        yield url


if __name__ == "__main__":
    sys.exit(main())
