"""``/api/ml``: Label Studio's ML backend routes (connect, list, edit, validate, predict, interactive)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from services.annotation_api.auth.dependencies import CurrentUser
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import INT_MAX, MlBackendId
from services.annotation_api.jobs import service as jobs_service
from services.annotation_api.jobs.schemas import PredictStarted
from services.annotation_api.ml_backends import performance, service
from services.annotation_api.ml_backends.gateway_client import GatewayClient, gateway_client
from services.annotation_api.ml_backends.schemas import (
    InteractiveOut,
    InteractiveRequest,
    MlBackendCreate,
    MlBackendOut,
    MlBackendUpdate,
    PerformanceOut,
    VersionsOut,
)
from services.annotation_api.routing import PrefixRouter
from services.annotation_api.settings import ApiSettings

router = PrefixRouter(prefix="/api/ml", tags=["ml backends"])


def _gateway(request: Request) -> GatewayClient:
    return gateway_client(request.app)


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


Gateway = Annotated[GatewayClient, Depends(_gateway)]
Settings = Annotated[ApiSettings, Depends(_settings)]


@router.post("", status_code=201, response_model=MlBackendOut)
@router.post("/", status_code=201, response_model=MlBackendOut, include_in_schema=False)
async def create_backend(
    body: MlBackendCreate, session: SessionDep, gateway: Gateway, settings: Settings, _: CurrentUser
) -> MlBackendOut:
    """Check the backend through the gateway (/health, /setup) and store it only if that succeeds."""
    return MlBackendOut.of(await service.create_backend(session, gateway, settings, body))


@router.get("", response_model=list[MlBackendOut])
@router.get("/", response_model=list[MlBackendOut], include_in_schema=False)
async def list_backends(
    session: SessionDep,
    _: CurrentUser,
    project: Annotated[
        int | None, Query(ge=1, le=INT_MAX, description="Only this project's ML backends (project id).")
    ] = None,
    is_interactive: Annotated[
        bool | None,
        Query(description="Only backends used (true) or not used (false) for interactive pre-annotation."),
    ] = None,
) -> list[MlBackendOut]:
    backends = await service.list_backends(session, project, is_interactive)
    return [MlBackendOut.of(backend) for backend in backends]


@router.get("/{backend_id}", response_model=MlBackendOut)
@router.get("/{backend_id}/", response_model=MlBackendOut, include_in_schema=False)
async def get_backend(backend_id: MlBackendId, session: SessionDep, _: CurrentUser) -> MlBackendOut:
    return MlBackendOut.of(await service.get_backend(session, backend_id))


@router.patch("/{backend_id}", response_model=MlBackendOut)
@router.patch("/{backend_id}/", response_model=MlBackendOut, include_in_schema=False)
async def update_backend(
    backend_id: MlBackendId,
    body: MlBackendUpdate,
    session: SessionDep,
    gateway: Gateway,
    settings: Settings,
    _: CurrentUser,
) -> MlBackendOut:
    """Partial update; a changed URL or credential is re-checked and refused (nothing stored) if it fails."""
    return MlBackendOut.of(await service.update_backend(session, gateway, settings, backend_id, body))


@router.delete("/{backend_id}", status_code=204)
@router.delete("/{backend_id}/", status_code=204, include_in_schema=False)
async def delete_backend(backend_id: MlBackendId, session: SessionDep, _: CurrentUser) -> Response:
    await service.delete_backend(session, backend_id)
    return Response(status_code=204)


@router.post("/{backend_id}/validate", response_model=MlBackendOut)
@router.post("/{backend_id}/validate/", response_model=MlBackendOut, include_in_schema=False)
async def validate_backend(
    backend_id: MlBackendId, session: SessionDep, gateway: Gateway, settings: Settings, _: CurrentUser
) -> MlBackendOut:
    """Re-check now; the answer's ``state`` and ``error_message`` tell the outcome."""
    return MlBackendOut.of(await service.validate_backend(session, gateway, settings, backend_id))


@router.post(
    "/{backend_id}/interactive-annotating", response_model=InteractiveOut, response_model_exclude_none=True
)
@router.post(
    "/{backend_id}/interactive-annotating/",
    response_model=InteractiveOut,
    response_model_exclude_none=True,
    include_in_schema=False,
)
async def interactive_annotating(
    backend_id: MlBackendId, body: InteractiveRequest, session: SessionDep, gateway: Gateway, _: CurrentUser
) -> InteractiveOut:
    """Predict one task now, not stored: ``{"data": {result, score, model_version}}`` or ``{"errors"}``."""
    return await service.interactive_annotating(session, gateway, backend_id, body)


@router.get("/{backend_id}/versions", response_model=VersionsOut, response_model_exclude_none=True)
@router.get(
    "/{backend_id}/versions/",
    response_model=VersionsOut,
    response_model_exclude_none=True,
    include_in_schema=False,
)
async def versions(backend_id: MlBackendId, session: SessionDep, _: CurrentUser) -> VersionsOut:
    return await service.versions(session, backend_id)


@router.get("/{backend_id}/performance", response_model=PerformanceOut)
@router.get("/{backend_id}/performance/", response_model=PerformanceOut, include_in_schema=False)
async def backend_performance(backend_id: MlBackendId, session: SessionDep, _: CurrentUser) -> PerformanceOut:
    """The backend's model versions, oldest first, each with its prediction count and how well its
    predictions agreed with the first annotation made afterwards on the same task.

    Agreement per task: classifications (choices, rating, …) agree when the sets of
    (from_name, value) are equal (1 or 0); spans and boxes count as matched when a region of the other
    side with the same from_name and labels overlaps with IoU >= 0.5, scored as the matched share of
    all regions. Cost stays bounded at any project size: only the tasks of the project's 5,000 most
    recent annotations are compared, at most 1,000 per version (index-backed), and counts are
    index-only.
    """
    return await performance.performance(session, backend_id)


@router.post("/{backend_id}/predict", response_model=PredictStarted)
@router.post("/{backend_id}/predict/", response_model=PredictStarted, include_in_schema=False)
async def predict_all_tasks(
    backend_id: MlBackendId,
    request: Request,
    session: SessionDep,
    settings: Settings,
    _: CurrentUser,
    batch_size: Annotated[
        int | None,
        Query(
            ge=1,
            le=10_000,
            description="Tasks per /predict call for this run; default: the backend's batch_size.",
        ),
    ] = None,
) -> PredictStarted:
    """Predict every task of the backend's project in the background; poll ``GET /api/jobs/{job_id}``."""
    jobs = await jobs_service.predict_all_tasks(session, settings, backend_id, batch_size)
    return PredictStarted.of(jobs)
