"""Run an ASGI app as a real HTTP server on 127.0.0.1, in a thread with its own event loop.

Tests talk to it over real sockets, exactly as other services and clients do, while the test process
stays free to use sync clients (label-studio-sdk) without blocking the server.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import uvicorn


def bound_socket(port: int = 0) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every keep-alive request waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def first_answer(process: subprocess.Popen[bytes], url: str, timeout_s: float = 20.0) -> httpx.Response:
    """GET ``url`` until the server ``process`` started answers; fails if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url)
        except httpx.ConnectError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)


class ServerThread:
    """``with ServerThread(app) as server: server.url`` — stops and joins on exit."""

    def __init__(self, app: Any, port: int = 0, **config_fields: Any) -> None:
        """``config_fields`` go to ``uvicorn.Config`` (e.g. ``http=`` the protocol production uses)."""
        self.socket = bound_socket(port)
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, **config_fields)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=f"server:{self.port}", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.socket]))
        except BaseException as exc:
            self.error = exc

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start: {self.error!r}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
