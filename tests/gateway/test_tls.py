"""TLS to backends against a local server with a test CA (trustme): what verifies, what is refused, mTLS.

The backend's name resolves (through the test resolver) to 127.0.0.1, so certificates are checked against
a host name as in production, with no traffic leaving loopback.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from services.model_gateway.predictor import BackendGateway, Predicted
from shared.gateway_contract import BackendSpec, ProjectRef
from tests.fakes.raw_backend import RawBackend, serve_raw
from tests.gateway.conftest import MakeGateway, tasks

HOST = "backend.test"


async def _loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def _predict(gateway: BackendGateway, backend: RawBackend, project: ProjectRef) -> Predicted:
    return await gateway.predict(BackendSpec(url=backend.url), project, tasks(1), interactive=True)


@pytest.fixture
async def tls_backend(ca: trustme.CA) -> AsyncIterator[RawBackend]:
    backend = RawBackend()
    async with serve_raw(backend, tls=_server_context(ca.issue_cert(HOST)), host=HOST):
        yield backend


async def test_a_certificate_from_the_configured_ca_verifies(
    make_gateway: MakeGateway, project: ProjectRef, tls_backend: RawBackend, ca_file: str
) -> None:
    gateway = make_gateway(resolver=_loopback, backend_ca_bundle=ca_file)
    for _ in range(2):
        result = await _predict(gateway, tls_backend, project)
        assert result.errors == [] and [p.model_version for p in result.predictions] == ["raw-v1"]
    assert tls_backend.connections == 1  # kept alive over TLS too


async def test_a_certificate_for_another_host_is_refused(
    make_gateway: MakeGateway, project: ProjectRef, ca: trustme.CA, ca_file: str
) -> None:
    backend = RawBackend()
    async with serve_raw(backend, tls=_server_context(ca.issue_cert("other.test")), host=HOST):
        result = await _predict(make_gateway(resolver=_loopback, backend_ca_bundle=ca_file), backend, project)
    [error] = result.errors
    assert error.message.startswith(f"/predict: TLS with https://{HOST}:")
    assert "Hostname mismatch" in error.message
    assert backend.requests == 0


async def test_an_expired_certificate_is_refused(
    make_gateway: MakeGateway, project: ProjectRef, ca: trustme.CA, ca_file: str
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        HOST, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )
    backend = RawBackend()
    async with serve_raw(backend, tls=_server_context(expired), host=HOST):
        result = await _predict(make_gateway(resolver=_loopback, backend_ca_bundle=ca_file), backend, project)
    [error] = result.errors
    assert "certificate has expired" in error.message
    assert backend.requests == 0


async def test_a_certificate_from_an_unknown_ca_is_refused(
    make_gateway: MakeGateway, project: ProjectRef, tls_backend: RawBackend
) -> None:
    """Without the test CA configured only public roots are trusted."""
    result = await _predict(make_gateway(resolver=_loopback), tls_backend, project)
    [error] = result.errors
    assert "unable to get local issuer certificate" in error.message
    assert tls_backend.requests == 0


async def test_mutual_tls(
    make_gateway: MakeGateway, project: ProjectRef, ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    """A backend that requires a client certificate gets none by default, and the configured one when set."""
    client_ca = trustme.CA()
    client_cert = tmp_path / "gateway.pem"
    client_ca.issue_cert("labelloop-gateway").private_key_and_cert_chain_pem.write_to_path(str(client_cert))
    backend = RawBackend()
    server = _server_context(ca.issue_cert(HOST), client_ca=client_ca)
    async with serve_raw(backend, tls=server, host=HOST):
        anonymous = await _predict(
            make_gateway(resolver=_loopback, backend_ca_bundle=ca_file, retry_attempts=1), backend, project
        )
        assert len(anonymous.errors) == 1 and backend.requests == 0
        with_cert = make_gateway(
            resolver=_loopback, backend_ca_bundle=ca_file, backend_client_cert=str(client_cert)
        )
        result = await _predict(with_cert, backend, project)
    assert result.errors == [] and backend.requests == 1
