"""The annotation API application: Label Studio–compatible REST over Postgres."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from services.annotation_api import health, metrics, secret_box
from services.annotation_api.annotations import router as annotations_router
from services.annotation_api.auth import router as auth_router
from services.annotation_api.auth.middleware import AuthenticateBeforeBodyMiddleware
from services.annotation_api.auth.service import ensure_user_with_token
from services.annotation_api.auto_labeling import actions as _auto_labeling  # noqa: F401 (registers the DM action)
from services.annotation_api.console import router as console_router
from services.annotation_api.data_manager import router as data_manager_router
from services.annotation_api.db import InternalSlots, make_engine, make_sessionmaker
from services.annotation_api.errors import install_error_handlers
from services.annotation_api.events import router as events_router
from services.annotation_api.exports import router as exports_router
from services.annotation_api.imports import router as imports_router
from services.annotation_api.internal import predict_targets
from services.annotation_api.internal import router as internal_router
from services.annotation_api.jobs import router as jobs_router
from services.annotation_api.jobs.background import background
from services.annotation_api.label_stream import router as label_stream_router
from services.annotation_api.limits import BodySizeLimitMiddleware
from services.annotation_api.ml_backends import router as ml_backends_router
from services.annotation_api.model_versions import router as model_versions_router
from services.annotation_api.predictions import router as predictions_router
from services.annotation_api.projects import router as projects_router
from services.annotation_api.settings import ApiSettings
from services.annotation_api.tasks import router as tasks_router
from services.annotation_api.text_guard import reject_unstorable_input
from services.annotation_api.training import router as training_router
from shared.api_docs import install_docs
from shared.logging import RequestIdMiddleware, configure_logging
from shared.openapi_errors import ERROR_RESPONSES
from shared.runtime import tune_garbage_collector
from shared.tracing import configure_tracing
from shared.version import VERSION, version_router

BOOTSTRAP_EMAIL = "admin@labelloop.local"
SERVICE = "annotation-api"
log = logging.getLogger(__name__)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    secret_box.configure(settings.secret_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url, settings.db_pool_size, ping_after_idle_s=settings.db_ping_after_idle_s
        )
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        # No checkout checks: the gateway workers retry the 503 a dropped connection answers.
        internal_engine = make_engine(
            settings.database_url, settings.internal_db_pool_size, max_overflow=0, ping_after_idle_s=None
        )
        app.state.internal_engine = internal_engine
        app.state.internal_sessionmaker = make_sessionmaker(internal_engine)
        app.state.internal_slots = InternalSlots(
            settings.internal_db_pool_size, settings.internal_wait_s, settings.internal_retry_after_s
        )
        if settings.api_token:
            async with app.state.sessionmaker.begin() as session:
                await ensure_user_with_token(session, BOOTSTRAP_EMAIL, settings.api_token)
        try:
            async with background(app, settings):
                yield
        finally:
            await internal_engine.dispose()
            await engine.dispose()
            log.info("stopped")

    app = FastAPI(
        title="labelloop annotation API",
        version=VERSION,
        description="Projects, tasks, annotations, predictions, ML backends and jobs "
        "(Label Studio–compatible paths and fields).",
        lifespan=lifespan,
        dependencies=[Depends(reject_unstorable_input)],
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Added last runs first: a body is neither read nor parsed before its sender is authenticated.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_json_request_bytes,
        bulk_max_bytes=settings.max_request_bytes,
    )
    app.add_middleware(AuthenticateBeforeBodyMiddleware)
    app.add_middleware(RequestIdMiddleware, service=SERVICE)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(version_router("annotation-api"))
    app.include_router(auth_router.router)
    app.include_router(auth_router.users)
    app.include_router(label_stream_router.router)
    app.include_router(projects_router.router)
    app.include_router(imports_router.router)
    app.include_router(exports_router.router)
    app.include_router(annotations_router.router)
    app.include_router(predictions_router.router)
    app.include_router(model_versions_router.router)
    app.include_router(data_manager_router.router)
    app.include_router(tasks_router.router)
    app.include_router(ml_backends_router.router)
    app.include_router(jobs_router.router)
    app.include_router(internal_router.router)
    app.include_router(predict_targets.router)
    app.include_router(training_router.router)
    app.include_router(training_router.internal)
    app.include_router(events_router.router)
    console_router.install(app)
    install_docs(app)
    return app


def app_from_env() -> FastAPI:
    """Entry point for uvicorn (``--factory``): settings and logging from the environment."""
    settings = ApiSettings()
    configure_logging(SERVICE, settings.log_level, settings.log_json)
    configure_tracing(SERVICE, settings.otlp_endpoint)
    app = create_app(settings)
    tune_garbage_collector()
    return app
