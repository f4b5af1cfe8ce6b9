"""Ports handed to servers are outside the range outbound connections take their source ports from."""

from __future__ import annotations

import socket

from devstack.embedded import _ephemeral_ports_start, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_bound() -> None:
    start = _ephemeral_ports_start()
    ports = {free_port() for _ in range(20)}
    if start > 21_000:  # else a kernel-chosen port is all there is
        assert all(20_000 <= port < start for port in ports), (ports, start)
    assert len(ports) > 1, "picked at random, not one port for everyone"
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
