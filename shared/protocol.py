"""Wire protocol of Label Studio ML backends (2.x and 1.0.x lines), as the gateway speaks it.

The request models serialize to exactly what upstream backends expect (see docs PROTOCOL.md), so
a backend written against the upstream SDK works unchanged. Responses are parsed leniently where
the two backend lines differ and strictly where a sloppy reading would store wrong data:
prediction versions are resolved in one documented order and a missing version stays ``None``
instead of being merged with a real one; count mismatches and garbage are reported, never guessed
around.
"""

from __future__ import annotations

import contextlib
import html
import math
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from http import HTTPStatus
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_DETAIL_CHARS = 500
"""Longest backend error detail we keep; backends can answer with whole tracebacks or pages."""

_PROJECT_REF = r"^\d+\.\d+$"
_UNDEFINED_VERSIONS = frozenset({"", "undefined"})


class ProtocolError(ValueError):
    """A backend answered with something the protocol does not allow (``detail`` says what)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class WebhookEvent(StrEnum):
    """Events the annotation server delivers to a backend's ``/webhook``."""

    ANNOTATION_CREATED = "ANNOTATION_CREATED"
    ANNOTATION_UPDATED = "ANNOTATION_UPDATED"
    ANNOTATIONS_DELETED = "ANNOTATIONS_DELETED"
    ANNOTATION_DELETED = "ANNOTATION_DELETED"
    START_TRAINING = "START_TRAINING"


TRAINING_EVENTS = frozenset(
    {
        WebhookEvent.ANNOTATION_CREATED,
        WebhookEvent.ANNOTATION_UPDATED,
        WebhookEvent.ANNOTATION_DELETED,
        WebhookEvent.START_TRAINING,
    }
)
"""Events a 2.x backend answers with ``fit()``; it ignores the plural ANNOTATIONS_DELETED."""


def project_ref(project_id: int, created_at: datetime) -> str:
    """The ``project`` string backends key their state by: ``"<id>.<created unix ts>"``."""
    return f"{project_id}.{int(created_at.timestamp())}"


def _normalize_version(value: Any, where: str) -> str | None:
    """A usable version string, or None when the backend gave none (missing, null, "undefined").

    Integer versions (seen from hand-written backends) are kept as their string form.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return None if value in _UNDEFINED_VERSIONS else value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError(f"{where}: model_version must be a string, got {type(value).__name__}")


class HealthResponse(BaseModel):
    """``GET /health``: 2.x names the model class, 1.0.x reports ``model_dir`` and ``v2: false``."""

    model_config = ConfigDict(extra="allow")

    status: str
    model_class: str | None = None
    model_dir: str | None = None
    v2: bool | None = None

    @property
    def is_up(self) -> bool:
        return self.status == "UP"

    @property
    def is_legacy(self) -> bool:
        """1.0.x backends train through ``POST /train`` instead of training webhook events."""
        return self.v2 is False


class SetupRequest(BaseModel):
    """``POST /setup`` body; ``extra_params`` is a string because 2.x answers 500 to an object.

    The label config travels as ``schema``, a name pydantic reserves, hence the alias.
    """

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    project: str = Field(pattern=_PROJECT_REF)
    label_schema: str = Field(alias="schema")
    hostname: str
    access_token: str = Field(repr=False)
    extra_params: str | None = None


class SetupResponse(BaseModel):
    """``POST /setup`` answer; ``model_version`` is None when the backend reports none."""

    model_config = ConfigDict(extra="allow")

    model_version: str | None = None

    @field_validator("model_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str | None:
        return _normalize_version(value, "setup")


class PredictParams(BaseModel):
    """``params`` of ``/predict``: legacy media credentials and the interactive ``context``."""

    login: str | None = None
    password: str | None = Field(default=None, repr=False)
    context: dict[str, Any] | None = None


class PredictRequest(BaseModel):
    """``POST /predict`` body."""

    tasks: list[dict[str, Any]]
    project: str = Field(pattern=_PROJECT_REF)
    label_config: str
    params: PredictParams = Field(default_factory=PredictParams)


class CountMismatch(StrEnum):
    """Why ``results`` could not be matched to tasks one by one."""

    SINGLE_RESULT = "single_result"
    """One result for several tasks: the backend cannot batch, send one task per call."""
    OTHER = "other"
    """Any other count: nothing can be attributed to a task, record a per-task error."""


class NormalizedPrediction(NamedTuple):
    """One prediction with its version resolved (None = the backend never said which). A named tuple:
    one is built per bulk-predicted task, and a frozen dataclass costs several times more to build."""

    result: list[dict[str, Any]]
    score: float | None
    model_version: str | None


@dataclass(frozen=True, slots=True)
class NormalizedPredictions:
    """``/predict`` results per task, in task order; ``per_task`` is empty when ``mismatch`` is set.

    An empty inner list means the backend made no prediction for that task, which is not an error.
    ``result_count`` below ``task_count`` without a mismatch: the results went to the first tasks in
    order (as Label Studio reads them), the rest got none.
    """

    per_task: list[list[NormalizedPrediction]]
    mismatch: CountMismatch | None
    task_count: int
    result_count: int


def decode_json(content: bytes) -> Any:
    """Parse a backend response body, turning non-JSON into a ProtocolError."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        snippet = content[:80].decode("utf-8", "replace")
        raise ProtocolError(f"response is not JSON: {snippet!r}") from None


def _where(index: int, sub: int | None) -> str:
    """Where in the body an entry is: ``results[3]``, or ``results[3][1]`` inside a list of predictions.
    Built only for a message: valid entries pay for no strings."""
    return f"results[{index}]" if sub is None else f"results[{index}][{sub}]"


def _prediction(
    raw: Any, index: int, sub: int | None, top_version: str | None, setup_version: str | None
) -> NormalizedPrediction:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{_where(index, sub)} is {type(raw).__name__}, expected a prediction object")
    result = raw.get("result")
    if not isinstance(result, list):
        raise ProtocolError(f"{_where(index, sub)}.result is {type(result).__name__}, expected a list")
    for region in result:
        if not isinstance(region, dict):
            raise ProtocolError(
                f"{_where(index, sub)}.result holds a {type(region).__name__}, expected objects"
            )
    score = raw.get("score")
    if score is not None:
        if isinstance(score, str):  # Label Studio reads scores with float(); "0.8" is seen in the wild
            with contextlib.suppress(ValueError):
                score = float(score)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ProtocolError(f"{_where(index, sub)}.score is not a finite number: {str(score)[:40]!r}")
        score = float(score)
    version = raw.get("model_version")
    if version is not None and (type(version) is not str or version in _UNDEFINED_VERSIONS):
        version = _normalize_version(version, _where(index, sub))
    return NormalizedPrediction(result, score, version or top_version or setup_version)


def normalize_predict_response(
    body: Any, task_count: int, setup_version: str | None
) -> NormalizedPredictions:
    """Read a 2.x or 1.0.x ``/predict`` body into predictions per task, as Label Studio reads it.

    Each prediction's version is its own, else the response's top-level one (1.0.x), else
    ``setup_version``, else None. ``{"results": []}`` means no predictions for these tasks; a bare list
    is read as ``results``; fewer results than tasks go to the first tasks in order (Label Studio's
    reading); one result for several tasks asks for one task per call; more results than tasks cannot
    be matched. Entries are validated even when the count does not match, so garbage is always a
    ProtocolError rather than a count mismatch.
    """
    if isinstance(body, list):
        body = {"results": body}
    if not isinstance(body, dict):
        raise ProtocolError(f"response is a JSON {type(body).__name__}, expected an object")
    if "results" not in body:
        raise ProtocolError("response has no 'results'")
    results = body["results"]
    if not isinstance(results, list):
        raise ProtocolError(f"'results' is {type(results).__name__}, expected a list")
    top_version = _normalize_version(body.get("model_version"), "response")
    setup_version = _normalize_version(setup_version, "setup")

    per_task: list[list[NormalizedPrediction]] = []
    for index, entry in enumerate(results):
        if isinstance(entry, dict):
            per_task.append([_prediction(entry, index, None, top_version, setup_version)])
        elif isinstance(entry, list):
            per_task.append(
                [_prediction(raw, index, sub, top_version, setup_version) for sub, raw in enumerate(entry)]
            )
        else:
            raise ProtocolError(
                f"results[{index}] is {type(entry).__name__}, expected a prediction object or a list"
            )

    count = len(results)
    if count == 1 and task_count > 1:
        return NormalizedPredictions([], CountMismatch.SINGLE_RESULT, task_count, count)
    if count > task_count:
        return NormalizedPredictions([], CountMismatch.OTHER, task_count, count)
    per_task += [[] for _ in range(task_count - count)]
    return NormalizedPredictions(per_task, None, task_count, count)


_HIDDEN_HTML = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_WHITESPACE = re.compile(r"\s+")
_SCAN_BYTES = 64 * 1024
_MESSAGE_KEYS = ("detail", "message", "error")


def _json_message(data: Any) -> str:
    """The backend's own message from a JSON error body (2.x uses ``detail``)."""
    if isinstance(data, dict):
        for key in _MESSAGE_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
            if value is not None:
                return orjson.dumps(value).decode()
    return orjson.dumps(data).decode()


def _last_traceback_line(text: str) -> str:
    """A Python traceback's useful part is its last line; keep that instead of its head."""
    if not text.startswith("Traceback (most recent call last)"):
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1]


def backend_error_detail(status_code: int, content_type: str, body: bytes) -> str:
    """The backend's own error message from a failed response, one line, at most 500 chars.

    Upstream keeps only a generic HTTP message; the backend's ``detail`` is what tells a user why.
    """
    head = body[:_SCAN_BYTES].decode("utf-8", "replace")
    media = content_type.split(";", 1)[0].strip().lower()
    start = head.lstrip()[:1]
    message = head
    if media.endswith("json") or start in ("{", "["):
        with contextlib.suppress(orjson.JSONDecodeError):
            message = _json_message(orjson.loads(body))
    elif media == "text/html" or start == "<":
        message = html.unescape(_TAG.sub(" ", _HIDDEN_HTML.sub(" ", head)))
    message = _WHITESPACE.sub(" ", _last_traceback_line(message.strip())).strip()
    if not message:
        try:
            phrase = HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "error"
        message = f"HTTP {status_code} {phrase}"
    if len(message) > MAX_DETAIL_CHARS:
        message = message[: MAX_DETAIL_CHARS - 1] + "…"
    return message
