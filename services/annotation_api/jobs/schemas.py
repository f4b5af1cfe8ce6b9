"""Job bodies: progress a client can poll without knowing anything about chunks."""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

from services.annotation_api.errors import BadRequest
from services.annotation_api.models import Job, JobStatus
from shared.gateway_contract import TaskError
from shared.json_values import find_bad_value, text_problem

_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
ERRORS_SHOWN = 50
_JSON_SPACE = " \t\n\r"
"""What JSON allows before a value (Python's ``lstrip()`` would take more)."""


@dataclass(frozen=True)
class Unfolded:
    """Counts on a job's chunk rows not yet added to the job row."""

    done: int = 0
    predicted: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[Any] = field(default_factory=list)


class JobOut(BaseModel):
    id: int = Field(description="Job id (``GET /api/jobs/{id}``).")
    kind: str = Field(
        description="`predict` (bulk prediction), `train`, `delete_project`, `delete_tasks`, `delete_predictions`, `delete_annotations` or `predictions_to_annotations`."
    )
    project: int | None = Field(
        description="The project the job works on; null once the project a `delete_project` job deleted is gone."
    )
    ml_backend: int | None = Field(description="The ML backend it calls; null once that backend was deleted.")
    model_version: str | None = Field(
        description="The model version its stored predictions carry (bulk) or training produced (train); the backend's record and the predictions agree with it."
    )
    status: str = Field(description="`queued`, `running`, `completed`, `failed` or `cancelled`.")
    total: int = Field(description="Tasks the job covers (1 for training).")
    done: int = Field(
        description="Tasks the backend answered (with a prediction or, for a model that has none yet, an empty list)."
    )
    predicted: int = Field(description="Done tasks that got at least one stored prediction.")
    skipped: int = Field(
        description="Tasks not predicted because they already had a prediction of this backend's version (or were deleted meanwhile)."
    )
    failed: int = Field(description="Tasks the backend could not predict; see `errors`.")
    processed: int = Field(description="done + skipped + failed.")
    progress: float = Field(description="processed / total, from 0 to 1.")
    rate: float | None = Field(description="Tasks processed per second since the job started.")
    eta_s: float | None = Field(description="Seconds left at the current rate, while the job runs.")
    errors: list[Any] = Field(description='A sample of per-task errors: ``{"task": id, "message": "…"}``.')
    error: str | None = Field(description="Why the whole job failed, if it did.")
    result: dict[str, Any] | None = Field(
        default=None,
        description="What the job produced beyond counters, e.g. a training job's backend answer and new version.",
    )
    selection: dict[str, Any] = Field(
        description="Which tasks the job covers, as it was asked (a summary, not the ids)."
    )
    created_at: datetime = Field(description="When the job was created.")
    started_at: datetime | None = Field(description="When a worker first took part of it.")
    finished_at: datetime | None = Field(description="When it ended.")
    updated_at: datetime = Field(description="Last change of status or counters.")

    @classmethod
    def of(cls, job: Job, unfolded: Unfolded | None = None) -> JobOut:
        """``unfolded``: the counts of chunks reported but not yet folded into the job row, read in
        the same statement as the job (``service.job_views``), so the counters are exact."""
        u = unfolded or Unfolded()
        done, predicted, skipped, failed = (
            job.done + u.done,
            job.predicted + u.predicted,
            job.skipped + u.skipped,
            job.failed + u.failed,
        )
        processed = done + skipped + failed
        rate = eta = None
        if job.started_at is not None:
            end = job.finished_at or datetime.now(UTC)
            elapsed = (end - job.started_at).total_seconds()
            if elapsed > 0 and processed:
                rate = processed / elapsed
                if job.status in _ACTIVE:
                    eta = max(job.total - processed, 0) / rate
        return cls(
            id=job.id,
            kind=job.kind,
            project=job.project_id,
            ml_backend=job.ml_backend_id,
            model_version=job.model_version,
            status=job.status,
            total=job.total,
            done=done,
            predicted=predicted,
            skipped=skipped,
            failed=failed,
            processed=processed,
            progress=processed / job.total if job.total else 1.0,
            rate=rate,
            eta_s=eta,
            errors=(job.errors + u.errors)[:ERRORS_SHOWN],
            error=job.error,
            result=job.result,
            selection=job.selection,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
        )


class PredictStarted(BaseModel):
    """Label Studio's action answer, plus the job(s) to follow."""

    processed_items: int = Field(description="Tasks the job(s) will predict (Label Studio's field).")
    detail: str = Field(description="What happened, and the URL(s) to follow.")
    job_id: int | None = Field(default=None, description="The first (usually only) job started.")
    job_ids: list[int] = Field(default=[], description="Every job started, one per ML backend.")

    @classmethod
    def of(cls, jobs: list[Job]) -> PredictStarted:
        total = sum(job.total for job in jobs)
        ids = [job.id for job in jobs]
        return cls(
            processed_items=total,
            detail=f"Predicting {total} tasks in the background: follow {_follow(ids)}",
            job_id=ids[0] if ids else None,
            job_ids=ids,
        )


def _follow(ids: list[int]) -> str:
    """The exact URL(s) to poll: ``GET /api/jobs/7`` or ``GET /api/jobs/7, GET /api/jobs/8``."""
    return ", ".join(f"GET /api/jobs/{job_id}" for job_id in ids) or "nothing (no job started)"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(body: dict[str, Any], field: str) -> list[Any]:
    value = body.get(field) or []
    if not isinstance(value, list):
        raise BadRequest("must be a list", field=field)
    return value


RESULT_SEPARATOR = "\x1e"
"""Between the results of a chunk in the insert's one text parameter: no JSON text holds it unescaped
(``parse_report`` refuses a result that does), so splitting there gives back each result whole."""


@dataclass(slots=True)
class ReportedRows:
    """A report's predictions as the columns the insert sends Postgres, in report order.

    The wire's own columns, checked (``parse_report``): a pydantic model per prediction, then a list per
    column, cost the ``/internal`` API ~1.5 µs of CPU per bulk-predicted task (bench/README), and an
    object per prediction checked one by one still ~1 µs. Each column holds what ``ReportedPredictions``
    says of it on the wire, ``versions`` one per prediction however the wire sent them.
    """

    task_ids: list[int] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.task_ids)

    def only(self, keep: Callable[[int], bool]) -> ReportedRows:
        """The rows at the positions ``keep`` accepts."""
        kept = [index for index in range(len(self.task_ids)) if keep(index)]
        if len(kept) == len(self.task_ids):
            return self
        return ReportedRows(
            [self.task_ids[i] for i in kept],
            [self.results[i] for i in kept],
            [self.scores[i] for i in kept],
            [self.versions[i] for i in kept],
        )

    def of_tasks(self, task_ids: set[int]) -> ReportedRows:
        """The rows of these tasks (all of them, usually: one set operation then)."""
        if task_ids.issuperset(self.task_ids):
            return self
        return self.only(lambda index: self.task_ids[index] in task_ids)


@dataclass(slots=True)
class ParsedReport:
    """A ``ChunkReport`` as the API applies it: its predictions in columns."""

    predictions: ReportedRows = field(default_factory=ReportedRows)
    errors: list[TaskError] = field(default_factory=list)
    model_version: str | None = None
    sent: list[int] | None = None


def parse_report(raw: bytes) -> ParsedReport:
    """A ``ChunkReport`` from a worker's body: orjson, then each column checked as ``ReportedPredictions``
    says, a 400 naming the first value that does not fit.

    Every bulk-predicted task passes through here. Each result stays the JSON text the worker encoded: it is
    stored as it is and Postgres checks its syntax (``unstorable_result`` names a text it refused); only a
    report holding an escaped NUL has its results parsed here (``_storable``).
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise BadRequest("A chunk report must be a JSON object.", field="body")
    version = body.get("model_version")
    if version is not None and not isinstance(version, str):
        raise BadRequest("must be a string or null", field="model_version")
    wire_predictions = body.get("predictions")
    predictions = (
        _rows(wire_predictions) if isinstance(wire_predictions, list) else _columns(wire_predictions, version)
    )
    errors: list[TaskError] = []
    for index, item in enumerate(_list(body, "errors")):
        if not (
            isinstance(item, dict) and _int(item.get("task_id")) and isinstance(item.get("message"), str)
        ):
            raise BadRequest("needs task_id (int) and message (str)", field=f"errors.{index}")
        errors.append(TaskError.model_construct(task_id=item["task_id"], message=item["message"]))
    # One scan for ``\\u00``, how JSON escapes a control character (the worker's orjson escapes nothing else
    # so): with a thousand escaped quotes in a report, each scan for a pattern that starts with a backslash
    # costs ~0.1 ms. Only when it is there, the scans for the two characters that matter.
    if b"\\u00" in raw:
        if b"\\u001e" in raw or b"\\u001E" in raw:  # look for which result holds the separator
            _refuse_separator(predictions)
        if b"\\u0000" in raw:  # look for where (orjson already refused lone surrogates)
            if version is not None and (problem := text_problem(version)):
                raise BadRequest(problem, field="model_version")
            predictions = _storable(predictions, errors)
    sent = body.get("sent")
    # The types of a thousand ids in one C-level pass (bool is not int here, as in ``_int``).
    if sent is not None and not (isinstance(sent, list) and set(map(type, sent)) <= {int}):
        raise BadRequest("must be a list of task ids or null", field="sent")
    return ParsedReport(predictions, errors, version, sent)


_NUMBER_OR_NULL: frozenset[type] = frozenset({float, int, type(None)})


def _columns(value: Any, report_version: str | None) -> ReportedRows:
    """The predictions' columns, each checked for its type in one C-level pass over its values (bool is
    not a number here), then for its length; a 400 naming the first column or result that does not fit."""
    if value is None:
        return ReportedRows()
    if not isinstance(value, dict):
        raise BadRequest(
            "must be an object of columns: task_ids, results, scores, model_versions", field="predictions"
        )
    task_ids = _column(value, "task_ids", {int}, "task ids (integers)")
    results = _column(value, "results", {str}, "JSON texts")
    scores = _column(value, "scores", _NUMBER_OR_NULL, "numbers or nulls")
    if value.get("model_versions") is not None:
        versions = _column(value, "model_versions", {str}, "strings")
    elif report_version is None and task_ids:
        raise BadRequest("needed when the report's model_version is null", field="predictions.model_versions")
    else:
        versions = [report_version] * len(task_ids)
    for name, column in (("results", results), ("scores", scores), ("model_versions", versions)):
        if len(column) != len(task_ids):
            raise BadRequest(
                f"has {len(column)} entries for {len(task_ids)} task_ids", field=f"predictions.{name}"
            )
    for index, text in enumerate(results):
        if not text.startswith("[") and not text.lstrip(_JSON_SPACE).startswith("["):
            raise BadRequest("must be a JSON array of regions, as text", field=f"predictions.results.{index}")
    if int in set(map(type, scores)):
        scores = [float(score) if type(score) is int else score for score in scores]
    return ReportedRows(task_ids, results, scores, versions)


def _rows(items: list[Any]) -> ReportedRows:
    """A report of a worker from before the columns (an object per prediction), read for one release so
    API processes and workers can be rolled in any order (README, "Rolling out a new release"); the next
    release drops it. A 400 names the first prediction that does not fit."""
    rows = ReportedRows()
    task_ids, results, scores, versions = rows.task_ids, rows.results, rows.scores, rows.versions
    for index, item in enumerate(items):
        fields: dict[str, Any] = item if isinstance(item, dict) else {}
        task_id: Any = fields.get("task_id")
        result = fields.get("result_json")
        score, version = fields.get("score"), fields.get("model_version")
        if not (
            _int(task_id)
            and isinstance(result, str)
            and result.lstrip(_JSON_SPACE).startswith("[")
            and isinstance(version, str)
            and (score is None or (isinstance(score, int | float) and not isinstance(score, bool)))
        ):
            raise BadRequest(
                "needs task_id (int), result_json (a JSON array as text), model_version (str), "
                "score (number or null)",
                field=f"predictions.{index}",
            )
        task_ids.append(task_id)
        results.append(result)
        scores.append(None if score is None else float(score))
        versions.append(version)
    return rows


def _column(columns: dict[str, Any], name: str, types: Set[type], what: str) -> list[Any]:
    value = columns.get(name)
    if value is None:
        return []
    if not (isinstance(value, list) and set(map(type, value)) <= types):
        raise BadRequest(f"must be a list of {what}", field=f"predictions.{name}")
    return value


def _refuse_separator(predictions: ReportedRows) -> None:
    """A 400 naming the first result that holds ``RESULT_SEPARATOR``: no JSON text holds it unescaped,
    and the insert splits the chunk's results there (``repository.insert_predictions``)."""
    for index, text in enumerate(predictions.results):
        if RESULT_SEPARATOR in text:
            raise BadRequest(
                "is not valid JSON: it holds the control character U+001E unescaped",
                field=f"predictions.results.{index}",
            )


def _storable(predictions: ReportedRows, errors: list[TaskError]) -> ReportedRows:
    """Predictions Postgres can store; one holding a NUL character becomes its task's error instead, so
    a backend's one bad answer neither fails the whole chunk nor loses the others.

    A NUL in a result is the escape ``\\u0000`` in its text (or a raw NUL, which no JSON text holds):
    only such results are parsed, to tell a real NUL from an escaped backslash and to name where it is.
    """

    def storable(index: int) -> bool:
        text = predictions.results[index]
        result = _decoded(text, index) if "\\u0000" in text or "\x00" in text else None
        found = find_bad_value({"result": result, "model_version": predictions.versions[index]})
        if found is None:
            return True
        message = f"prediction not stored: {found[0]} {found[1]}"
        errors.append(TaskError.model_construct(task_id=predictions.task_ids[index], message=message))
        return False

    return predictions.only(storable)


def _decoded(text: str, index: int) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"is not valid JSON: {exc}", field=f"predictions.results.{index}") from None


def unstorable_result(raw: bytes) -> BadRequest | None:
    """After Postgres refused a value of a report (``parse_report`` accepted it): the 400 naming the
    result text that is not JSON, or None when every one is (the refusal was about something else).

    Only on that error path: the report was applied in one transaction, so nothing of it was stored.
    """
    predictions = orjson.loads(raw).get("predictions") or {}
    if isinstance(predictions, list):  # a report of a worker from before the columns (``_rows``)
        texts = [
            (f"predictions.{index}.result_json", item["result_json"])
            for index, item in enumerate(predictions)
        ]
    else:
        texts = [
            (f"predictions.results.{index}", text)
            for index, text in enumerate(predictions.get("results") or [])
        ]
    for field_name, text in texts:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return BadRequest(f"is not valid JSON: {exc}", field=field_name)
    return None
