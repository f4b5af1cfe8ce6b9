"""Helpers of the example-backend tests."""

from __future__ import annotations

import socket
from typing import Any

from tests.support.servers import ServerThread


def serve(app: Any) -> ServerThread:
    """A ServerThread whose connections send small writes at once.

    Its listening socket is created without naming IPPROTO_TCP, so asyncio does not set TCP_NODELAY on
    accepted connections and every keep-alive response waits ~40 ms for a delayed ACK; accepted
    connections inherit the option from the listening socket, so setting it there fixes that.
    """
    server = ServerThread(app)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server
