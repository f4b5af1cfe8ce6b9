"""Gateway test fixtures: in-process ``BackendGateway``s and the specs and tasks they are given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.model_gateway.address_policy import Resolver, system_resolver
from services.model_gateway.predictor import BackendGateway
from services.model_gateway.settings import GatewaySettings
from shared.gateway_contract import BackendSpec, ProjectRef
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend

TEST_SETTINGS: dict[str, Any] = {
    "allowed_networks": "127.0.0.0/8",
    "retry_base_s": 0.001,
    "retry_max_s": 0.005,
}
"""Loopback reachable (the fakes live there) and backoffs too short to slow a test down."""

MakeGateway = Callable[..., BackendGateway]


@pytest.fixture
async def make_gateway() -> AsyncIterator[MakeGateway]:
    """``make_gateway(**settings)``: a gateway with TEST_SETTINGS plus overrides, closed after the test."""
    made: list[BackendGateway] = []

    def make(resolver: Resolver = system_resolver, **overrides: Any) -> BackendGateway:
        settings = GatewaySettings(**{**TEST_SETTINGS, **overrides})
        gateway = BackendGateway(settings, resolver=resolver)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.aclose()


@pytest.fixture
def project() -> ProjectRef:
    return ProjectRef(id=7, created_at_ts=1_700_000_000, label_config=SENTIMENT_CONFIG)


def spec(backend: FakeBackend, **fields: Any) -> BackendSpec:
    return BackendSpec(url=backend.url, **fields)


def tasks(count: int, start: int = 1) -> list[dict[str, Any]]:
    """Tasks with ids start.. and alternating positive/negative text."""
    return [
        {"id": i, "data": {"text": "a great day" if i % 2 else "a dull day"}}
        for i in range(start, start + count)
    ]
