"""Bulk prediction jobs: created in the request's transaction, run by gateway workers chunk by chunk.

Postgres is the record: the job row (with its selection) commits with the request; the API's job runner
(``runner.py``) then plans its chunk rows in bounded batches, each committed with the cursor, and arq
only carries "chunk N is ready" messages, sent after each batch commits. A worker leases a chunk, predicts
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Select, func, select, true, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.auth.access import only_visible
from services.annotation_api.data_manager.selection import TaskSelection
from services.annotation_api.db import (
    after_commit,
    driver_connection,
    raw_connection,
)
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.jobs import dedupe, runner
from services.annotation_api.jobs import repository as repo
from services.annotation_api.jobs.queue import REDIS_DOWN, ChunkQueue
from services.annotation_api.jobs.schemas import JobOut, ParsedReport, Unfolded
from services.annotation_api.ml_backends.service import (
    backend_spec,
    follow_model_version,
    project_ref,
    record_versions,
)
from services.annotation_api.models import (
    Job,
    JobChunk,
    JobStatus,
    MlBackend,
    MlBackendState,
    Project,
    Task,
)
from services.annotation_api.settings import ApiSettings
from shared.gateway_contract import (
    ChunkAck,
    ChunkHeartbeat,
    ChunkLease,
    ChunkRelease,
    TaskError,
)
from shared.logging import carried_context
from shared.metrics import TASKS_FAILED, TASKS_PREDICTED, backend_label

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
    *,
    project_id: int,
    selection: TaskSelection,
    estimate: int,
    backends: Sequence[MlBackend],
    chunk_size: int,
    summary: dict[str, Any],
    unlabeled: bool = False,
) -> list[Job]:
    """One job per backend over the same selection (``unlabeled``: only its unlabeled tasks); a backend
    already running an identical job answers with that one instead (``dedupe``).

    Nothing here grows with the selection: the job runner plans the chunks once this commits, unless
    the selection has at most ``job_inline_tasks`` tasks. ``estimate`` is the selection's size as the
    counters tell it, the ``total`` until planning ends.
    """
    params = {"selection": selection.to_params(), "unlabeled": unlabeled, "chunk_size": chunk_size}
    joined: dict[int, Job] = {}
    for backend in sorted(backends, key=lambda b: b.id):
        await dedupe.lock_job_creation(session, backend.id)
        twin = await dedupe.running_twin(session, backend, project_id, PREDICT_KIND, params, summary)
        if twin is not None:
            joined[backend.id] = twin
    jobs = [
        Job(
            kind=PREDICT_KIND,
            project_id=project_id,
            ml_backend_id=backend.id,
            model_version=backend.model_version,
            selection=summary,
            status=JobStatus.QUEUED,
            total=estimate,
            step=runner.PLAN,
            # The action's trace and request id: every enqueue of the job's chunks, re-queues included,
            # carries them (kept out of ``params`` above, which identical requests are compared by).
            params={**params, "carried": carried_context()},
        )
        for backend in backends
        if backend.id not in joined
    ]
    session.add_all(jobs)
    await session.flush()
    for job in jobs:
        await session.refresh(job)
    app = session.info.get("app")
    if app is not None and estimate <= app.state.settings.job_inline_tasks:
        # A small selection is planned here (bounded work): its chunks are queued as this commits.
        for job in jobs:
            ctx = runner.StepContext(session, job, app.state.settings, app.state.chunk_queue)
            job.status, job.started_at = JobStatus.RUNNING, func.now()
            await _plan_step(ctx)
        await session.flush()
        for job in jobs:
            await session.refresh(job)
    await runner.wake(session)
    started = iter(jobs)
    return [joined[backend.id] if backend.id in joined else next(started) for backend in backends]


def _enqueue_after_commit(
    session: AsyncSession, queue: ChunkQueue, chunk_ids: list[int], carried: dict[str, str] | None
) -> None:
    async def enqueue() -> None:
        try:
            await queue.enqueue([(chunk_id, 0) for chunk_id in chunk_ids], carried)
        except REDIS_DOWN as exc:
            log.warning(
                "%d chunks not enqueued (%s); the sweeper enqueues them once Redis is back",
                len(chunk_ids),
                exc,
            )

    after_commit(session, enqueue)


async def _plan_step(ctx: runner.StepContext) -> bool:
    """Chunk the next window of the selection (a whole number of chunks); True once all are planned."""
    job, session = ctx.job, ctx.session
    assert job.project_id is not None  # a project delete cancels its jobs first
    params = job.params
    size = int(params["chunk_size"])
    window = max(size, ctx.batch_size // size * size)
    selection = TaskSelection.from_params(session, job.project_id, params["selection"])
    stmt = selection.ids_above(ctx.cursor)
    if params.get("unlabeled"):
        stmt = stmt.where(Task.is_labeled.is_(False))
    made = await repo.plan_chunks(session, job.id, stmt.limit(window), size, int(params.get("chunks", 0)))
    planned = int(params.get("planned", 0)) + made.tasks
    if made.tasks:
        job.params = {
            **params,
            "cursor": made.last_task_id,
            "planned": planned,
            "chunks": int(params.get("chunks", 0)) + len(made.chunk_ids),
        }
        job.total = max(job.total, planned)
        _enqueue_after_commit(session, ctx.queue, made.chunk_ids, params.get("carried"))
    if made.tasks == window:
        return False
    job.step = None
    job.total = planned
    if planned == 0:
        job.status = JobStatus.COMPLETED
        job.finished_at = func.now()
    else:
        await session.flush()
        # The workers may have finished every chunk.
        await repo.finish_job_if_done(await driver_connection(session), job.id)
    return True


runner.register(PREDICT_KIND, runner.Runnable(step=_plan_step))


REPREDICT_SOURCE = "repredict_on_new_version"


async def repredict_unlabeled(
    session: AsyncSession,
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
        project_id=project.id,
        selection=TaskSelection(session, project.id, all=True),
        estimate=project.task_number - project.num_tasks_with_annotations,
        backends=[backend],
        chunk_size=settings.chunk_size,
        summary={"source": REPREDICT_SOURCE, **selection},
        unlabeled=True,
    )
    return jobs[0]


async def predict_all_tasks(
    session: AsyncSession,
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
    project = await session.get(Project, backend.project_id)
    assert project is not None  # a backend cascades with its project
    return await start_prediction_jobs(
        session,
        project_id=backend.project_id,
        selection=TaskSelection(session, backend.project_id, all=True),
        estimate=project.task_number,
        backends=[backend],
        chunk_size=settings.chunk_size,
        summary=selection,
    )


async def get_job(session: AsyncSession, job_id: int) -> Job:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"Job {job_id} not found.")
    return job


def _unfolded_columns() -> Select[Any]:
    """Jobs with the counts of their reported, unfolded chunks, in one statement (one snapshot): a fold
    committing between two reads would otherwise count a chunk twice or not at all."""
    u = (
        select(
            func.coalesce(func.sum(JobChunk.done), 0).label("done"),
            func.coalesce(func.sum(JobChunk.predicted), 0).label("predicted"),
            func.coalesce(func.sum(JobChunk.skipped), 0).label("skipped"),
            func.coalesce(func.sum(JobChunk.failed), 0).label("failed"),
            func.jsonb_agg(aggregate_order_by(JobChunk.errors, JobChunk.id)).label("errors"),
        )
        .where(JobChunk.job_id == Job.id, JobChunk.folded.is_(False))
        .lateral("unfolded")
    )
    return (
        select(Job, u.c.done, u.c.predicted, u.c.skipped, u.c.failed, u.c.errors)
        .outerjoin(u, true())
        .execution_options(populate_existing=True)
    )


async def job_views(session: AsyncSession, stmt: Select[Any]) -> list[JobOut]:
    return [
        JobOut.of(
            job,
            Unfolded(
                int(done),
                int(predicted),
                int(skipped),
                int(failed),
                [error for chunk_errors in errors or () for error in chunk_errors],
            ),
        )
        for job, done, predicted, skipped, failed, errors in (await session.execute(stmt)).all()
    ]


async def get_job_view(session: AsyncSession, job_id: int) -> JobOut:
    views = await job_views(session, _unfolded_columns().where(Job.id == job_id))
    if not views:
        raise NotFound(f"Job {job_id} not found.")
    return views[0]


async def list_jobs(session: AsyncSession, project_id: int | None, limit: int) -> list[JobOut]:
    stmt = _unfolded_columns().order_by(Job.id.desc()).limit(limit)
    visible = only_visible(session, Job.project_id)
    if visible is not None:
        stmt = stmt.where(visible)
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    return await job_views(session, stmt)


async def cancel_job(session: AsyncSession, job_id: int) -> JobOut:
    """Cancel pending and leased chunks; a worker still busy with one has its report dropped."""
    job = await get_job(session, job_id)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        if job.step is not None:
            await runner.cancel(session, job)
        await repo.cancel_chunks(session, job_id)
        await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
            .values(status=JobStatus.CANCELLED, finished_at=func.now(), updated_at=func.now())
        )
    return await get_job_view(session, job_id)


@dataclass(frozen=True)
class LeaseAnswer:
    """A lease plus its tasks as ready-made JSON (``tasks_json``), spliced in by the router."""

    lease: ChunkLease
    tasks_json: str = "[]"


async def lease_chunk(session: AsyncSession, chunk_id: int, lease_s: float) -> LeaseAnswer:
    conn = await repo.begin_chunk_transaction(session)
    leased = await repo.lease_chunk(conn, chunk_id, lease_s)
    if leased is None:
        state = await repo.chunk_state(session, chunk_id)
        if state is None:
            raise NotFound(f"Chunk {chunk_id} not found.")
        job_id, status = state
        finished = "done" if status == "done" else "cancelled"
        return LeaseAnswer(ChunkLease(chunk_id=chunk_id, job_id=job_id, status=finished))
    job = leased.job
    found = None
    if job.ml_backend_id is not None:
        found = (
            await session.execute(
                select(MlBackend, Project)
                .join(Project, Project.id == MlBackend.project_id)
                .where(MlBackend.id == job.ml_backend_id)
            )
        ).first()
    if found is None:
        await _fail_job(session, job.id, "The job's ML backend was deleted.")
        return LeaseAnswer(ChunkLease(chunk_id=chunk_id, job_id=job.id, status="cancelled"))
    backend, project = found
    task_ids = leased.task_ids
    to_send = await dedupe.unclaimed(conn, job.id, backend.id, job.model_version, PREDICT_KIND, task_ids)
    count, tasks_json = await repo.tasks_to_predict(conn, to_send, backend.id, job.model_version or "")
    spec = backend_spec(backend)
    if leased.batch_size is not None:
        spec.batch_size = leased.batch_size
    lease = ChunkLease(
        chunk_id=chunk_id,
        job_id=job.id,
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


async def release_chunk(session: AsyncSession, chunk_id: int) -> ChunkRelease:
    """Hand a leased chunk back (its worker is shutting down) without counting the attempt it used.

    The worker then leaves its arq job on the queue for another worker (arq ``Retry``), under the job id
    the sweeper would use for this attempt, so the chunk is neither lost nor queued twice.
    """
    if await repo.release_chunk(session, chunk_id) is None:
        if await repo.chunk_state(session, chunk_id) is None:
            raise NotFound(f"Chunk {chunk_id} not found.")
        return ChunkRelease(released=False)
    return ChunkRelease(released=True)


async def _fail_job(session: AsyncSession, job_id: int, error: str) -> None:
    await repo.cancel_chunks(session, job_id)
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status=JobStatus.FAILED, error=error, finished_at=func.now(), updated_at=func.now())
    )


async def complete_chunk(session: AsyncSession, chunk_id: int, report: ParsedReport) -> ChunkAck:
    """Apply a worker's report once: a second report for the same chunk changes nothing."""
    conn = await repo.begin_chunk_transaction(session)
    finished = await repo.finish_chunk(conn, chunk_id)
    if finished is None:
        state = await repo.chunk_state(session, chunk_id)
        if state is None:
            raise NotFound(f"Chunk {chunk_id} not found.")
        return ChunkAck(accepted=False, job_status=(await get_job(session, state[0])).status)
    chunk_job, task_ids = finished
    end = await _apply_report(session, conn, chunk_job, chunk_id, task_ids, report)
    if end.status is None and 0 < end.open_chunks <= RECHECK_OPEN_CHUNKS:
        _finish_after_commit(session, chunk_job.id)
    return ChunkAck(accepted=True, job_status=end.status or chunk_job.status)


RECHECK_OPEN_CHUNKS = 64
"""A report that leaves at most this many chunks of its job open checks again after committing.

Reports share no row, so the last few committing together may each see the others still open; checking
again once committed, in a transaction of its own, lets the last one see them all done. Earlier in a job
the check would be wasted (a connection and a statement per chunk): more than this many reports committing within
one commit's instant does not happen with the ``/internal`` connections an API process has, and the
sweeper finishes such a job anyway (``unfinished_done_jobs``, every ``sweep_interval_s``)."""


def _finish_after_commit(session: AsyncSession, job_id: int) -> None:
    app = session.info.get("app")
    if app is None:
        return

    async def finish() -> None:
        async with app.state.internal_engine.connect() as connection:
            # One statement, its own transaction (autocommit): nothing else to do in it.
            await repo.finish_job_if_done(await raw_connection(connection), job_id)

    after_commit(session, finish)


async def _apply_report(
    session: AsyncSession,
    conn: asyncpg.Connection,
    job: repo.ChunkJob,
    chunk_id: int,
    task_ids: list[int],
    report: ParsedReport,
) -> repo.JobEnd:
    """Store the report's predictions and counts on the chunk (flipped to done by the caller), and
    finish the job if that was its last chunk."""
    assert job.project_id is not None  # a project delete cancels the chunks before the project goes
    in_chunk = set(task_ids)
    predictions = report.predictions.of_tasks(in_chunk)
    # A backend deleted meanwhile leaves its predictions with no backend, as it does its stored ones.
    backend_id = job.ml_backend_id
    if backend_id is not None and predictions and not await repo.hold_backend(conn, backend_id):
        backend_id = None
    await repo.lock_tasks(conn, predictions.task_ids)
    inserted = await repo.insert_predictions(
        conn,
        project_id=job.project_id,
        backend_id=backend_id,
        job_id=job.id,
        chunk_task_ids=task_ids,
        predictions=predictions,
    )
    predicted = set(inserted)
    if backend_id is not None:
        # The version a backend predicts with can run ahead of the one its last check saw.
        await record_versions(session, backend_id, predictions.versions)
    errors = [e for e in report.errors if e.task_id in in_chunk and e.task_id not in predicted]
    failed = {e.task_id for e in errors}
    reported_ids = set(predictions.task_ids)
    reported = reported_ids | failed
    # A prediction not stored because the task already had it (or is gone) is a skip, not new work.
    already = reported_ids - predicted - failed
    skipped = len(already) + await _unsent(conn, job, task_ids, reported, report)
    # The job's and the project's counters move later, in batches (repo.fold_chunks): no hot row.
    await repo.record_on_chunk(
        conn,
        chunk_id,
        done=len(task_ids) - skipped - len(failed),
        predicted=len(predicted),
        skipped=skipped,
        failed=len(failed),
        predictions=len(inserted),
        errors=errors,
    )
    await _follow_reported_version(session, job, report)
    after_commit(session, _count_tasks(job.ml_backend_id, len(predicted), len(failed)))
    return await repo.finish_job_if_done(conn, job.id, count_open_up_to=RECHECK_OPEN_CHUNKS + 1)


async def _unsent(
    conn: asyncpg.Connection,
    job: repo.ChunkJob,
    task_ids: list[int],
    reported: set[int],
    report: ParsedReport,
) -> int:
    """Tasks of the chunk its lease left out: already predicted, deleted, or claimed by another job.

    A worker names the tasks it was sent (``report.sent``); without that (a report the sweeper makes up)
    they are the unreported ones that now have this version's prediction or are gone.
    """
    if report.sent is not None:
        return len(set(task_ids) - set(report.sent))
    return await repo.count_skipped(
        conn, task_ids, sorted(reported), job.ml_backend_id, job.model_version or ""
    )


def _count_tasks(backend_id: int | None, predicted: int, failed: int) -> Callable[[], Awaitable[None]]:
    """Counts a report's tasks in the metrics once its transaction committed (never for a rollback)."""

    async def count() -> None:
        backend = backend_label(backend_id)
        TASKS_PREDICTED.labels(backend).inc(predicted)
        TASKS_FAILED.labels(backend).inc(failed)

    return count


async def _follow_reported_version(session: AsyncSession, job: repo.ChunkJob, report: ParsedReport) -> None:
    """The version the backend predicted with becomes the job's and (with auto-update) the backend's,
    in the transaction that stores those predictions, so the three never disagree when someone looks.

    Without this the job kept the version known when it started, while a backend that had learned since
    tagged its predictions with a newer one; a re-run then skipped nothing (it looked for the old one).
    """
    version = report.model_version
    if not version or version == job.model_version or not report.predictions:
        return
    await session.execute(update(Job).where(Job.id == job.id).values(model_version=version))
    backend = await session.get(MlBackend, job.ml_backend_id) if job.ml_backend_id else None
    if backend is not None:
        await follow_model_version(session, backend, backend.project_id, version)
        await session.flush()


@dataclass(frozen=True)
class Requeue:
    """Chunks to enqueue again, with the trace context of the job they belong to."""

    chunks: list[tuple[int, int]]
    carried: dict[str, str] | None


async def sweep(session: AsyncSession, lease_s: float, limit: int = 500) -> list[Requeue]:
    """Re-queue chunks whose lease ran out or whose queue entry was lost; give up on poison chunks.

    Returns the ``(chunk_id, attempt)`` pairs to enqueue once this transaction commits, grouped by job so
    each re-queued chunk continues its job's trace. SKIP LOCKED lets several API replicas sweep at once
    without taking the same chunk.
    """
    due = await repo.due_chunks(session, lease_s, limit)
    requeue: list[tuple[int, int]] = []
    for chunk_id, status, attempts in due:
        if status == "leased" and attempts >= MAX_CHUNK_ATTEMPTS:
            await _give_up(session, chunk_id, attempts)
        else:
            requeue.append((chunk_id, attempts))
    await repo.requeue(session, [chunk_id for chunk_id, _ in requeue])
    for job_id in await repo.unfinished_done_jobs(session, limit):
        await repo.finish_job_if_done(await driver_connection(session), job_id)
    return await _by_job(session, requeue)


async def _by_job(session: AsyncSession, chunks: list[tuple[int, int]]) -> list[Requeue]:
    """Group chunks by their job, each group with the trace context the job was created in."""
    if not chunks:
        return []
    rows = await session.execute(
        select(JobChunk.id, JobChunk.job_id, Job.params["carried"])
        .join(Job, Job.id == JobChunk.job_id)
        .where(JobChunk.id.in_([chunk_id for chunk_id, _ in chunks]))
    )
    job_of: dict[int, int] = {}
    carried_of: dict[int, dict[str, str] | None] = {}
    for chunk_id, job_id, carried in rows:
        job_of[chunk_id] = job_id
        carried_of[job_id] = carried
    groups: dict[int | None, list[tuple[int, int]]] = {}
    for chunk_id, attempt in chunks:
        groups.setdefault(job_of.get(chunk_id), []).append((chunk_id, attempt))
    return [Requeue(group, carried_of.get(job_id) if job_id else None) for job_id, group in groups.items()]


async def _give_up(session: AsyncSession, chunk_id: int, attempts: int) -> None:
    conn = await driver_connection(session)
    finished = await repo.finish_chunk(conn, chunk_id)
    if finished is None:
        return
    job, task_ids = finished
    message = f"gave up after {attempts} attempts: the worker processing this chunk kept dying"
    log.warning("chunk %s of job %s: %s", chunk_id, job.id, message)
    report = ParsedReport(errors=[TaskError(task_id=task_id, message=message) for task_id in task_ids])
    await _apply_report(session, conn, job, chunk_id, task_ids, report)
