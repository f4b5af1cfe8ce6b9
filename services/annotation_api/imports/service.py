"""Import a list of tasks (with optional inline annotations and predictions) in one transaction.

Built for 100k tasks per request: the body is parsed once with orjson (no pydantic model per task),
checked in one tight loop that stops at the first bad item with its index and field, and written with
three COPYs (tasks, annotations, predictions) whose task ids were reserved from the sequence up front,
so nothing depends on the order of RETURNING rows. Task counters are known while validating, so tasks are
inserted with their counters set and the project's counters move by one UPDATE.
"""

from __future__ import annotations

import gc
import io
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from services.annotation_api.counters import add_to_project_counters
from services.annotation_api.errors import BadRequest
from services.annotation_api.models import User
from services.annotation_api.projects.service import get_project, missing_key_message, parse_config
from services.annotation_api.tasks.repository import driver_connection
from shared.label_config import LabelConfig
from shared.prediction_validation import validate_result, validate_score

UNDEFINED_MODEL_VERSION = "undefined"

_TASK_COLUMNS = (
    "id",
    "project_id",
    "data",
    "meta",
    "is_labeled",
    "total_annotations",
    "cancelled_annotations",
    "total_predictions",
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
    """Validated rows, already encoded for COPY; annotation/prediction rows point at tasks by index."""

    data: list[bytes] = field(default_factory=list)
    meta: list[bytes] = field(default_factory=list)
    #: (done annotations, cancelled annotations, predictions) of the tasks that have any
    counts: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    annotations: list[tuple[int, bytes, bool, bool, float | None]] = field(default_factory=list)
    predictions: list[tuple[int, bytes, float | None, str]] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)
    last_model_version: str | None = None
    valid_results: set[bytes] = field(default_factory=set)


def _dumps(value: Any, path: str) -> bytes:
    """orjson's bytes; what it cannot write (nesting deeper than 254 levels) is a 400 naming the field."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise _bad(path, f"cannot be stored as JSON: {exc}") from None


def _copy_json(value: Any, path: str) -> bytes:
    """JSON in COPY text format: orjson never emits raw tabs or newlines, so doubling backslashes is
    the only escaping needed. Postgres' jsonb cannot hold NUL, so that is refused here by name."""
    encoded = _dumps(value, path)
    if b"\\u0000" in encoded:
        raise _bad(path, "contains a NUL character (\\u0000), which Postgres cannot store")
    return encoded.replace(b"\\", b"\\\\")


def _copy_text(value: str) -> bytes:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r").encode()


def _copy_float(value: float | None) -> bytes:
    return b"\\N" if value is None else repr(float(value)).encode()


_EMPTY_META = b"{}"
_MAX_REMEMBERED_RESULTS = 10_000
_BOOL = {True: b"t", False: b"f"}


def parse_body(body: bytes) -> list[Any]:
    if not body.strip():
        raise _bad("tasks", "the body is empty; send a JSON list of tasks")
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad("tasks", f"malformed JSON: {exc}") from exc
    if not isinstance(items, list):
        raise _bad("tasks", f"must be a JSON list of tasks, got {_type_name(items)}")
    if not items:
        raise _bad("tasks", "the list is empty; nothing to import")
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
    return index, result, score, version


def _full_task(config: LabelConfig, parsed: ParsedTasks, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """Check a ``{"data": …, "meta"?, "annotations"?, "predictions"?}`` task; returns its data."""
    path = f"tasks[{index}]"
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
    predictions = _optional_list(item, "predictions", path)
    for position, prediction in enumerate(predictions):
        prediction_row = _prediction(config, parsed, index, prediction, f"{path}.predictions[{position}]")
        parsed.predictions.append(prediction_row)
        parsed.last_model_version = prediction_row[3]
    if done or cancelled or predictions:
        parsed.counts[index] = (done, cancelled, len(predictions))
    return data


def validate_tasks(config: LabelConfig, items: list[Any]) -> ParsedTasks:
    """One pass over the items; raises a 400 naming the first bad one (``tasks[17].data: …``).

    The common case (a bare data dict) costs a type check, a key-set check and one orjson call;
    paths for messages are only formatted once something is wrong.
    """
    parsed = ParsedTasks()
    required = config.required_data_keys()
    append_data = parsed.data.append
    append_meta = parsed.meta.append
    update_columns = parsed.columns.update
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad(f"tasks[{index}]", f"must be an object (a task or its data), got {_type_name(item)}")
        if "data" in item:
            data = _full_task(config, parsed, index, item)
        else:
            data = item
            append_meta(_EMPTY_META)
        if not required <= data.keys():
            key = config.missing_data_keys(data)[0]
            raise _bad(f"tasks[{index}].data", missing_key_message(config, key))
        update_columns(data)
        try:
            encoded = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:  # rare, so the path is only formatted then
            raise _bad(f"tasks[{index}].data", f"cannot be stored as JSON: {exc}") from None
        if b"\\" in encoded:
            encoded = _copy_json(data, f"tasks[{index}].data")
        append_data(encoded)
    return parsed


def _parse_and_validate(config: LabelConfig, body: bytes) -> ParsedTasks:
    """Runs in a worker thread so a 100k-task body does not stall other requests on the event loop.

    The cyclic GC is paused meanwhile: parsing allocates about a million containers, and repeated
    collections over them made orjson.loads ten times slower. Reference counting still frees
    everything; the collector resumes (if this call paused it) before returning.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return validate_tasks(config, parse_body(body))
    finally:
        if paused:
            gc.enable()


@dataclass
class ImportOutcome:
    task_count: int
    annotation_count: int
    prediction_count: int
    duration: float
    data_columns: list[str]
    task_ids: list[int]


async def _copy(conn: asyncpg.Connection, table: str, columns: tuple[str, ...], lines: list[bytes]) -> None:
    """COPY … FROM STDIN in text format: rows are pre-encoded bytes, no per-value Python codec calls."""
    await conn.copy_to_table(table, source=io.BytesIO(b"".join(lines)), columns=columns, format="text")


async def import_tasks(session: AsyncSession, project_id: int, body: bytes, user: User) -> ImportOutcome:
    started = time.perf_counter()
    project = await get_project(session, project_id, key_share=True)
    config = await parse_config(project.label_config)
    parsed = await run_in_threadpool(_parse_and_validate, config, body)
    conn = await driver_connection(session)
    ids: list[int] = sorted(await conn.fetchval(_RESERVE_IDS, len(parsed.data)))
    no_counts = (0, 0, 0)
    task_lines = []
    for index, (task_id, data, meta) in enumerate(zip(ids, parsed.data, parsed.meta, strict=True)):
        done, cancelled, predictions = parsed.counts.get(index, no_counts)
        task_lines.append(
            b"%d\t%d\t%s\t%s\t%s\t%d\t%d\t%d\n"
            % (task_id, project_id, data, meta, _BOOL[done > 0], done, cancelled, predictions)
        )
    await _copy(conn, "task", _TASK_COLUMNS, task_lines)
    if parsed.annotations:
        lines = [
            b"%d\t%d\t%s\t%s\t%s\t%s\t%d\n"
            % (ids[index], project_id, result, _BOOL[cancelled], _BOOL[truth], _copy_float(lead), user.id)
            for index, result, cancelled, truth, lead in parsed.annotations
        ]
        await _copy(conn, "annotation", _ANNOTATION_COLUMNS, lines)
    if parsed.predictions:
        lines = [
            b"%d\t%d\t%s\t%s\t%s\n"
            % (ids[index], project_id, result, _copy_float(score), _copy_text(version))
            for index, result, score, version in parsed.predictions
        ]
        await _copy(conn, "prediction", _PREDICTION_COLUMNS, lines)
    await add_to_project_counters(
        session,
        project_id,
        tasks=len(ids),
        annotations=sum(done for done, _, _ in parsed.counts.values()),
        predictions=len(parsed.predictions),
        labeled=sum(1 for done, _, _ in parsed.counts.values() if done > 0),
    )
    if parsed.last_model_version is not None and not project.model_version:
        await conn.execute(
            "UPDATE project SET model_version = $2 WHERE id = $1 AND model_version = ''",
            project_id,
            parsed.last_model_version,
        )
    return ImportOutcome(
        task_count=len(ids),
        annotation_count=len(parsed.annotations),
        prediction_count=len(parsed.predictions),
        duration=time.perf_counter() - started,
        data_columns=sorted(parsed.columns),
        task_ids=ids,
    )
