"""Which addresses the gateway may connect to: the SSRF guard in front of every backend call.

Backend URLs come from users, so a URL must not reach cloud metadata services, the gateway's own
loopback services or a private network unless the operator says so. The policy runs when a
connection is opened (see ``backend_client``): the host is resolved once, every resolved address is
checked, and the connection goes to a checked address, so DNS rebinding between check and connect
cannot slip through.

An IPv6 address that carries an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo's client) is
checked as the IPv4 address it reaches, so ``[64:ff9b::a9fe:a9fe]`` is cloud metadata like 169.254.169.254.

Rules, most specific prefix first (a tie goes to ``denied_networks``, then ``allowed_networks``):
- built-in denials: loopback, private, carrier-grade NAT, link-local / cloud metadata, multicast,
  reserved and unspecified ranges, documentation, benchmarking and the other IANA special-purpose
  ranges that are not globally reachable, plus the well-known metadata hosts as single addresses;
- ``LABELLOOP_ALLOWED_NETWORKS`` re-opens ranges (``make run`` allows loopback);
- ``LABELLOOP_DENIED_NETWORKS`` closes more.
Anything no rule matches (public addresses) is allowed. An allowed network reopens only built-in
ranges at least as wide as itself: ``0.0.0.0/0`` opens nothing, ``127.0.0.0/8`` opens loopback, and the
metadata ranges stay closed unless listed themselves.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Literal

from services.model_gateway.settings import Network

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""host, port → IP address strings; raises ``socket.gaierror`` (or OSError) when the name fails."""

_ALLOW_HINT = "allow with LABELLOOP_ALLOWED_NETWORKS"

_BUILT_IN: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified / this host"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("100.100.100.200/32", "cloud metadata"),
    ("168.63.129.16/32", "cloud metadata"),
    ("169.254.0.0/16", "link-local / cloud metadata"),
    ("192.0.0.0/24", "IETF special purpose"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved / broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "private (unique local)"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_NAT64 = (ip_network("64:ff9b::/96"), ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ip_network("::/96")


class _Source(IntEnum):
    """Tie-break between rules of the same prefix length: the higher value wins."""

    BUILT_IN = 0
    ALLOWED = 1
    DENIED = 2


@dataclass(frozen=True, slots=True)
class _Rule:
    network: Network
    source: _Source
    label: str

    @property
    def allows(self) -> bool:
        return self.source is _Source.ALLOWED


class AddressRejected(Exception):
    """A backend address the gateway refuses to connect to (``policy``) or cannot resolve (``dns``)."""

    def __init__(self, kind: Literal["policy", "dns"], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address reaches (mapped, compatible, NAT64, 6to4, Teredo), if any."""
    if not isinstance(address, IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _NAT64) or (
        address in _IPV4_COMPATIBLE and int(address) > 1  # :: and ::1 are themselves
    ):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _connect_form(address: IPAddress) -> IPAddress:
    """IPv4-mapped addresses are connected to as IPv4; others as they are (NAT64 needs its prefix)."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AddressPolicy:
    """Decides per IP address; ``resolve`` turns a host into addresses that passed."""

    def __init__(
        self,
        allowed: Iterable[Network] = (),
        denied: Iterable[Network] = (),
        *,
        resolver: Resolver = system_resolver,
        dns_timeout_s: float = 2.0,
    ) -> None:
        rules = [_Rule(ip_network(cidr), _Source.BUILT_IN, label) for cidr, label in _BUILT_IN]
        rules += [_Rule(net, _Source.ALLOWED, "LABELLOOP_ALLOWED_NETWORKS") for net in allowed]
        rules += [_Rule(net, _Source.DENIED, "LABELLOOP_DENIED_NETWORKS") for net in denied]
        # First match in this order is the most specific rule, ties broken by source.
        self._rules = sorted(rules, key=lambda rule: (rule.network.prefixlen, rule.source), reverse=True)
        self._resolver = resolver
        self._dns_timeout_s = dns_timeout_s

    def rejection(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, naming the rule, or None when it is allowed.

        An address carrying an IPv4 address must pass as that IPv4 address and as itself.
        """
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = self._rejection(inner)
            if reason is not None:
                return f"{address} reaches {inner}: {reason}"
        return self._rejection(address)

    def _rejection(self, address: IPAddress) -> str | None:
        for rule in self._rules:
            if rule.network.version == address.version and address in rule.network:
                if rule.allows:
                    return None
                if rule.source is _Source.DENIED:
                    return f"address {address} is in denied network {rule.network} ({rule.label})"
                return f"address {address} is in denied network {rule.network} ({rule.label}; {_ALLOW_HINT})"
        return None

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to, all checked; raises AddressRejected otherwise.

        One denied address rejects the host: which one a client would connect to is not ours to pick.
        """
        literal = host.strip("[]")
        try:
            addresses = [ip_address(literal)]
        except ValueError:
            addresses = await self._lookup(host, port)
        for address in addresses:
            reason = self.rejection(address)
            if reason is not None:
                where = "" if str(address) == literal else f"{host} resolves to {address}: "
                raise AddressRejected("policy", where + reason)
        return [str(_connect_form(address)) for address in addresses]

    async def _lookup(self, host: str, port: int) -> list[IPAddress]:
        try:
            async with asyncio.timeout(self._dns_timeout_s):
                found = await self._resolver(host, port)
        except TimeoutError:
            raise AddressRejected("dns", f"resolving {host} timed out") from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise AddressRejected("dns", f"cannot resolve {host}: {reason}") from None
        addresses = [ip_address(item.split("%", 1)[0]) for item in found]
        if not addresses:
            raise AddressRejected("dns", f"cannot resolve {host}: no addresses")
        return addresses
