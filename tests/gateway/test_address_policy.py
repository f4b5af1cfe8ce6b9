"""The SSRF guard: which addresses a backend URL may reach, and the rule named when refused."""

from __future__ import annotations

import socket
from ipaddress import ip_address, ip_network

import pytest

from services.model_gateway.address_policy import AddressPolicy, AddressRejected
from services.model_gateway.settings import GatewaySettings, parse_networks
from shared.gateway_contract import BackendSpec, CheckBackendRequest, CheckFailure, ProjectRef
from tests.fakes.fake_backend import FakeBackend
from tests.gateway.conftest import MakeGateway, spec


def policy(allowed: str = "", denied: str = "") -> AddressPolicy:
    return AddressPolicy(parse_networks(allowed), parse_networks(denied))


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("127.0.0.1", "127.0.0.0/8"),
        ("10.1.2.3", "10.0.0.0/8"),
        ("172.20.0.1", "172.16.0.0/12"),
        ("192.168.1.1", "192.168.0.0/16"),
        ("169.254.169.254", "169.254.0.0/16"),
        ("0.0.0.0", "0.0.0.0/8"),
        ("::1", "::1/128"),
        ("fe80::1", "fe80::/10"),
        ("fd12::1", "fc00::/7"),
        ("::ffff:169.254.169.254", "169.254.0.0/16"),
    ],
)
def test_default_policy_denies_internal_ranges(address: str, network: str) -> None:
    reason = policy().rejection(ip_address(address))
    assert reason is not None
    assert f"denied network {network}" in reason
    assert "LABELLOOP_ALLOWED_NETWORKS" in reason


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("64:ff9b::a9fe:a9fe", "169.254.0.0/16"),  # NAT64
        ("64:ff9b:1::a00:1", "10.0.0.0/8"),  # local-use NAT64
        ("2002:a9fe:a9fe::1", "169.254.0.0/16"),  # 6to4
        ("::a9fe:a9fe", "169.254.0.0/16"),  # IPv4-compatible
        ("::ffff:7f00:1", "127.0.0.0/8"),  # IPv4-mapped
        ("2001:0:4136:e378:8000:63bf:f5fe:fefe", "10.1.1.1"),  # Teredo client 10.1.1.1 (obfuscated)
    ],
)
def test_ipv6_carrying_an_ipv4_address_is_checked_as_that_address(address: str, network: str) -> None:
    reason = policy().rejection(ip_address(address))
    assert reason is not None and reason.startswith(f"{ip_address(address)} reaches ")
    assert network in reason


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("198.18.0.1", "198.18.0.0/15"),
        ("198.19.255.255", "198.18.0.0/15"),
        ("192.0.2.7", "192.0.2.0/24"),
        ("198.51.100.7", "198.51.100.0/24"),
        ("203.0.113.7", "203.0.113.0/24"),
        ("192.88.99.1", "192.88.99.0/24"),
        ("2001:db8::1", "2001:db8::/32"),
        ("2001:2::1", "2001::/23"),
        ("100::1", "100::/64"),
        ("3fff::1", "3fff::/20"),
        ("fec0::1", "fec0::/10"),
        ("::1.2.3.4", "::/96"),  # the IPv4 address is public, the deprecated form itself is not
    ],
)
def test_special_purpose_ranges_are_denied(address: str, network: str) -> None:
    reason = policy().rejection(ip_address(address))
    assert reason is not None and f"denied network {network}" in reason


def test_embedded_public_ipv4_stays_reachable() -> None:
    assert policy().rejection(ip_address("64:ff9b::5db8:d822")) is None  # NAT64 of 93.184.216.34
    assert policy().rejection(ip_address("2002:5db8:d822::1")) is None  # 6to4 of 93.184.216.34
    assert policy(allowed="127.0.0.0/8").rejection(ip_address("::ffff:127.0.0.1")) is None


@pytest.mark.parametrize(
    "host",
    ["[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::1]", "[::a9fe:a9fe]", "198.18.0.1", "[::ffff:10.0.0.1]"],
)
async def test_literal_addresses_are_refused_before_any_connection(
    make_gateway: MakeGateway, project: ProjectRef, host: str
) -> None:
    """IP-literal URLs skip the resolver: the caller checks them itself and never opens a socket (any
    connection attempt to these addresses would fail differently: refused, unreachable or a timeout)."""
    gateway = make_gateway()
    request = CheckBackendRequest(backend=spec_url(f"http://{host}:9/"), project=project, hostname="h")
    result = await gateway.check(request)
    assert result.failure is CheckFailure.POLICY, result.error
    assert "is in denied network" in (result.error or "")


async def test_names_resolving_to_embedded_ipv4_are_refused(
    make_gateway: MakeGateway, project: ProjectRef
) -> None:
    async def to_nat64(host: str, port: int) -> list[str]:
        return ["64:ff9b::a9fe:a9fe"]

    result = await make_gateway(resolver=to_nat64).check(
        CheckBackendRequest(backend=spec_url("http://nat64.example/"), project=project, hostname="h")
    )
    assert result.failure is CheckFailure.POLICY
    assert "nat64.example resolves to 64:ff9b::a9fe:a9fe: 64:ff9b::a9fe:a9fe reaches 169.254.169.254" in (
        result.error or ""
    )


def test_default_policy_allows_public_addresses() -> None:
    assert policy().rejection(ip_address("93.184.216.34")) is None
    assert policy().rejection(ip_address("2606:2800:220:1::1")) is None


def test_metadata_message_names_the_rule() -> None:
    assert policy().rejection(ip_address("169.254.169.254")) == (
        "address 169.254.169.254 is in denied network 169.254.0.0/16 "
        "(link-local / cloud metadata; allow with LABELLOOP_ALLOWED_NETWORKS)"
    )


def test_allowed_networks_reopen_only_ranges_at_least_as_specific() -> None:
    wide = policy(allowed="0.0.0.0/0,::/0")
    assert wide.rejection(ip_address("127.0.0.1")) is not None
    assert wide.rejection(ip_address("169.254.169.254")) is not None
    listed = policy(allowed="127.0.0.0/8,10.0.0.0/8,::1/128")
    assert listed.rejection(ip_address("127.0.0.1")) is None
    assert listed.rejection(ip_address("10.0.0.1")) is None
    assert listed.rejection(ip_address("::1")) is None
    assert listed.rejection(ip_address("169.254.169.254")) is not None
    assert listed.rejection(ip_address("fe80::1")) is not None
    explicit = policy(allowed="169.254.0.0/16")
    assert explicit.rejection(ip_address("169.254.169.254")) is None


def test_denied_networks_win_ties_and_more_specific_rules_win() -> None:
    rules = policy(allowed="127.0.0.0/8", denied="127.0.0.5/32,203.0.113.0/24")
    assert rules.rejection(ip_address("127.0.0.1")) is None
    reason = rules.rejection(ip_address("127.0.0.5"))
    assert reason == "address 127.0.0.5 is in denied network 127.0.0.5/32 (LABELLOOP_DENIED_NETWORKS)"
    assert rules.rejection(ip_address("203.0.113.9")) is not None
    tie = policy(allowed="203.0.113.0/24", denied="203.0.113.0/24")
    assert tie.rejection(ip_address("203.0.113.9")) is not None


def test_settings_parse_comma_separated_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_ALLOWED_NETWORKS", "127.0.0.0/8, ::1/128")
    monkeypatch.setenv("LABELLOOP_DENIED_NETWORKS", "")
    settings = GatewaySettings()
    assert settings.allowed_networks == (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    assert settings.denied_networks == ()
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a CIDR network"):
        GatewaySettings(allowed_networks="10.0.0.0/33")


async def test_every_resolved_address_is_checked() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"mixed.example": ["93.184.216.34", "127.0.0.1"], "ok.example": ["93.184.216.34"]}[host]

    rules = AddressPolicy(resolver=resolver)
    assert await rules.resolve("ok.example", 80) == ["93.184.216.34"]
    with pytest.raises(AddressRejected) as caught:
        await rules.resolve("mixed.example", 80)
    assert caught.value.kind == "policy"
    assert caught.value.message.startswith("mixed.example resolves to 127.0.0.1: address 127.0.0.1")


async def unknown_names(host: str, port: int) -> list[str]:
    """A resolver that knows no names, so tests never ask a real DNS server."""
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def test_check_reports_dns_failure(make_gateway: MakeGateway, project: ProjectRef) -> None:
    gateway = make_gateway(resolver=unknown_names)
    request = CheckBackendRequest(
        backend=spec_url("http://no-such-backend.invalid:9090"), project=project, hostname="http://api"
    )
    result = await gateway.check(request)
    assert result.failure is CheckFailure.DNS
    assert result.error == "cannot resolve no-such-backend.invalid: Name or service not known"


async def test_policy_is_enforced_when_connecting(
    make_gateway: MakeGateway, project: ProjectRef, fake: FakeBackend
) -> None:
    """A name that resolves to a denied address is refused although the URL shows no address at all."""

    async def to_metadata(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    gateway = make_gateway(resolver=to_metadata)
    request = CheckBackendRequest(
        backend=spec_url("http://metadata.example/"), project=project, hostname="http://api"
    )
    result = await gateway.check(request)
    assert result.failure is CheckFailure.POLICY
    assert "169.254.169.254 is in denied network 169.254.0.0/16" in (result.error or "")

    strict = make_gateway(allowed_networks="")
    result = await strict.check(CheckBackendRequest(backend=spec(fake), project=project, hostname="h"))
    assert result.failure is CheckFailure.POLICY
    assert "127.0.0.0/8 (loopback; allow with LABELLOOP_ALLOWED_NETWORKS)" in (result.error or "")
    assert fake.requests == []

    async def to_fake(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    named = make_gateway(resolver=to_fake)
    url = fake.url.replace("127.0.0.1", "backend.test")
    result = await named.check(CheckBackendRequest(backend=spec_url(url), project=project, hostname="h"))
    assert result.ok, result.error


def spec_url(url: str) -> BackendSpec:
    return BackendSpec(url=url)
