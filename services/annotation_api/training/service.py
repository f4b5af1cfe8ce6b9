"""Training jobs: created by the request, run by a gateway worker, finished by the worker's report.

Label Studio answers ``/train`` with an empty 200 even when the backend failed; here the job records
the backend's answer, so a failure is visible with the backend's own message. After a successful
training call the worker re-checks the backend; a new model version is followed the way the periodic
check follows it (auto-update moves the backend, and the project when it showed the old version), and
with ``repredict_on_new_version`` the project's unlabeled tasks are predicted again with it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from arq import ArqRedis
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.db import after_commit
from services.annotation_api.errors import NotFound
from services.annotation_api.jobs.queue import ChunkQueue
from services.annotation_api.jobs.service import repredict_unlabeled
from services.annotation_api.ml_backends.schemas import extra_params_problem
from services.annotation_api.ml_backends.service import (
    apply_check_result,
    backend_access_token,
    backend_spec,
    get_backend,
    project_ref,
)
from services.annotation_api.models import Job, JobStatus, MlBackend, MlBackendState, Project
from services.annotation_api.outbox import project_payload
from services.annotation_api.settings import ApiSettings
from shared.gateway_contract import CheckBackendRequest, WebhookResult
from shared.jobs import TRAIN_BACKEND
from shared.learning_contract import TrainOutcome, TrainReport, TrainStart, train_job_id
from shared.logging import carried_context
from shared.protocol import WebhookEvent

log = logging.getLogger(__name__)

TRAIN_KIND = "train"
MAX_STORED_BODY = 20_000
"""Largest backend answer kept on the job, in bytes of JSON; longer answers are cut."""
# Redis lost the message if a queued job waits this long (a running one whose worker never reports is
# failed by the job watchdog, ``jobs/watchdog.py``).
_LOST_QUEUED = "30 seconds"


async def enqueue_training(pool: ArqRedis, job_id: int) -> None:
    await pool.enqueue_job(TRAIN_BACKEND, job_id, carried_context(), _job_id=train_job_id(job_id))


async def start_training(
    session: AsyncSession, queue: ChunkQueue, backend_id: int, use_ground_truth: bool
) -> Job:
    """Write the job; the worker is asked to run it once the request has committed."""
    backend = await get_backend(session, backend_id)
    job = Job(
        kind=TRAIN_KIND,
        project_id=backend.project_id,
        ml_backend_id=backend.id,
        model_version=backend.model_version,
        selection={"use_ground_truth": use_ground_truth},
        status=JobStatus.QUEUED,
        total=1,
    )
    session.add(job)
    await session.flush()
    await session.refresh(job)
    job_id = job.id

    async def enqueue() -> None:
        await enqueue_training(await queue.pool(), job_id)

    after_commit(session, enqueue)
    return job


async def begin(session: AsyncSession, settings: ApiSettings, job_id: int) -> TrainStart:
    """Take a queued training job for a worker: what to send, and how to re-check the backend after."""
    taken = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.kind == TRAIN_KIND, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=func.now(), updated_at=func.now())
        .returning(Job.ml_backend_id)
    )
    row = taken.one_or_none()
    if row is None:
        return TrainStart(go=False, job_id=job_id)
    backend = None if row[0] is None else await session.get(MlBackend, row[0], with_for_update=True)
    if backend is None:
        await _finish(session, job_id, JobStatus.FAILED, error="The ML backend was deleted.")
        return TrainStart(go=False, job_id=job_id)
    if problem := extra_params_problem(backend.extra_params):  # stored before the input check
        error = f"Training failed: the ML backend's extra_params {problem}; edit them (PATCH /api/ml/{backend.id})."
        await _finish(session, job_id, JobStatus.FAILED, error=error)
        return TrainStart(go=False, job_id=job_id)
    project = await session.get(Project, backend.project_id)
    assert project is not None  # the backend row references it
    backend.state = MlBackendState.TRAINING
    check = CheckBackendRequest(
        backend=backend_spec(backend),
        project=project_ref(project),
        hostname=settings.public_url,
        access_token=await backend_access_token(session, settings, backend),
    )
    payload = {"action": WebhookEvent.START_TRAINING.value, "project": project_payload(project)}
    return TrainStart(go=True, job_id=job_id, backend=check.backend, payload=payload, check=check)


def _stored_body(body: Any) -> Any:
    encoded = orjson.dumps(body)
    if len(encoded) <= MAX_STORED_BODY:
        return body
    return encoded[:MAX_STORED_BODY].decode("utf-8", "ignore") + "…"


def _failure_message(webhook: WebhookResult) -> str:
    if webhook.error:
        return f"Training failed: {webhook.error}"
    return f"Training failed: the backend answered {webhook.status_code}"


async def _finish(
    session: AsyncSession,
    job_id: int,
    status: JobStatus,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    model_version: str | None = None,
) -> None:
    """End the job; ``model_version``, when given, is the version the training produced."""
    versioned = {} if model_version is None else {"model_version": model_version}
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            **versioned,
            status=status,
            error=error,
            result=result,
            done=int(status == JobStatus.COMPLETED),
            failed=int(status == JobStatus.FAILED),
            finished_at=func.now(),
            updated_at=func.now(),
        )
    )


async def finish(
    session: AsyncSession, settings: ApiSettings, job_id: int, report: TrainReport
) -> TrainOutcome:
    """Record the backend's answer on the job and follow a new model version; a repeat is a no-op."""
    job = await session.get(Job, job_id, with_for_update=True)
    if job is None or job.kind != TRAIN_KIND:
        raise NotFound(f"Training job {job_id} not found.")
    # Locked like the periodic check locks it, so only one of them sees a new version as new.
    backend = (
        None
        if job.ml_backend_id is None
        else await session.get(MlBackend, job.ml_backend_id, with_for_update=True)
    )
    if job.status != JobStatus.RUNNING or backend is None:
        if backend is None:
            return TrainOutcome(job_status=job.status, model_version="", version_changed=False)
        if backend.state == MlBackendState.TRAINING:  # cancelled while training: it is idle again
            backend.state = MlBackendState.CONNECTED
        return TrainOutcome(job_status=job.status, model_version=backend.model_version, version_changed=False)
    webhook = report.webhook
    answer = {"status_code": webhook.status_code, "body": _stored_body(webhook.body)}
    if not webhook.ok:
        message = _failure_message(webhook)
        # The job carries the failure; the backend's state only says whether it could be reached.
        unreachable = webhook.status_code is None and not webhook.unsendable
        backend.state = MlBackendState.DISCONNECTED if unreachable else MlBackendState.CONNECTED
        await _finish(session, job_id, JobStatus.FAILED, error=message, result=answer)
        return TrainOutcome(
            job_status=JobStatus.FAILED, model_version=backend.model_version, version_changed=False
        )
    project = await session.get(Project, backend.project_id, with_for_update=True)
    assert project is not None
    old_version = backend.model_version
    if report.check is not None:
        await apply_check_result(session, backend, project, report.check)
    else:
        backend.state = MlBackendState.CONNECTED
    changed = backend.model_version != old_version
    result: dict[str, Any] = {
        **answer,
        "previous_model_version": old_version,
        "model_version": backend.model_version,
    }
    if report.check is not None and not report.check.ok:
        result["check_error"] = report.check.error
    repredict_job_id = None
    if changed and project.repredict_on_new_version:
        await session.refresh(project)
        repredicted = await repredict_unlabeled(
            session, settings, backend, project, {"after_training_job": job_id}
        )
        repredict_job_id = repredicted.id
        result["repredict_job_id"] = repredict_job_id
    # The job names the version training produced, like the backend record and its next predictions.
    trained = report.check.model_version if report.check is not None and report.check.ok else None
    await _finish(
        session, job_id, JobStatus.COMPLETED, result=result, model_version=trained or backend.model_version
    )
    return TrainOutcome(
        job_status=JobStatus.COMPLETED,
        model_version=backend.model_version,
        version_changed=changed,
        repredict_job_id=repredict_job_id,
    )


async def lost_training_jobs(session: AsyncSession) -> list[int]:
    """Queued training jobs Redis seems to have lost (to enqueue again)."""
    rows = await session.execute(
        text(
            f"""
            SELECT id FROM job
            WHERE kind = '{TRAIN_KIND}' AND status = 'queued'
              AND created_at < now() - interval '{_LOST_QUEUED}'
            ORDER BY id LIMIT 100
            """
        )
    )
    return list(rows.scalars())
