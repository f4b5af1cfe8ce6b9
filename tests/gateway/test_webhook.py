"""Webhook delivery: 2.x /webhook, 1.0.x /train, auth, and the backend's own error detail."""

from __future__ import annotations

from prometheus_client import REGISTRY

from shared.gateway_contract import WebhookRequest, WebhookResult
from tests.fakes.fake_backend import FakeBackend
from tests.gateway.conftest import MakeGateway, spec

PROJECT = {"id": 7, "label_config": "<View/>"}


async def test_training_event_reaches_webhook(make_gateway: MakeGateway, fake: FakeBackend) -> None:
    fake.configure(version_after_train="fake-v2")
    payload = {"action": "START_TRAINING", "project": PROJECT}
    result = await make_gateway().webhook(WebhookRequest(backend=spec(fake), payload=payload))
    assert result == WebhookResult(
        ok=True, status_code=201, body={"result": {"model_version": "fake-v2"}, "status": "ok"}
    )
    assert fake.calls("/webhook")[0].body == payload


async def test_other_events_are_delivered_as_is(make_gateway: MakeGateway, fake: FakeBackend) -> None:
    payload = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 3}], "project": PROJECT}
    result = await make_gateway().webhook(WebhookRequest(backend=spec(fake), payload=payload))
    assert result.ok and result.status_code == 200 and result.body == {"status": "Unknown event"}


async def test_legacy_backend_trains_through_train(make_gateway: MakeGateway, fake: FakeBackend) -> None:
    fake.configure(mode="v1")
    gateway = make_gateway()
    train = WebhookRequest(
        backend=spec(fake), payload={"action": "START_TRAINING", "project": PROJECT}, legacy_train=True
    )
    result = await gateway.webhook(train)
    assert result.ok and result.body == {"job": "fake-job-1"}
    assert len(fake.calls("/train")) == 1 and fake.calls("/webhook") == []
    created = WebhookRequest(
        backend=spec(fake), payload={"action": "ANNOTATION_CREATED", "project": PROJECT}, legacy_train=True
    )
    assert (await gateway.webhook(created)).ok
    assert len(fake.calls("/webhook")) == 1


async def test_webhook_sends_basic_auth(make_gateway: MakeGateway, fake: FakeBackend) -> None:
    fake.configure(require_basic_auth=("ml", "hook-pass-1"))
    backend = spec(fake, auth_method="BASIC_AUTH", basic_auth_user="ml", basic_auth_pass="hook-pass-1")
    result = await make_gateway().webhook(
        WebhookRequest(backend=backend, payload={"action": "ANNOTATION_UPDATED", "project": PROJECT})
    )
    assert result.ok and result.status_code == 201


async def test_webhook_failure_carries_the_backends_detail(
    make_gateway: MakeGateway, fake: FakeBackend
) -> None:
    fake.configure(webhook_fail=500)
    result = await make_gateway().webhook(
        WebhookRequest(backend=spec(fake), payload={"action": "START_TRAINING", "project": PROJECT})
    )
    assert result.ok is False and result.status_code == 500
    assert (result.error or "").startswith("/webhook answered 500: ")
    assert (result.error or "").endswith("FakeBackendError: webhook failed")


def _webhook_retries() -> float:
    """Retries the gateway counted for ad-hoc backends' /webhook (the metric every retry increments)."""
    value = REGISTRY.get_sample_value(
        "labelloop_backend_retries_total", {"backend": "none", "endpoint": "/webhook"}
    )
    return value or 0.0


async def test_webhook_read_timeout_is_not_retried(make_gateway: MakeGateway, fake: FakeBackend) -> None:
    """Counted on the gateway's side: on a loaded machine the 50 ms can run out before the fake backend has
    read the request, which it then never records, so the backend's own count is only an upper bound."""
    fake.configure(webhook_delay_s=2.0)
    gateway = make_gateway(webhook_timeout_s=0.05, retry_attempts=3)
    retried_before = _webhook_retries()
    result = await gateway.webhook(
        WebhookRequest(backend=spec(fake), payload={"action": "ANNOTATION_CREATED", "project": PROJECT})
    )
    assert result.ok is False and result.status_code is None
    assert result.error == "/webhook: no answer within 0.05s"
    assert _webhook_retries() == retried_before
    assert len(fake.calls("/webhook")) <= 1
