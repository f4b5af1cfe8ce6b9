"""Backend checks: /health then /setup against a fake backend, and every failure kind."""

from __future__ import annotations

import logging

import pytest

from shared.gateway_contract import (
    BackendSpec,
    CheckBackendRequest,
    CheckBackendResult,
    CheckFailure,
    ProjectRef,
)
from tests.fakes.fake_backend import FakeBackend
from tests.gateway.conftest import MakeGateway, spec

PASSWORD = "s3cret-Pa55word"


async def check(
    make_gateway: MakeGateway, request: CheckBackendRequest, **settings: float
) -> CheckBackendResult:
    return await make_gateway(**settings).check(request)


def request_for(backend: FakeBackend, project: ProjectRef, **fields: object) -> CheckBackendRequest:
    return CheckBackendRequest(
        backend=spec(backend, **fields),
        project=project,
        hostname="http://annotations.example",
        access_token="tok-123",
    )


async def test_check_v2_sends_setup_as_upstream_does(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    result = await check(make_gateway, request_for(fake, project, extra_params={"threshold": 0.5}))
    assert result == CheckBackendResult(ok=True, model_version="fake-v1", model_class="FakeBackend")
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/health"), ("POST", "/setup")]
    assert fake.calls("/setup")[0].body == {
        "project": "7.1700000000",
        "schema": project.label_config,
        "hostname": "http://annotations.example",
        "access_token": "tok-123",
        "extra_params": '{"threshold":0.5}',
    }


async def test_check_without_extra_params_sends_null(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    assert (await check(make_gateway, request_for(fake, project))).ok
    assert fake.calls("/setup")[0].body["extra_params"] is None


async def test_check_v1_backend(make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef) -> None:
    fake.configure(mode="v1")
    result = await check(make_gateway, request_for(fake, project))
    assert result.ok and result.model_version == "INITIAL"


async def test_check_refused(make_gateway: MakeGateway, project: ProjectRef) -> None:
    backend = FakeBackend()  # bound but not serving: the port refuses connections
    try:
        result = await check(make_gateway, request_for(backend, project))
    finally:
        backend.stop()
    assert result.failure is CheckFailure.REFUSED
    assert "/health: cannot connect to http://127.0.0.1:" in (result.error or "")


async def test_check_timeout(make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef) -> None:
    fake.configure(setup_delay_s=1.0)
    result = await check(make_gateway, request_for(fake, project), setup_timeout_s=0.05)
    assert result.failure is CheckFailure.TIMEOUT
    assert result.error == "/setup: no answer within 0.05s"


async def test_check_basic_auth_on_every_call_and_password_never_shown(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.configure(require_basic_auth=("ml", PASSWORD))
    good = request_for(
        fake, project, auth_method="BASIC_AUTH", basic_auth_user="ml", basic_auth_pass=PASSWORD
    )
    assert (await check(make_gateway, good)).ok
    assert all(r.headers["authorization"].startswith("Basic ") for r in fake.requests)

    bad = request_for(
        fake, project, auth_method="BASIC_AUTH", basic_auth_user="ml", basic_auth_pass="wrong-pass"
    )
    result = await check(make_gateway, bad)
    assert result.failure is CheckFailure.UNAUTHORIZED
    assert result.error == "/health answered 401: Unauthorized"

    none = await check(make_gateway, request_for(fake, project))
    assert none.failure is CheckFailure.UNAUTHORIZED
    for text in (repr(good), str(good), repr(good.backend), caplog.text, result.model_dump_json()):
        assert PASSWORD not in text
        assert "wrong-pass" not in text


async def test_check_credentials_in_url_are_used_but_not_shown(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(require_basic_auth=("ml", PASSWORD))
    url = fake.url.replace("http://", f"http://ml:{PASSWORD}@")
    req = CheckBackendRequest(
        backend=spec(fake).model_copy(update={"url": url}), project=project, hostname="h"
    )
    assert (await check(make_gateway, req)).ok
    fake.stop()
    result = await check(make_gateway, req)
    assert result.failure is CheckFailure.REFUSED
    assert PASSWORD not in (result.error or "")


@pytest.mark.parametrize("garbage", ["not_json", "not_object"])
async def test_check_bad_response(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef, garbage: str
) -> None:
    fake.configure(garbage=garbage, garbage_paths=frozenset({"/setup"}))
    result = await check(make_gateway, request_for(fake, project))
    assert result.failure is CheckFailure.BAD_RESPONSE
    assert (result.error or "").startswith("/setup answered with an unexpected body: ")
    assert result.model_class == "FakeBackend"


async def test_check_health_not_an_ml_backend(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(garbage="not_object", garbage_paths=frozenset({"/health"}))
    result = await check(make_gateway, request_for(fake, project))
    assert result.failure is CheckFailure.BAD_RESPONSE
    assert fake.calls("/setup") == []


async def test_check_backend_error_keeps_the_backends_detail(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(always_fail=500, fail_paths=frozenset({"/setup"}))
    result = await check(make_gateway, request_for(fake, project))
    assert result.failure is CheckFailure.BACKEND_ERROR
    assert result.error == "/setup answered 500: FakeBackendError: always failing with 500"
    assert len(fake.calls("/setup")) == 1  # checks are not retried


async def test_check_no_model_version(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    fake.configure(model_version="undefined")
    result = await check(make_gateway, request_for(fake, project))
    assert result.failure is CheckFailure.NO_MODEL_VERSION
    assert result.model_class == "FakeBackend"


async def test_check_rejects_non_http_urls(make_gateway: MakeGateway, project: ProjectRef) -> None:
    req = CheckBackendRequest(backend=BackendSpec(url="file:///etc/passwd"), project=project, hostname="h")
    result = await check(make_gateway, req)
    assert result.failure is CheckFailure.POLICY
    assert result.error == "backend url must look like http(s)://host[:port][/path]"
