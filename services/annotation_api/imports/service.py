"""Import a list of tasks (with optional inline annotations and predictions) in one transaction.

Built for millions of tasks per request in bounded memory: the body streams in and is cut into batches
of about a megabyte of whole items (imports.stream), each parsed once with orjson (no pydantic model per
task), checked in one tight loop that stops at the first bad item with its index and field, and written
with three COPYs (tasks, annotations, predictions) whose task ids were reserved from the sequence first,
so nothing depends on the order of RETURNING rows. A bad item anywhere rolls back the batches already
written: the request's transaction holds them all. Task counters are known while validating, so tasks
are inserted with their counters set and the project's counters move by one UPDATE at the end.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
import time
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
from services.annotation_api.imports.stream import ListSplitter, body_pieces
from services.annotation_api.models import User
from services.annotation_api.projects.service import get_project, missing_key_message, parse_config
from shared.json_values import MAX_DEPTH, find_bad_value
from shared.label_config import LabelConfig
from shared.prediction_validation import validate_result, validate_score

UNDEFINED_MODEL_VERSION = "undefined"
MAX_MODEL_VERSION_LENGTH = 255
"""As ``/api/predictions`` caps it: the prediction index cannot hold much longer keys."""
BATCH_BYTES = 1 << 20
"""Body bytes per parsed batch: ~10x that in Python objects at a time, whatever the body's size."""

_TASK_COLUMNS = (
    "id",
    "project_id",
    "data",
    "meta",
    "is_labeled",
    "total_annotations",
    "cancelled_annotations",
)
_ANNOTATION_COLUMNS = (
    "task_id",
    "project_id",
    "result",
    "was_cancelled",
    "ground_truth",
    "lead_time",
    "completed_by_id",
)
_PREDICTION_COLUMNS = ("task_id", "project_id", "result", "score", "model_version")
# Task ids reserved up front, returned as one array datum (not 100k rows). The sequence is resolved
# once: pg_get_serial_sequence() evaluated per row made this 7x slower.
_RESERVE_IDS = """
    WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('task', 'id')::regclass AS seq)
    SELECT array_agg(nextval(s.seq)) FROM s, generate_series(1, $1)
"""


def _bad(path: str, message: str) -> BadRequest:
    return BadRequest(f"{path}: {message}", field=path)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@dataclass
class ParsedTasks:
    """One batch's validated rows, already encoded for COPY; annotation/prediction rows point at tasks
    by their index in the batch. ``columns``, ``last_model_version`` and ``valid_results`` carry over
    from batch to batch."""

    data: list[bytes] = field(default_factory=list)
    meta: list[bytes] = field(default_factory=list)
    #: (done annotations, cancelled annotations) of the tasks that have any
    counts: dict[int, tuple[int, int]] = field(default_factory=dict)
    annotations: list[tuple[int, bytes, bool, bool, float | None]] = field(default_factory=list)
    predictions: list[tuple[int, bytes, float | None, str]] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)
    last_model_version: str | None = None
    valid_results: set[bytes] = field(default_factory=set)


# Encoded JSON that may hold a value later steps cannot pass on (a float Postgres keeps as an integer
# beyond 64 bits, nesting deeper than MAX_DEPTH): only then is the value walked.
_SUSPECT_NUMBER = re.compile(rb"\de[+-]?\d")


_MALLOC_TRIM = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)


def release_free_memory() -> None:
    """Hand memory freed by a large import back to the OS: glibc keeps it in the arenas of the threads
    that parsed the batches (tens of MB each) otherwise. A no-op where there is no ``malloc_trim``."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def suspect_encoding(encoded: bytes) -> bool:
    return bool(_SUSPECT_NUMBER.search(encoded)) or encoded.count(b"{") + encoded.count(b"[") >= MAX_DEPTH


def _check_stored(value: Any, path: str) -> None:
    """The rule every route applies (shared.json_values); only walked for a ``_suspect`` encoding."""
    found = find_bad_value(value, path)
    if found:
        raise BadRequest(f"{found[0]}: {found[1]}", field=path)


def _exact(encoded: bytes) -> bytes:
    """A copy of exactly its size: orjson returns small outputs in a 4 KB allocation, so 65k tiny tasks
    held until their COPY cost 260 MB instead of 3 MB."""
    return b"%b" % encoded


def _dumps(value: Any, path: str) -> bytes:
    """orjson's bytes; what it or a later step cannot write is a 400 naming the field."""
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise _bad(path, f"cannot be stored as JSON: {exc}") from None
    if suspect_encoding(encoded):
        _check_stored(value, path)
    return _exact(encoded)


def _copy_json(value: Any, path: str) -> bytes:
    """JSON in COPY text format: orjson never emits raw tabs or newlines, so doubling backslashes is
    the only escaping needed. Postgres' jsonb cannot hold NUL, so that is refused here by name."""
    encoded = _dumps(value, path)
    if b"\\u0000" in encoded:
        raise _bad(path, "contains a NUL character (\\u0000), which Postgres cannot store")
    return encoded.replace(b"\\", b"\\\\")


def copy_text(value: str) -> bytes:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r").encode()


def _copy_float(value: float | None) -> bytes:
    return b"\\N" if value is None else repr(float(value)).encode()


_EMPTY_META = b"{}"
_MAX_REMEMBERED_RESULTS = 10_000
_BOOL = {True: b"t", False: b"f"}


def parse_batch(batch: bytes, first_index: int) -> list[Any]:
    """A ``[item, …]`` slice of the body; its malformed JSON is reported from the batch's first item."""
    try:
        items: list[Any] = orjson.loads(batch)
    except orjson.JSONDecodeError as exc:
        raise _bad("tasks", f"malformed JSON in or after tasks[{first_index}]: {exc}") from None
    return items


def _result(config: LabelConfig, parsed: ParsedTasks, item: dict[str, Any], path: str) -> bytes:
    """The result, encoded; checked against the config once per distinct value (classification imports
    repeat the same few results thousands of times, and equal JSON means an equal verdict)."""
    if "result" not in item:
        raise _bad(f"{path}.result", "this field is required")
    encoded = _copy_json(item["result"], f"{path}.result")
    if encoded not in parsed.valid_results:
        errors = validate_result(config, item["result"])
        if errors:
            raise _bad(f"{path}.result", errors[0])
        if len(parsed.valid_results) < _MAX_REMEMBERED_RESULTS:
            parsed.valid_results.add(encoded)
    return encoded


def _optional_list(task: dict[str, Any], key: str, path: str) -> list[Any]:
    value = task.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"{path}.{key}", f"must be a list, got {_type_name(value)}")
    return value


def _annotation(
    config: LabelConfig, parsed: ParsedTasks, index: int, item: Any, path: str
) -> tuple[int, bytes, bool, bool, float | None]:
    if not isinstance(item, dict):
        raise _bad(path, f"must be an object, got {_type_name(item)}")
    result = _result(config, parsed, item, path)
    flags = []
    for name in ("was_cancelled", "ground_truth"):
        value = item.get(name, False)
        if not isinstance(value, bool):
            raise _bad(f"{path}.{name}", f"must be true or false, got {value!r}")
        flags.append(value)
    lead_time = item.get("lead_time")
    if validate_score(lead_time) or (lead_time is not None and lead_time < 0):
        raise _bad(f"{path}.lead_time", f"must be a non-negative number or null, got {lead_time!r}")
    return index, result, flags[0], flags[1], lead_time


def _prediction(
    config: LabelConfig, parsed: ParsedTasks, index: int, item: Any, path: str
) -> tuple[int, bytes, float | None, str]:
    if not isinstance(item, dict):
        raise _bad(path, f"must be an object, got {_type_name(item)}")
    result = _result(config, parsed, item, path)
    score = item.get("score")
    errors = validate_score(score)
    if errors:
        raise _bad(f"{path}.score", errors[0])
    version = item.get("model_version")
    if version is None or version == "":
        version = UNDEFINED_MODEL_VERSION
    elif not isinstance(version, str) or "\x00" in version:
        raise _bad(f"{path}.model_version", f"must be a string without NUL, got {version!r}")
    elif len(version) > MAX_MODEL_VERSION_LENGTH:
        raise _bad(f"{path}.model_version", f"must be at most {MAX_MODEL_VERSION_LENGTH} characters")
    return index, result, score, version


def _full_task(
    config: LabelConfig, parsed: ParsedTasks, index: int, item: dict[str, Any], path: str
) -> dict[str, Any]:
    """Check a ``{"data": …, "meta"?, "annotations"?, "predictions"?}`` task; returns its data."""
    data = item["data"]
    if not isinstance(data, dict):
        raise _bad(f"{path}.data", f"must be an object, got {_type_name(data)}")
    meta = item.get("meta")
    if meta is None or meta == {}:
        parsed.meta.append(_EMPTY_META)
    elif isinstance(meta, dict):
        parsed.meta.append(_copy_json(meta, f"{path}.meta"))
    else:
        raise _bad(f"{path}.meta", f"must be an object, got {_type_name(meta)}")
    done = cancelled = 0
    for position, annotation in enumerate(_optional_list(item, "annotations", path)):
        row = _annotation(config, parsed, index, annotation, f"{path}.annotations[{position}]")
        parsed.annotations.append(row)
        if row[2]:
            cancelled += 1
        else:
            done += 1
    for position, prediction in enumerate(_optional_list(item, "predictions", path)):
        prediction_row = _prediction(config, parsed, index, prediction, f"{path}.predictions[{position}]")
        parsed.predictions.append(prediction_row)
        parsed.last_model_version = prediction_row[3]
    if done or cancelled:
        parsed.counts[index] = (done, cancelled)
    return data


def validate_tasks(config: LabelConfig, items: list[Any], parsed: ParsedTasks, first_index: int = 0) -> None:
    """One pass over a batch's items into ``parsed``; raises a 400 naming the first bad one
    (``tasks[17].data: …``, counted from the start of the body).

    The common case (a bare data dict) costs a type check, a key-set check, one orjson call and two
    byte scans; paths for messages are only formatted once something is wrong.
    """
    required = config.required_data_keys()
    append_data = parsed.data.append
    append_meta = parsed.meta.append
    update_columns = parsed.columns.update
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad(
                f"tasks[{first_index + index}]",
                f"must be an object (a task or its data), got {_type_name(item)}",
            )
        if "data" in item:
            data = _full_task(config, parsed, index, item, f"tasks[{first_index + index}]")
        else:
            data = item
            append_meta(_EMPTY_META)
        if not required <= data.keys():
            key = config.missing_data_keys(data)[0]
            raise _bad(f"tasks[{first_index + index}].data", missing_key_message(config, key))
        update_columns(data)
        try:
            encoded = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:  # rare, so the path is only formatted then
            raise _bad(f"tasks[{first_index + index}].data", f"cannot be stored as JSON: {exc}") from None
        if b"\\" in encoded:
            encoded = _copy_json(data, f"tasks[{first_index + index}].data")
        else:
            if suspect_encoding(encoded):
                _check_stored(data, f"tasks[{first_index + index}].data")
            encoded = _exact(encoded)
        append_data(encoded)


@dataclass
class _Stream:
    """What carries over from batch to batch while a body streams in."""

    config: LabelConfig
    splitter: ListSplitter = field(default_factory=lambda: ListSplitter(BATCH_BYTES))
    next_index: int = 0
    columns: set[str] = field(default_factory=set)
    valid_results: set[bytes] = field(default_factory=set)


def _parse_and_validate(stream: _Stream, data: bytes, last: bool) -> list[ParsedTasks]:
    """Feed the splitter, then parse and check the batches it completed. Runs in a worker thread, so a
    large body does not stall other requests on the event loop.

    The cyclic GC is paused meanwhile: a batch allocates many containers, and repeated collections
    over them made orjson.loads several times slower. Reference counting still frees everything; the
    collector resumes (if this call paused it) before returning.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        stream.splitter.feed(data)
        out = []
        for batch in stream.splitter.finish() if last else stream.splitter.batches():
            items = parse_batch(batch, stream.next_index)
            parsed = ParsedTasks(columns=stream.columns, valid_results=stream.valid_results)
            validate_tasks(stream.config, items, parsed, stream.next_index)
            stream.next_index += len(items)
            out.append(parsed)
        return out
    finally:
        if paused:
            gc.enable()


@dataclass
class ImportOutcome:
    task_count: int = 0
    annotation_count: int = 0
    prediction_count: int = 0
    duration: float = 0.0
    data_columns: list[str] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)
    done_annotations: int = 0
    labeled: int = 0


async def copy_rows(
    conn: asyncpg.Connection, table: str, columns: tuple[str, ...], lines: list[bytes]
) -> None:
    """COPY … FROM STDIN in text format: rows are pre-encoded bytes, no per-value Python codec calls.

    The rows go as one buffer (a ``memoryview``: asyncpg would take ``bytes`` for a file name). Not a
    file object: for one, asyncpg defines a reader class per call, a reference cycle holding the file
    until the cyclic collector's next full pass, which here (``tune_garbage_collector``) can be hundreds of
    imports away: each import's whole body stayed in memory.
    """
    await conn.copy_to_table(table, source=memoryview(b"".join(lines)), columns=columns, format="text")


async def _write_batch(
    conn: asyncpg.Connection, project_id: int, user: User, parsed: ParsedTasks, outcome: ImportOutcome
) -> list[int]:
    """COPY one batch's rows; its task ids, in order."""
    ids: list[int] = sorted(await conn.fetchval(_RESERVE_IDS, len(parsed.data)))
    no_counts = (0, 0)
    task_lines = []
    for index, (task_id, data, meta) in enumerate(zip(ids, parsed.data, parsed.meta, strict=True)):
        done, cancelled = parsed.counts.get(index, no_counts)
        task_lines.append(
            b"%d\t%d\t%s\t%s\t%s\t%d\t%d\n"
            % (task_id, project_id, data, meta, _BOOL[done > 0], done, cancelled)
        )
    await copy_rows(conn, "task", _TASK_COLUMNS, task_lines)
    if parsed.annotations:
        lines = [
            b"%d\t%d\t%s\t%s\t%s\t%s\t%d\n"
            % (ids[index], project_id, result, _BOOL[cancelled], _BOOL[truth], _copy_float(lead), user.id)
            for index, result, cancelled, truth, lead in parsed.annotations
        ]
        await copy_rows(conn, "annotation", _ANNOTATION_COLUMNS, lines)
    if parsed.predictions:
        lines = [
            b"%d\t%d\t%s\t%s\t%s\n" % (ids[index], project_id, result, _copy_float(score), copy_text(version))
            for index, result, score, version in parsed.predictions
        ]
        await copy_rows(conn, "prediction", _PREDICTION_COLUMNS, lines)
    outcome.task_count += len(ids)
    outcome.annotation_count += len(parsed.annotations)
    outcome.prediction_count += len(parsed.predictions)
    outcome.done_annotations += sum(done for done, _ in parsed.counts.values())
    outcome.labeled += sum(1 for done, _ in parsed.counts.values() if done > 0)
    return ids


async def _stream_batches(
    body: AsyncIterator[bytes],
    stream: _Stream,
    conn: asyncpg.Connection,
    project_id: int,
    user: User,
    outcome: ImportOutcome,
    keep_ids: bool,
) -> str | None:
    """Parse, check and COPY the body batch by batch; the last model version of its predictions."""
    last_model_version: str | None = None
    async for data, last in body_pieces(body, BATCH_BYTES):
        for parsed in await run_in_threadpool(_parse_and_validate, stream, data, last):
            ids = await _write_batch(conn, project_id, user, parsed, outcome)
            if keep_ids:
                outcome.task_ids.extend(ids)
            last_model_version = parsed.last_model_version or last_model_version
    return last_model_version


async def import_tasks(
    session: AsyncSession, project_id: int, body: AsyncIterator[bytes], user: User, keep_ids: bool = False
) -> ImportOutcome:
    """Stream ``body`` into the project; ``keep_ids``: collect the new task ids for the answer."""
    started = time.perf_counter()
    project = await get_project(session, project_id, key_share=True)
    stream = _Stream(await parse_config(project.label_config))
    await keep_index_plans(session)
    conn = await driver_connection(session)
    outcome = ImportOutcome()
    try:
        last_model_version = await _stream_batches(body, stream, conn, project_id, user, outcome, keep_ids)
    finally:
        if stream.next_index > 0:
            await run_in_threadpool(release_free_memory)
    await add_to_project_counters(
        session,
        project_id,
        tasks=outcome.task_count,
        annotations=outcome.done_annotations,
        predictions=outcome.prediction_count,
        labeled=outcome.labeled,
    )
    if last_model_version is not None and not project.model_version:
        await conn.execute(
            "UPDATE project SET model_version = $2 WHERE id = $1 AND model_version = ''",
            project_id,
            last_model_version,
        )
    outcome.data_columns = sorted(stream.columns)
    outcome.duration = time.perf_counter() - started
    return outcome
