"""``POST /api/ml/{id}/train`` (Label Studio path, answered with a job) and the worker's internal
``/internal/train-jobs/{id}/start|finish`` (service token only)."""

from __future__ import annotations

from fastapi import Depends, Request

from services.annotation_api.auth.dependencies import CurrentUser, service_caller
from services.annotation_api.db import SessionDep
from services.annotation_api.ids import JobId, MlBackendId
from services.annotation_api.jobs.background import chunk_queue
from services.annotation_api.jobs.schemas import JobOut
from services.annotation_api.routing import PrefixRouter
from services.annotation_api.training import service
from services.annotation_api.training.schemas import TrainRequest, TrainStarted
from shared.learning_contract import TrainOutcome, TrainReport, TrainStart

router = PrefixRouter(prefix="/api/ml", tags=["ml"])
internal = PrefixRouter(
    prefix="/internal/train-jobs", tags=["internal"], dependencies=[Depends(service_caller)]
)


@router.post("/{backend_id}/train", response_model=TrainStarted, status_code=201)
@router.post("/{backend_id}/train/", response_model=TrainStarted, status_code=201, include_in_schema=False)
async def train(
    backend_id: MlBackendId,
    request: Request,
    session: SessionDep,
    _: CurrentUser,
    body: TrainRequest | None = None,
) -> TrainStarted:
    """Start training: the backend gets START_TRAINING in the background; follow the returned job."""
    use_ground_truth = body.use_ground_truth if body is not None else False
    job = await service.start_training(session, chunk_queue(request.app), backend_id, use_ground_truth)
    return TrainStarted.of_job(JobOut.of(job))


@internal.post("/{job_id}/start", response_model=TrainStart)
async def start(job_id: JobId, request: Request, session: SessionDep) -> TrainStart:
    """Take the queued job: the START_TRAINING body and how to reach and re-check the backend."""
    return await service.begin(session, request.app.state.settings, job_id)


@internal.post("/{job_id}/finish", response_model=TrainOutcome)
async def finish(job_id: JobId, report: TrainReport, request: Request, session: SessionDep) -> TrainOutcome:
    """Record the backend's answer and the re-check; follow a new model version."""
    settings = request.app.state.settings
    return await service.finish(session, settings, job_id, report)
