"""Ports handed to servers are outside the range outbound connections take their source ports from, and
stay reserved: no later pick, here or in another process, hands the same port to a second server."""

from __future__ import annotations

import socket
import subprocess
import sys

from devstack.embedded import _ephemeral_ports_start, free_port


def test_a_free_port_is_below_the_ephemeral_range() -> None:
    start = _ephemeral_ports_start()
    ports = {free_port() for _ in range(20)}
    if start > 21_000:  # else a kernel-chosen port is all there is
        assert all(20_000 <= port < start for port in ports), (ports, start)
    assert len(ports) > 1, "picked at random, not one port for everyone"


def test_a_port_is_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_reserved_port_is_refused_to_other_processes_yet_a_server_binds_it() -> None:
    port = free_port()
    probe = f"import socket; socket.socket().bind(('127.0.0.1', {port}))"
    other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert other.returncode != 0 and "Address already in use" in other.stderr, other.stderr
    for _ in range(2):  # a server binds it, and binds it again after a restart
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen()
