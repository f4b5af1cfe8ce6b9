"""Bulk prediction jobs: created in the request's transaction, run by gateway workers chunk by chunk.

Postgres is the record: the job row and its chunk rows are written with the request and commit with
it; arq only carries "chunk N is ready" messages, sent after commit. A worker leases a chunk, predicts
it through the gateway and reports back; the report is applied in one transaction that flips the chunk
to done only once, so every prediction is stored exactly once however often a chunk is delivered.

A backend that dies mid-job fails the job's remaining tasks, each with the gateway's reason ("cannot
connect", then "circuit open" once its breaker opened), rather than keeping the job waiting for it: the
job ends in bounded time whether or not the backend ever returns, holds no worker slots or leases
meanwhile, and retrying is exact and cheap, since a new run skips every task that already has a
prediction of that model version and predicts only the failed ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api import counters
from services.annotation_api.auth.access import only_visible
from services.annotation_api.db import after_commit
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.jobs import repository as repo
from services.annotation_api.jobs.queue import REDIS_DOWN, ChunkQueue
from services.annotation_api.ml_backends.service import backend_spec, project_ref
from services.annotation_api.models import (
    Job,
    JobStatus,
    MlBackend,
    MlBackendState,
    Project,
    Task,
)
from services.annotation_api.settings import ApiSettings
from shared.gateway_contract import ChunkAck, ChunkHeartbeat, ChunkLease, ChunkReport, TaskError

log = logging.getLogger(__name__)

PREDICT_KIND = "predict"
MAX_CHUNK_ATTEMPTS = 5
"""A chunk whose worker died this many times is given up (its tasks failed), so a poison chunk ends."""


async def prediction_backends(
    session: AsyncSession, project_id: int, backend_ids: Sequence[int] | None
) -> list[MlBackend]:
    """The named backends of the project (404 if one is not), else all its connected ones (400 if none)."""
    stmt = select(MlBackend).where(MlBackend.project_id == project_id).order_by(MlBackend.id)
    if backend_ids:
        wanted = set(backend_ids)
        found = list((await session.execute(stmt.where(MlBackend.id.in_(wanted)))).scalars())
        missing = wanted - {backend.id for backend in found}
        if missing:
            raise NotFound(f"ML backend {min(missing)} not found in project {project_id}.")
        return found
    connected = stmt.where(MlBackend.state == MlBackendState.CONNECTED)
    found = list((await session.execute(connected)).scalars())
    if not found:
        raise BadRequest(f"Project {project_id} has no connected ML backend to predict with.")
    return found


async def start_prediction_jobs(
    session: AsyncSession,
    queue: ChunkQueue,
    *,
    project_id: int,
    task_ids: Select[Any],
    backends: Sequence[MlBackend],
    chunk_size: int,
    selection: dict[str, Any],
) -> list[Job]:
    """One job per backend over the same selection; chunks are enqueued once the request commits."""
    jobs: list[Job] = []
    to_enqueue: list[tuple[int, int]] = []
    for backend in backends:
        job = Job(
            kind=PREDICT_KIND,
            project_id=project_id,
            ml_backend_id=backend.id,
            model_version=backend.model_version,
            selection=selection,
            status=JobStatus.QUEUED,
        )
        session.add(job)
        await session.flush()
        chunks = await repo.insert_chunks(session, job.id, task_ids, chunk_size)
        job.total = sum(size for _, size in chunks)
        if not chunks:
            job.status = JobStatus.COMPLETED
            job.started_at = job.finished_at = func.now()
        to_enqueue.extend((chunk_id, 0) for chunk_id, _ in chunks)
        jobs.append(job)
    await session.flush()
    for job in jobs:
        await session.refresh(job)

    async def enqueue() -> None:
        try:
            await queue.enqueue(to_enqueue)
        except REDIS_DOWN as exc:
            log.warning(
                "%d chunks not enqueued (%s); the sweeper enqueues them once Redis is back",
                len(to_enqueue),
                exc,
            )

    after_commit(session, enqueue)
    return jobs


REPREDICT_SOURCE = "repredict_on_new_version"


async def repredict_unlabeled(
    session: AsyncSession,
    queue: ChunkQueue,
    settings: ApiSettings,
    backend: MlBackend,
    project: Project,
    selection: dict[str, Any],
) -> Job:
    """A backend's new model version predicts the project's unlabeled tasks (``repredict_on_new_version``).

    Shared by training and the periodic check, so a new version is followed the same way whoever saw
    it first; ``selection`` says which (it is stored on the job next to the source).
    """
    jobs = await start_prediction_jobs(
        session,
        queue,
        project_id=project.id,
        task_ids=select(Task.id).where(Task.project_id == project.id, Task.is_labeled.is_(False)),
        backends=[backend],
        chunk_size=settings.chunk_size,
        selection={"source": REPREDICT_SOURCE, **selection},
    )
    return jobs[0]


async def predict_all_tasks(
    session: AsyncSession,
    queue: ChunkQueue,
    settings: ApiSettings,
    backend_id: int,
    batch_size: int | None,
) -> list[Job]:
    """``POST /api/ml/{id}/predict``: every task of the backend's project, in the background."""
    backend = await session.get(MlBackend, backend_id)
    if backend is None:
        raise NotFound(f"ML backend {backend_id} not found.")
    selection: dict[str, Any] = {"source": "predict_all_tasks"}
    if batch_size is not None:
        selection["batch_size"] = batch_size
    return await start_prediction_jobs(
        session,
        queue,
        project_id=backend.project_id,
        task_ids=select(Task.id).where(Task.project_id == backend.project_id),
        backends=[backend],
        chunk_size=settings.chunk_size,
        selection=selection,
    )


async def get_job(session: AsyncSession, job_id: int) -> Job:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"Job {job_id} not found.")
    return job


async def list_jobs(session: AsyncSession, project_id: int | None, limit: int) -> list[Job]:
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    visible = only_visible(session, Job.project_id)
    if visible is not None:
        stmt = stmt.where(visible)
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    return list((await session.execute(stmt)).scalars())


async def cancel_job(session: AsyncSession, job_id: int) -> Job:
    """Cancel pending and leased chunks; a worker still busy with one has its report dropped."""
    job = await get_job(session, job_id)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        await repo.cancel_chunks(session, job_id)
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.CANCELLED, finished_at=func.now(), updated_at=func.now())
        )
    await session.refresh(job)
    return job


@dataclass(frozen=True)
class LeaseAnswer:
    """A lease plus its tasks as ready-made JSON (``tasks_json``), spliced in by the router."""

    lease: ChunkLease
    tasks_json: str = "[]"


async def lease_chunk(session: AsyncSession, chunk_id: int, lease_s: float) -> LeaseAnswer:
    await repo.commit_without_waiting_for_disk(session)
    leased = await repo.lease_chunk(session, chunk_id, lease_s)
    if leased is None:
        state = await repo.chunk_state(session, chunk_id)
        if state is None:
            raise NotFound(f"Chunk {chunk_id} not found.")
        job_id, status = state
        finished = "done" if status == "done" else "cancelled"
        return LeaseAnswer(ChunkLease(chunk_id=chunk_id, job_id=job_id, status=finished))
    job_id, task_ids = leased
    job = await get_job(session, job_id)
    backend = await session.get(MlBackend, job.ml_backend_id) if job.ml_backend_id else None
    if backend is None:
        await _fail_job(session, job, "The job's ML backend was deleted.")
        return LeaseAnswer(ChunkLease(chunk_id=chunk_id, job_id=job_id, status="cancelled"))
    project = await session.get(Project, job.project_id)
    assert project is not None  # the job row cascades with its project
    await repo.mark_job_running(session, job_id)
    count, tasks_json = await repo.tasks_to_predict(session, task_ids, backend.id, job.model_version or "")
    spec = backend_spec(backend)
    batch_size = job.selection.get("batch_size")
    if isinstance(batch_size, int) and batch_size > 0:
        spec.batch_size = batch_size
    lease = ChunkLease(
        chunk_id=chunk_id,
        job_id=job_id,
        status="leased",
        backend=spec,
        project=project_ref(project),
        skipped=len(task_ids) - count,
        lease_s=lease_s,
    )
    return LeaseAnswer(lease, tasks_json)


async def heartbeat(session: AsyncSession, chunk_id: int, lease_s: float) -> ChunkHeartbeat:
    """Extend a lease the worker still works on; tells a worker whose chunk was cancelled to stop."""
    if await repo.extend_lease(session, chunk_id, lease_s):
        return ChunkHeartbeat(status="leased")
    state = await repo.chunk_state(session, chunk_id)
    if state is None:
        raise NotFound(f"Chunk {chunk_id} not found.")
    return ChunkHeartbeat(status="done" if state[1] == "done" else "cancelled")


async def _fail_job(session: AsyncSession, job: Job, error: str) -> None:
    await repo.cancel_chunks(session, job.id)
    await session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status=JobStatus.FAILED, error=error, finished_at=func.now(), updated_at=func.now())
    )


async def complete_chunk(session: AsyncSession, chunk_id: int, report: ChunkReport) -> ChunkAck:
    """Apply a worker's report once: a second report for the same chunk changes nothing."""
    await repo.commit_without_waiting_for_disk(session)
    finished = await repo.finish_chunk(session, chunk_id)
    if finished is None:
        state = await repo.chunk_state(session, chunk_id)
        if state is None:
            raise NotFound(f"Chunk {chunk_id} not found.")
        job = await get_job(session, state[0])
        return ChunkAck(accepted=False, job_status=job.status)
    job_id, task_ids = finished
    job = await get_job(session, job_id)
    await _apply_report(session, job, task_ids, report)
    await session.refresh(job)
    return ChunkAck(accepted=True, job_status=job.status)


async def _apply_report(session: AsyncSession, job: Job, task_ids: list[int], report: ChunkReport) -> None:
    in_chunk = set(task_ids)
    predictions = [p for p in report.predictions if p.task_id in in_chunk]
    await repo.lock_tasks(session, [p.task_id for p in predictions])
    inserted = await repo.insert_predictions(
        session,
        project_id=job.project_id,
        backend_id=job.ml_backend_id,
        job_id=job.id,
        chunk_task_ids=task_ids,
        predictions=predictions,
    )
    predicted = set(inserted)
    errors = [e for e in report.errors if e.task_id in in_chunk and e.task_id not in predicted]
    failed = {e.task_id for e in errors}
    reported = {p.task_id for p in predictions} | failed
    skipped = await repo.count_skipped(
        session, task_ids, sorted(reported), job.ml_backend_id, job.model_version or ""
    )
    # Deltas, not a recount: the tasks are locked, so adding what was inserted is exact and cheaper.
    await repo.add_task_predictions(session, inserted)
    if inserted:
        await counters.add_to_project_counters(session, job.project_id, predictions=len(inserted))
    await repo.add_to_job(
        session,
        job.id,
        done=len(task_ids) - skipped - len(failed),
        predicted=len(predicted),
        skipped=skipped,
        failed=len(failed),
        errors=errors,
    )
    await repo.finish_job_if_done(session, job.id)


async def sweep(session: AsyncSession, lease_s: float, limit: int = 500) -> list[tuple[int, int]]:
    """Re-queue chunks whose lease ran out or whose queue entry was lost; give up on poison chunks.

    Returns the ``(chunk_id, attempt)`` pairs to enqueue once this transaction commits. SKIP LOCKED lets
    several API replicas sweep at once without taking the same chunk.
    """
    due = await repo.due_chunks(session, lease_s, limit)
    requeue: list[tuple[int, int]] = []
    for chunk_id, status, attempts in due:
        if status == "leased" and attempts >= MAX_CHUNK_ATTEMPTS:
            await _give_up(session, chunk_id, attempts)
        else:
            requeue.append((chunk_id, attempts))
    await repo.requeue(session, [chunk_id for chunk_id, _ in requeue])
    return requeue


async def _give_up(session: AsyncSession, chunk_id: int, attempts: int) -> None:
    finished = await repo.finish_chunk(session, chunk_id)
    if finished is None:
        return
    job_id, task_ids = finished
    job = await get_job(session, job_id)
    message = f"gave up after {attempts} attempts: the worker processing this chunk kept dying"
    log.warning("chunk %s of job %s: %s", chunk_id, job_id, message)
    report = ChunkReport(errors=[TaskError(task_id=task_id, message=message) for task_id in task_ids])
    await _apply_report(session, job, task_ids, report)
