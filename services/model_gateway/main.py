"""The model gateway's HTTP API: the single egress to ML backends for synchronous work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.model_gateway import health, routes
from services.model_gateway.errors import install_error_handlers
from services.model_gateway.predictor import BackendGateway
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.targets import TargetResolver
from shared.api_docs import install_docs
from shared.logging import RequestIdMiddleware, configure_logging
from shared.openapi_errors import ERROR_RESPONSES
from shared.runtime import tune_garbage_collector
from shared.tracing import configure_tracing
from shared.version import VERSION, version_router

SERVICE = "model-gateway"
log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = BackendGateway(settings)
        app.state.token_verifier = routes.TokenVerifier(settings.api_url, settings.whoami_cache_s)
        app.state.targets = TargetResolver(settings)
        try:
            yield
        finally:
            await app.state.targets.aclose()
            await app.state.token_verifier.aclose()
            await app.state.gateway.aclose()
            log.info("stopped")

    app = FastAPI(
        title="labelloop model gateway",
        version=VERSION,
        description="Calls ML backends (Label Studio ML protocol) with timeouts, retries and "
        "circuit breaking; runs bulk prediction and training as arq jobs.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware, service=SERVICE)
    app.include_router(health.router)
    app.include_router(version_router("model-gateway"))
    app.include_router(routes.internal)
    app.include_router(routes.public)
    install_docs(app, refuses_nul=False)  # it stores nothing: NUL in task data is passed on
    return app


def app_from_env() -> FastAPI:
    settings = GatewaySettings()
    configure_logging(SERVICE, settings.log_level, settings.log_json)
    configure_tracing(SERVICE, settings.otlp_endpoint)
    app = create_app(settings)
    tune_garbage_collector()
    return app
