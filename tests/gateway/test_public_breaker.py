"""A public caller cannot open a backend's circuit breaker with limits of its own choosing.

The public predict used to take a ``timeout_s``: seven calls with 0.001 s opened the breaker of that
backend for everyone. It takes a stored backend's id now (its timeout is the backend's configuration),
but ``interactive`` still asks for the gateway's tight interactive timeout: a slow backend running out
of that is not down, so bulk and internal calls to it must still go through.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.model_gateway.settings import GatewaySettings
from tests.fakes.fake_backend import SENTIMENT_CONFIG, FakeBackend
from tests.gateway.conftest import tasks
from tests.support.builders import connect_backend, create_project

INTERACTIVE_TIMEOUT_S = 0.2


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings) -> GatewaySettings:
    return gateway_settings.model_copy(update={"interactive_timeout_s": INTERACTIVE_TIMEOUT_S})


async def test_interactive_timeouts_of_a_slow_backend_do_not_open_its_breaker(
    api: httpx.AsyncClient, gateway: httpx.AsyncClient, fake: FakeBackend
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG)
    backend = await connect_backend(api, project["id"], fake.url, timeout=10)
    fake.configure(predict_delay_s=INTERACTIVE_TIMEOUT_S * 3)
    body: dict[str, Any] = {"backend": backend["id"], "tasks": [{"data": {"text": "a"}}], "interactive": True}
    for _ in range(7):  # the breaker opens after 5 consecutive failures
        response = await gateway.post("/api/predict", json=body)
        assert response.status_code == 200, response.text
        (error,) = response.json()["errors"]
        assert "circuit" not in error["message"], error
    fake.configure(predict_delay_s=0.0)
    spec = {"url": fake.url, "timeout_s": 10}
    internal = await gateway.post(
        "/internal/predict",
        json={"backend": spec, "project": {**project_ref(project)}, "tasks": tasks(2)},
    )
    assert internal.json()["errors"] == [] and len(internal.json()["predictions"]) == 2


def project_ref(project: dict[str, Any]) -> dict[str, Any]:
    return {"id": project["id"], "created_at_ts": 1_700_000_000, "label_config": SENTIMENT_CONFIG}
