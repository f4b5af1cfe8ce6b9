"""The SQL of bulk jobs: chunking a selection, leasing, exactly-once completion, sweeping.

Every statement is set-based: a planning batch is one statement that windows the selection and inserts its
chunk rows, and a finished chunk is a handful of statements whatever its size.

The per-chunk statements find tasks and predictions by task id only, in ``MATERIALIZED`` CTEs, and compare
project, backend and version outside them. Given ``ml_backend_id = :backend`` or ``project_id = :project``
next to the task ids, the planner estimated a new backend's or project's rows from statistics taken before
it existed (one row, whatever the truth) and chose to scan all of them for every task of every chunk: with
a database with history, storing a chunk of 500 predictions took 1-3 s instead of 50 ms (issue 12).

The statements of a lease and a report (every bulk-predicted task passes through them) run on the
session's asyncpg connection (``db.driver_connection``), inside its transaction, and read the chunk's job
with the chunk instead of loading it through the ORM: through SQLAlchemy each statement cost the API
~130 µs of CPU against asyncpg's ~45, and a chunk ran about thirty of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy import BigInteger, Select, func, insert, literal, select, text, true, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.db import INDEX_PLANS_KEPT, driver_connection, scanning_in_index_order
from services.annotation_api.jobs.schemas import RESULT_SEPARATOR, ReportedRows
from services.annotation_api.models import JobChunk
from shared.gateway_contract import TaskError

ERRORS_SAMPLE_MAX = 50


@dataclass(frozen=True)
class Planned:
    """What one planning step made: its chunk rows, and the window of ids they cover."""

    chunk_ids: list[int]
    """Ascending."""
    tasks: int
    last_task_id: int | None


def _plan_chunks_statement(job_id: int, window: Select[int], size: int, first_seq: int) -> Select[Any]:
    """The window's ids aggregated once, in order, and cut into runs of ``size`` by array slices.

    Numbering every id with ``row_number()`` and grouping by ``(n - 1) / size`` sorted the window twice:
    with the TOAST compression of the chunk arrays (see migration ``0013``) it cost Postgres ~2 µs of
    CPU per planned task, the slices ~0.4 (bench/README).
    """
    win = window.cte("win")
    ordered = type_coerce(func.array_agg(aggregate_order_by(win.c.id, win.c.id)), ARRAY(BigInteger))
    agg = select(ordered.label("ids")).cte("agg")
    last_run = (func.cardinality(agg.c.ids) - 1).self_group().op("/")(size)  # integer division; NULL: no ids
    runs = func.generate_series(0, last_run).table_valued("run").render_derived(name="runs")
    run = runs.c.run
    rows = select(
        literal(job_id),
        literal(first_seq) + run,
        agg.c.ids[run * size + 1 : (run + 1) * size],
        literal("pending"),
        func.now(),
    ).select_from(agg.join(runs, true()))
    made = (
        insert(JobChunk)
        .from_select(["job_id", "seq", "task_ids", "status", "enqueued_at"], rows, include_defaults=False)
        .returning(JobChunk.id)
        .cte("made")
    )
    return select(
        select(func.array_agg(made.c.id)).scalar_subquery(),
        func.coalesce(func.cardinality(agg.c.ids), 0),
        agg.c.ids[func.cardinality(agg.c.ids)],
    ).select_from(agg)


async def plan_chunks(
    session: AsyncSession, job_id: int, window: Select[int], size: int, first_seq: int
) -> Planned:
    """Chunk rows of ``size`` consecutive ids for the ids ``window`` selects (in id order), numbered from
    ``first_seq``, in one statement read in index order (``db.scanning_in_index_order``): the ids stay in Postgres. Read into the API and sent back as an array,
    they cost the ``/internal`` API ~1 µs of CPU per planned task."""
    async with scanning_in_index_order(session):
        row = (await session.execute(_plan_chunks_statement(job_id, window, size, first_seq))).one()
    return Planned(sorted(row[0] or ()), int(row[1]), None if row[2] is None else int(row[2]))


_CHUNK_SETTINGS = text(f"SELECT set_config('synchronous_commit', 'off', true), {INDEX_PLANS_KEPT}")


async def begin_chunk_transaction(session: AsyncSession) -> asyncpg.Connection:
    """Settings for this lease or report transaction only; the connection its statements run on.

    ``synchronous_commit = off``: every chunk commit touches the same job and project rows, so commits
    queue behind each other's WAL flush; without the wait they take microseconds. It is safe here: a crash
    can only lose the last few commits whole (never half of one), and a lost lease or completion leaves the
    chunk leased with a lease that runs out, so the sweeper has it predicted and stored again, exactly once.

    ``enable_seqscan = off``: every statement here looks rows up by a chunk's ids, for which an index is
    right at any table size. A plan made while a table was empty — after a delete job emptied and vacuumed
    it — is a sequential scan that costs nothing then; kept as the statement's cached plan, it read the whole
    growing table once per chunk, quadratic in the job (2× slower bulk prediction after deletes).

    ``plan_cache_mode = auto``: so these statements may keep a generic plan, which ``enable_seqscan = off``
    makes safe at any table size, instead of being planned again at every execution as the connection's
    ``force_custom_plan`` has it (``db.PLAN_EACH_EXECUTION``, for the API's other statements). Planning
    them was 11-15 µs of the 43-47 µs Postgres spent per predicted task (``bench/README.md``).
    """
    await session.execute(_CHUNK_SETTINGS)
    return await driver_connection(session)


@dataclass(frozen=True)
class ChunkJob:
    """The job of a chunk, as the lease and report statements read it along with the chunk."""

    id: int
    project_id: int | None
    ml_backend_id: int | None
    model_version: str | None
    status: str


@dataclass(frozen=True)
class LeasedChunk:
    job: ChunkJob
    task_ids: list[int]
    batch_size: int | None
    """The job's own batch size for the backend (the data manager's ``batch_size``), if it has one."""


# The lease, its job marked running (the first lease only) and read, in one statement.
_LEASE = """
    WITH leased AS (
        UPDATE job_chunk
        SET status = 'leased', attempts = attempts + 1,
            lease_expires_at = now() + make_interval(secs => $2)
        WHERE id = $1 AND status IN ('pending', 'leased')
        RETURNING job_id, task_ids
    ),
    running AS (
        UPDATE job SET status = 'running', started_at = COALESCE(started_at, now()), updated_at = now()
        WHERE id = (SELECT job_id FROM leased) AND status = 'queued'
        RETURNING status
    )
    SELECT l.task_ids, j.id, j.project_id, j.ml_backend_id, j.model_version,
           COALESCE((SELECT status FROM running), j.status), (j.selection -> 'batch_size')::text
    FROM leased l JOIN job j ON j.id = l.job_id
"""


async def lease_chunk(conn: asyncpg.Connection, chunk_id: int, lease_s: float) -> LeasedChunk | None:
    """Lease the chunk (again, if its lease ran out); None when it is done or cancelled."""
    row = await conn.fetchrow(_LEASE, chunk_id, lease_s)
    if row is None:
        return None
    batch_size = orjson.loads(row[6]) if row[6] is not None else None
    return LeasedChunk(
        job=ChunkJob(*row[1:6]),
        task_ids=list(row[0]),
        batch_size=batch_size if isinstance(batch_size, int) and batch_size > 0 else None,
    )


_RELEASE = text(
    """
    UPDATE job_chunk
    SET status = 'pending', attempts = GREATEST(attempts - 1, 0), lease_expires_at = NULL,
        enqueued_at = now()
    WHERE id = :chunk AND status = 'leased'
    RETURNING attempts
    """
)


async def release_chunk(session: AsyncSession, chunk_id: int) -> int | None:
    """Back to pending with the attempt given back; the attempt count, or None if it was not leased.

    ``enqueued_at = now()``: the chunk is still on the queue (its worker left the job there).
    """
    row = (await session.execute(_RELEASE, {"chunk": chunk_id})).first()
    return None if row is None else int(row[0])


_EXTEND_LEASE = text(
    """
    UPDATE job_chunk SET lease_expires_at = now() + make_interval(secs => :lease_s)
    WHERE id = :chunk AND status = 'leased'
    RETURNING status
    """
)


async def extend_lease(session: AsyncSession, chunk_id: int, lease_s: float) -> bool:
    row = (await session.execute(_EXTEND_LEASE, {"chunk": chunk_id, "lease_s": lease_s})).first()
    return row is not None


async def chunk_state(session: AsyncSession, chunk_id: int) -> tuple[int, str] | None:
    row = (
        await session.execute(select(JobChunk.job_id, JobChunk.status).where(JobChunk.id == chunk_id))
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


def number_list(values: list[int] | list[float | None]) -> str:
    """Numbers as one text parameter, ``1,2,3`` (``null`` for None), which the statement splits.

    asyncpg encodes a ``bigint[]`` or ``float8[]`` parameter at ~0.2-0.3 µs of the API's CPU per element,
    a ``text[]`` at ~0.4-0.6 µs (its per-element checks); orjson writes this text at a small fraction of that, and
    Postgres splits and casts it at about the cost of reading the binary array (``make bench-params``)."""
    return orjson.dumps(values)[1:-1].decode()


# The tasks leave as one JSON text built by Postgres: the API never decodes and re-encodes task data.
_TASKS_TO_PREDICT = """
    WITH has AS MATERIALIZED (
        SELECT task_id, ml_backend_id, model_version FROM prediction
        WHERE task_id = ANY(string_to_array($1, ',')::bigint[])
    )
    SELECT count(*),
           COALESCE(
               json_agg(
                   json_build_object('id', t.id, 'data', t.data, 'meta', t.meta, 'project', t.project_id)
                   ORDER BY t.id
               ),
               '[]'
           )::text
    FROM task t
    WHERE t.id = ANY(string_to_array($1, ',')::bigint[])
      AND NOT EXISTS (
          SELECT 1 FROM has p
          WHERE p.task_id = t.id AND p.ml_backend_id = $2 AND p.model_version = $3
      )
"""


async def tasks_to_predict(
    conn: asyncpg.Connection, task_ids: list[int], backend_id: int, version: str
) -> tuple[int, str]:
    """``(count, JSON array)`` of the chunk's tasks that still exist and lack this backend's version."""
    row = await conn.fetchrow(_TASKS_TO_PREDICT, number_list(task_ids), backend_id, version)
    assert row is not None  # an aggregate
    return int(row[0]), str(row[1])


# The chunk flipped to done, read with its job.
_FINISH_CHUNK = """
    UPDATE job_chunk c SET status = 'done', finished_at = now(), lease_expires_at = NULL
    FROM job j
    WHERE c.id = $1 AND c.status NOT IN ('done', 'cancelled') AND j.id = c.job_id
    RETURNING c.task_ids, j.id, j.project_id, j.ml_backend_id, j.model_version, j.status
"""


async def finish_chunk(conn: asyncpg.Connection, chunk_id: int) -> tuple[ChunkJob, list[int]] | None:
    """Flip the chunk to done: its job and task ids; None when it was already done or cancelled (the
    report is dropped)."""
    row = await conn.fetchrow(_FINISH_CHUNK, chunk_id)
    return None if row is None else (ChunkJob(*row[1:6]), list(row[0]))


# Tasks neither predicted nor failed in this report that already had this backend's version (or were
# deleted meanwhile) were skipped; the rest of the unreported ones got an empty answer and count as done.
_COUNT_SKIPPED = """
    WITH chunk AS MATERIALIZED (
        SELECT id FROM task WHERE id = ANY($1::bigint[])
    ),
    has AS MATERIALIZED (
        SELECT task_id, ml_backend_id, model_version FROM prediction
        WHERE task_id = ANY($1::bigint[])
    )
    SELECT count(*) FROM unnest($1::bigint[]) AS c(id)
    WHERE NOT (c.id = ANY($2::bigint[]))
      AND (
          NOT EXISTS (SELECT 1 FROM chunk t WHERE t.id = c.id)
          OR EXISTS (
              SELECT 1 FROM has p
              WHERE p.task_id = c.id AND p.ml_backend_id = $3 AND p.model_version = $4
          )
      )
"""


async def count_skipped(
    conn: asyncpg.Connection,
    task_ids: list[int],
    reported: Sequence[int],
    backend_id: int | None,
    version: str,
) -> int:
    return int(await conn.fetchval(_COUNT_SKIPPED, task_ids, list(reported), backend_id, version))


_HOLD_BACKEND = "SELECT id FROM ml_backend WHERE id = $1 FOR KEY SHARE"


async def hold_backend(conn: asyncpg.Connection, backend_id: int) -> bool:
    """Hold the backend's row until the chunk commits, so it is not deleted meanwhile; False if it is gone.

    What the prediction table's foreign key used to do for every prediction, once per chunk: a backend
    delete waits for the reports in flight, and their predictions then read without it like the others.
    """
    return await conn.fetchrow(_HOLD_BACKEND, backend_id) is not None


_LOCK_TASKS = """
    SELECT count(*) FROM (
        SELECT FROM task WHERE id = ANY(string_to_array($1, ',')::bigint[]) ORDER BY id FOR NO KEY UPDATE
    ) AS locked
"""


async def lock_tasks(conn: asyncpg.Connection, task_ids: Sequence[int]) -> None:
    """Lock the tasks about to get predictions, in id order, until the chunk commits.

    Two chunks storing the same backend's version for one task (two jobs over overlapping selections,
    a lease that ran out while its worker still worked) then take turns, and the second one's insert
    sees what the first stored: each prediction is stored once. A delete of these tasks waits too, so
    it counts what it removes. ``FOR NO KEY UPDATE``, the weakest lock two chunks conflict on, leaves
    the ``FOR KEY SHARE`` of foreign-key checks alone: a user annotating one of these tasks meanwhile
    does not wait for the chunk.
    """
    if task_ids:
        await conn.fetchval(_LOCK_TASKS, number_list(sorted(set(task_ids))))


# Every parameter of a thousand values is one text (``number_list``, ``RESULT_SEPARATOR``), split here.
# The ids stored come back as one array: a row per prediction cost the API as much again to read.
_INSERT_PREDICTIONS = f"""
    WITH chunk AS MATERIALIZED (
        SELECT id, project_id FROM task WHERE id = ANY(string_to_array($1, ',')::bigint[])
    ),
    has AS MATERIALIZED (
        SELECT task_id, ml_backend_id, model_version FROM prediction
        WHERE task_id = ANY(string_to_array($1, ',')::bigint[])
    ),
    stored AS (
        INSERT INTO prediction
            (task_id, project_id, result, score, model_version, ml_backend_id, job_id, created_at, updated_at)
        SELECT u.task_id, $2, u.result::jsonb, u.score, u.model_version, $3, $4, now(), now()
        FROM (
            SELECT task_id::bigint AS task_id, result, NULLIF(score, 'null')::float8 AS score,
                   COALESCE(model_version, $9) AS model_version
            FROM ROWS FROM (
                unnest(string_to_array($5, ',')),
                unnest(string_to_array($6, chr({ord(RESULT_SEPARATOR)}))),
                unnest(string_to_array($7, ',')),
                unnest($8::text[])
            ) AS v(task_id, result, score, model_version)
        ) u
        JOIN chunk t ON t.id = u.task_id AND t.project_id = $2
        WHERE NOT EXISTS (
            SELECT 1 FROM has p
            WHERE p.task_id = u.task_id AND p.ml_backend_id = $3 AND p.model_version = u.model_version
        )
        RETURNING task_id
    )
    SELECT COALESCE(array_agg(task_id), '{{}}') FROM stored
"""


async def insert_predictions(
    conn: asyncpg.Connection,
    *,
    project_id: int,
    backend_id: int | None,
    job_id: int | None,
    chunk_task_ids: list[int],
    predictions: ReportedRows,
) -> list[int]:
    """Bulk insert in one statement (the tasks locked by ``lock_tasks``); returns the task id of every
    prediction stored.

    The versions go as one value when all predictions share it, as a chunk's nearly always do: a text
    array of a thousand equal strings cost the API ~0.4 µs of CPU per prediction to encode."""
    if not predictions:
        return []
    shared_version = predictions.versions[0]
    versions = (
        None if predictions.versions.count(shared_version) == len(predictions) else predictions.versions
    )
    stored: list[int] = await conn.fetchval(
        _INSERT_PREDICTIONS,
        number_list(chunk_task_ids),
        project_id,
        backend_id,
        job_id,
        number_list(predictions.task_ids),
        RESULT_SEPARATOR.join(predictions.results),
        number_list(predictions.scores),
        versions,
        shared_version,
    )
    return stored


# The report's counts go on the chunk's own row (already locked by finish_chunk): completions of one
# job never wait for each other on the job or project row. ``fold_chunks`` moves them on in batches.
_RECORD_ON_CHUNK = """
    UPDATE job_chunk
    SET done = $2, predicted = $3, skipped = $4, failed = $5, predictions = $6, errors = $7::jsonb,
        folded = false
    WHERE id = $1
"""


async def record_on_chunk(
    conn: asyncpg.Connection,
    chunk_id: int,
    *,
    done: int,
    predicted: int,
    skipped: int,
    failed: int,
    predictions: int,
    errors: Sequence[TaskError],
) -> None:
    sample = [{"task": e.task_id, "message": e.message[:500]} for e in errors[:ERRORS_SAMPLE_MAX]]
    await conn.execute(
        _RECORD_ON_CHUNK,
        chunk_id,
        done,
        predicted,
        skipped,
        failed,
        predictions,
        orjson.dumps(sample).decode(),
    )


# One statement, so it is all or nothing: chunk rows marked folded, their counts added to their jobs,
# their stored predictions to their projects. Rows are taken in the order every writer uses (chunks,
# then jobs, then projects) and chunks with SKIP LOCKED, so API replicas fold side by side.
_FOLD = text(
    """
    WITH picked AS (
        SELECT id FROM job_chunk WHERE NOT folded ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED
    ),
    folded AS (
        UPDATE job_chunk c SET folded = true FROM picked WHERE c.id = picked.id
        RETURNING c.id, c.job_id, c.done, c.predicted, c.skipped, c.failed, c.predictions, c.errors
    ),
    per_job AS (
        SELECT job_id, sum(done) AS done, sum(predicted) AS predicted, sum(skipped) AS skipped,
               sum(failed) AS failed, sum(predictions) AS predictions,
               (SELECT COALESCE(jsonb_agg(x.e ORDER BY f.id, x.n), '[]')
                FROM folded f, jsonb_array_elements(f.errors) WITH ORDINALITY AS x(e, n)
                WHERE f.job_id = g.job_id) AS errors
        FROM folded g
        GROUP BY job_id
    ),
    jobs AS (
        UPDATE job j
        SET done = j.done + per_job.done, predicted = j.predicted + per_job.predicted,
            skipped = j.skipped + per_job.skipped, failed = j.failed + per_job.failed,
            errors = CASE WHEN jsonb_array_length(j.errors) >= :cap THEN j.errors
                          ELSE COALESCE((SELECT jsonb_agg(e ORDER BY n) FROM (
                              SELECT e, n FROM jsonb_array_elements(j.errors || per_job.errors)
                                  WITH ORDINALITY AS y(e, n) ORDER BY n LIMIT :cap) AS kept), '[]')
                     END,
            updated_at = now()
        FROM per_job WHERE j.id = per_job.job_id
        RETURNING j.project_id, per_job.predictions
    ),
    projects AS (
        UPDATE project p SET total_predictions_number = p.total_predictions_number + d.predictions
        FROM (SELECT project_id, sum(predictions) AS predictions FROM jobs GROUP BY project_id) AS d
        WHERE p.id = d.project_id AND d.predictions <> 0
    )
    SELECT count(*) FROM folded
    """
)


async def fold_chunks(session: AsyncSession, limit: int) -> int:
    """Fold up to ``limit`` reported chunks into their jobs and projects; how many were folded."""
    return int((await session.execute(_FOLD, {"n": limit, "cap": ERRORS_SAMPLE_MAX})).scalar_one())


# A job is finished by whichever of its last chunks commits last: a completion that leaves few chunks
# open runs this again in a transaction of its own after committing (``finish_after_commit``), so the
# last one sees every chunk done; the sweeper runs it too, for a completion whose process died in
# between. A job still being planned (``step``) is finished by its planner's last batch instead. Counts
# are the job's plus its chunks' not yet folded ones.
_FINISH_JOB_IF_DONE = """
    WITH open AS (
        SELECT count(*) AS n FROM (
            SELECT 1 FROM job_chunk
            WHERE job_id = $1 AND status NOT IN ('done', 'cancelled')
            LIMIT $2
        ) AS o
    ),
    unfolded AS (
        SELECT COALESCE(sum(done), 0) AS done, COALESCE(sum(failed), 0) AS failed
        FROM job_chunk WHERE job_id = $1 AND NOT folded
    ),
    finished AS (
        UPDATE job
        SET status = CASE WHEN job.done + u.done = 0 AND job.failed + u.failed > 0
                          THEN 'failed' ELSE 'completed' END,
            error = CASE WHEN job.done + u.done = 0 AND job.failed + u.failed > 0
                         THEN 'every task failed; see errors' ELSE error END,
            finished_at = now(), updated_at = now()
        FROM unfolded AS u, open
        WHERE job.id = $1 AND job.status IN ('queued', 'running') AND job.step IS NULL AND open.n = 0
        RETURNING job.status
    )
    SELECT (SELECT status FROM finished), (SELECT n FROM open)
"""


@dataclass(frozen=True)
class JobEnd:
    status: str | None
    """The job's new status if this call finished it, else None."""
    open_chunks: int
    """The job's chunks still to report (other than this transaction's), counted up to the caller's limit."""


async def finish_job_if_done(conn: asyncpg.Connection, job_id: int, count_open_up_to: int = 1) -> JobEnd:
    """Finish the job if every chunk is done or cancelled (and its planning is over)."""
    row = await conn.fetchrow(_FINISH_JOB_IF_DONE, job_id, count_open_up_to)
    assert row is not None  # a SELECT without FROM
    return JobEnd(status=row[0], open_chunks=int(row[1]))


# Bulk jobs whose chunks are all done or cancelled but that are still open: a completion that committed
# and died before its after-commit check (the sweeper finishes them).
_UNFINISHED_DONE_JOBS = text(
    """
    SELECT j.id FROM job j
    WHERE j.kind = 'predict' AND j.status IN ('queued', 'running') AND j.step IS NULL
      AND EXISTS (SELECT 1 FROM job_chunk c WHERE c.job_id = j.id)
      AND NOT EXISTS (
          SELECT 1 FROM job_chunk c WHERE c.job_id = j.id AND c.status NOT IN ('done', 'cancelled')
      )
    ORDER BY j.id LIMIT :limit
    """
)


async def unfinished_done_jobs(session: AsyncSession, limit: int) -> list[int]:
    return [int(row[0]) for row in await session.execute(_UNFINISHED_DONE_JOBS, {"limit": limit})]


_CANCEL_CHUNKS = text(
    """
    UPDATE job_chunk SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
    WHERE job_id = :job AND status IN ('pending', 'leased')
    """
)


async def cancel_chunks(session: AsyncSession, job_id: int) -> None:
    await session.execute(_CANCEL_CHUNKS, {"job": job_id})


_DUE_CHUNKS = text(
    """
    SELECT id, status, attempts FROM job_chunk
    WHERE (status = 'leased' AND lease_expires_at < now())
       OR (status = 'pending' AND enqueued_at < now() - make_interval(secs => :lease_s))
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

_REQUEUE = text(
    """
    UPDATE job_chunk SET status = 'pending', lease_expires_at = NULL, enqueued_at = now()
    WHERE id = ANY(CAST(:ids AS bigint[]))
    """
)


async def due_chunks(session: AsyncSession, lease_s: float, limit: int) -> list[tuple[int, str, int]]:
    rows = await session.execute(_DUE_CHUNKS, {"lease_s": lease_s, "limit": limit})
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


async def requeue(session: AsyncSession, chunk_ids: list[int]) -> None:
    await session.execute(_REQUEUE, {"ids": chunk_ids})
