"""The model gateway's HTTP API: the single egress to ML backends for synchronous work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq import create_pool
from arq.connections import RedisSettings
from fastapi import FastAPI

from services.model_gateway import health, routes
from services.model_gateway.errors import install_error_handlers
from services.model_gateway.predictor import BackendGateway
from services.model_gateway.settings import GatewaySettings
from shared.logging import RequestIdMiddleware, configure_logging
from shared.openapi_errors import ERROR_RESPONSES


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = await create_pool(RedisSettings.from_dsn(settings.redis_url), retry=0)
        app.state.gateway = BackendGateway(settings)
        app.state.token_verifier = routes.TokenVerifier(settings.api_url, settings.whoami_cache_s)
        try:
            yield
        finally:
            await app.state.token_verifier.aclose()
            await app.state.gateway.aclose()
            await app.state.redis.aclose()

    app = FastAPI(
        title="labelloop model gateway",
        version="0.1.0",
        description="Calls ML backends (Label Studio ML protocol) with timeouts, retries and "
        "circuit breaking; runs bulk prediction and training as arq jobs.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(routes.internal)
    app.include_router(routes.public)
    return app


def app_from_env() -> FastAPI:
    settings = GatewaySettings()
    configure_logging("model-gateway", settings.log_level, settings.log_json)
    return create_app(settings)
