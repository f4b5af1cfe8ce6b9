"""``POST /api/projects/{id}/import/predictions`` streamed: memory bounded by a batch, whatever the body size.

The body is cut into batches of whole items (imports.stream), each parsed by orjson and checked in one
pass: the task id, the result against the label config (once per distinct result), score and model
version, each error a 400 naming ``<index>.<field>``. A batch's tasks must be the project's: they are
looked up and held (``FOR KEY SHARE``: they cannot be deleted, yet counter updates go on), then its rows
go to ``prediction`` by COPY; the project's count moves once at the end (tasks count theirs when read).
One bad item anywhere rolls back everything: the request's transaction holds it all.
"""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from services.annotation_api.counters import add_to_project_counters
from services.annotation_api.db import driver_connection, keep_index_plans
from services.annotation_api.errors import BadRequest
from services.annotation_api.ids import BIGINT_MAX
from services.annotation_api.imports.service import (
    BATCH_BYTES,
    MAX_MODEL_VERSION_LENGTH,
    UNDEFINED_MODEL_VERSION,
    copy_rows,
    copy_text,
    release_free_memory,
    suspect_encoding,
)
from services.annotation_api.imports.stream import ListSplitter, body_pieces
from services.annotation_api.projects.service import get_project, parse_config
from services.annotation_api.result_validation import MAX_REPORTED_ERRORS
from shared.json_values import find_bad_value
from shared.label_config import LabelConfig
from shared.prediction_validation import validate_result, validate_score

_COLUMNS = ("task_id", "project_id", "result", "score", "model_version")
_MAX_REMEMBERED_RESULTS = 10_000
# A batch whose raw JSON may hold a value we refuse (NUL; a number Postgres keeps beyond 64 bits) has its
# items walked whole, extra fields included (orjson itself refuses lone surrogates). Results are also
# checked by their encoding (``suspect_encoding``), which catches nesting too deep to pass on.
_SUSPECT = re.compile(rb"\\u0000|\d[eE][+-]?\d|\d{19}")

_OWNED = "SELECT id FROM task WHERE project_id = $1 AND id = ANY($2::bigint[]) FOR KEY SHARE"


def _bad(path: str, message: str) -> BadRequest:
    return BadRequest(f"{path}: {message}", field=path)


def _unstorable(found: tuple[str, str], field: str) -> BadRequest:
    """The detail gives the exact position (``3.result.0.value.n``), ``validation_errors`` the item's
    field holding it (``3.result``), as for the other routes (text_guard)."""
    return BadRequest(f"{found[0]}: {found[1]}", field=field)


@dataclass
class _Batch:
    """One batch, checked: COPY lines and, per line, its task id and index in the body."""

    lines: list[bytes] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)
    first_index: int = 0
    last_model_version: str | None = None


@dataclass
class _Stream:
    config: LabelConfig
    project_id: int
    splitter: ListSplitter = field(
        default_factory=lambda: ListSplitter(BATCH_BYTES, noun="predictions", field="body", allow_empty=True)
    )
    next_index: int = 0
    valid_results: set[bytes] = field(default_factory=set)


def _task_id(item: dict[str, Any], path: str) -> int:
    if "task" not in item:
        raise _bad(f"{path}.task", "this field is required")
    task = item["task"]
    if isinstance(task, float) and task.is_integer():
        task = int(task)  # JSON Schema's integer: 5.0 is 5
    if not isinstance(task, int) or isinstance(task, bool):
        raise _bad(f"{path}.task", f"must be a task id (an integer), got {type(task).__name__}")
    if not 1 <= task <= BIGINT_MAX:
        raise _bad(f"{path}.task", f"must be between 1 and {BIGINT_MAX}")
    return task


def _result(stream: _Stream, item: dict[str, Any], path: str) -> bytes:
    """The result as COPY text; checked against the config once per distinct encoding."""
    if "result" not in item:
        raise _bad(f"{path}.result", "this field is required")
    result = item["result"]
    try:
        encoded = orjson.dumps(result)
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes
        raise _bad(f"{path}.result", f"cannot be stored as JSON: {exc}") from None
    if suspect_encoding(encoded) and (found := find_bad_value(result, f"{path}.result")):
        raise _unstorable(found, f"{path}.result")
    if encoded not in stream.valid_results:
        errors = validate_result(stream.config, result)
        if errors:
            shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
            more = len(errors) - MAX_REPORTED_ERRORS
            raise _bad(f"{path}.result", shown + (f" (and {more} more)" if more > 0 else ""))
        if len(stream.valid_results) < _MAX_REMEMBERED_RESULTS:
            stream.valid_results.add(encoded)
    return encoded.replace(b"\\", b"\\\\")


def _version(item: dict[str, Any], path: str) -> str:
    version = item.get("model_version")
    if version is None or version == "":
        return UNDEFINED_MODEL_VERSION
    if not isinstance(version, str):
        raise _bad(f"{path}.model_version", f"must be a string, got {type(version).__name__}")
    if len(version) > MAX_MODEL_VERSION_LENGTH:
        raise _bad(f"{path}.model_version", f"must be at most {MAX_MODEL_VERSION_LENGTH} characters")
    return version


def _check_batch(stream: _Stream, raw: bytes) -> _Batch:
    """Parse and check one ``[item, …]`` slice; the first bad item is named by its index in the body."""
    batch = _Batch(first_index=stream.next_index)
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad("body", f"malformed JSON in or after item {stream.next_index}: {exc}") from None
    suspect = _SUSPECT.search(raw) is not None
    for offset, item in enumerate(items):
        path = str(stream.next_index + offset)
        if not isinstance(item, dict):
            raise _bad(path, f"must be an object, got {type(item).__name__}")
        if suspect and (found := find_bad_value(item, path)):
            raise _unstorable(found, ".".join(found[0].split(".")[:2]))
        task = _task_id(item, path)
        result = _result(stream, item, path)
        score = item.get("score")
        if errors := validate_score(score):
            raise _bad(f"{path}.score", errors[0])
        version = _version(item, path)
        batch.lines.append(
            b"%d\t%d\t%s\t%s\t%s\n"
            % (
                task,
                stream.project_id,
                result,
                b"\\N" if score is None else repr(float(score)).encode(),
                copy_text(version),
            )
        )
        batch.task_ids.append(task)
        batch.last_model_version = version
    stream.next_index += len(items)
    return batch


def _checked_batches(stream: _Stream, data: bytes, last: bool) -> list[_Batch]:
    """Feed the splitter and check the batches it completed, in a worker thread (the cyclic GC paused
    meanwhile, as for task import: collections over a batch's containers slow parsing several times)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        stream.splitter.feed(data)
        raws = stream.splitter.finish() if last else stream.splitter.batches()
        return [_check_batch(stream, raw) for raw in raws]
    finally:
        if paused:
            gc.enable()


async def _write(conn: asyncpg.Connection, stream: _Stream, batch: _Batch) -> None:
    """Hold the batch's tasks (400 naming the first item whose task is not the project's), COPY its rows."""
    owned = {row[0] for row in await conn.fetch(_OWNED, stream.project_id, batch.task_ids)}
    for offset, task in enumerate(batch.task_ids):
        if task not in owned:
            raise _bad(
                f"{batch.first_index + offset}.task",
                f"task {task} is not a task of project {stream.project_id}",
            )
    await copy_rows(conn, "prediction", _COLUMNS, batch.lines)


async def import_predictions(session: AsyncSession, project_id: int, body: AsyncIterator[bytes]) -> int:
    """Stream a JSON list of predictions into the project; how many were created."""
    project = await get_project(session, project_id, key_share=True)
    stream = _Stream(await parse_config(project.label_config), project_id)
    await keep_index_plans(session)
    conn = await driver_connection(session)
    created = 0
    last_version: str | None = None
    try:
        async for data, last in body_pieces(body, BATCH_BYTES):
            for batch in await run_in_threadpool(_checked_batches, stream, data, last):
                await _write(conn, stream, batch)
                created += len(batch.lines)
                last_version = batch.last_model_version or last_version
    finally:
        if stream.next_index > 0:
            await run_in_threadpool(release_free_memory)
    if created:
        await add_to_project_counters(session, project_id, predictions=created)
        if last_version is not None and not project.model_version:
            await conn.execute(
                "UPDATE project SET model_version = $2 WHERE id = $1 AND model_version = ''",
                project_id,
                last_version,
            )
    return created
