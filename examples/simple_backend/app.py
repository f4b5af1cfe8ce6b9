"""The simplest Label Studio ML backend: a keyword rule for text classification (2.x protocol).

A backend is a plain HTTP + JSON server. Label Studio (and labelloop's model gateway) calls:

- ``GET /health`` and ``GET /``: liveness, ``{"status": "UP", "model_class": "<name>"}``.
- ``POST /setup`` with ``project``, ``schema`` (the label config XML), ``hostname``,
  ``access_token``, ``extra_params``: answer the version your predictions will carry,
  ``{"model_version": "..."}``.
- ``POST /predict`` with ``tasks``, ``project``, ``label_config`` and ``params`` (``context`` is
  set for interactive pre-annotation): answer ``{"results": [...]}`` with ONE entry per task, in
  task order. An entry is a prediction ``{"result": [region, ...], "score": float,
  "model_version": "..."}``, a list of predictions, or ``[]`` for "no prediction". A region's
  ``from_name``/``to_name`` name a control tag and an object tag of the label config.
- ``POST /webhook`` with ``{"action": EVENT, "project": {...}, ...}``: the training events
  (ANNOTATION_CREATED, ANNOTATION_UPDATED, ANNOTATION_DELETED, START_TRAINING) answer
  ``201 {"status": "ok", "result": ...}``; anything else ``200 {"status": "Unknown event"}``.
- ``GET /metrics``: ``{}``.

Errors answer ``500 {"status": 500, "detail": "<Exception>: message"}``, as the upstream SDK does,
so the caller can show the reason. This backend predicts for any config with a <Choices> control
over a text object: the label whose name or keywords occur most in the text wins.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from shared.label_config import ControlTag, LabelConfig, parse_label_config_cached
from shared.protocol import TRAINING_EVENTS

MODEL_CLASS = "SimpleBackend"
MODEL_VERSION = "simple-rules-1"

#: Extra words that count as evidence for a label, keyed by the label in lower case.
KEYWORDS: dict[str, frozenset[str]] = {
    "positive": frozenset({"good", "great", "love", "excellent", "nice", "happy", "best"}),
    "negative": frozenset({"bad", "awful", "hate", "terrible", "poor", "sad", "worst"}),
}

_WORD = re.compile(r"\w+")
logger = logging.getLogger(__name__)

app = FastAPI(title="Simple ML backend", description="Keyword rules speaking the 2.x protocol.")


@app.middleware("http")
async def upstream_error_shape(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Answer failures the way the upstream SDK does, so callers can show the backend's reason."""
    try:
        return await call_next(request)
    except Exception as exc:
        logger.exception("%s %s failed", request.method, request.url.path)
        detail = f"{type(exc).__name__}: {exc}"
        return JSONResponse({"status": 500, "detail": detail}, status_code=500)


def choose(text: str, labels: tuple[str, ...]) -> tuple[str, float]:
    """The label with most evidence in ``text`` and a score; a stable guess when there is none."""
    words = _WORD.findall(text.lower())
    hits = {
        label: sum(word == label.lower() or word in KEYWORDS.get(label.lower(), ()) for word in words)
        for label in labels
    }
    best = max(labels, key=lambda label: hits[label])
    if hits[best] == 0:
        # No evidence: the same text always gets the same label, at chance-level confidence.
        return labels[zlib.crc32(text.encode()) % len(labels)], 1 / len(labels)
    return best, hits[best] / (hits[best] + 1)


def _choices_target(config: LabelConfig) -> tuple[ControlTag, str, str] | None:
    """The first <Choices> with fixed labels, the object it labels, and that object's data key."""
    objects = {obj.name: obj for obj in config.objects}
    for control in config.controls:
        if control.type != "Choices" or not control.labels:
            continue
        target = objects[control.to_name[0]]
        if target.data_key is not None:
            return control, target.name, target.data_key
    return None


def predict_task(task: dict[str, Any], config: LabelConfig) -> dict[str, Any] | list[Any]:
    """One prediction for ``task``, or ``[]`` (no prediction) when the config or data don't fit."""
    target = _choices_target(config)
    if target is None:
        return []
    control, to_name, data_key = target
    text = task.get("data", {}).get(data_key)
    if not isinstance(text, str):
        return []
    label, score = choose(text, control.labels)
    region = {
        "from_name": control.name,
        "to_name": to_name,
        "type": "choices",
        "value": {"choices": [label]},
    }
    return {"result": [region], "score": score, "model_version": MODEL_VERSION}


@app.get("/")
@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "UP", "model_class": MODEL_CLASS}


@app.post("/setup")
async def setup() -> dict[str, str]:
    """Rules need no per-project state, so every project gets the same version."""
    return {"model_version": MODEL_VERSION}


@app.post("/predict")
async def predict(request: Request) -> dict[str, list[Any]]:
    body = await request.json()
    config = parse_label_config_cached(body["label_config"])
    return {"results": [predict_task(task, config) for task in body["tasks"]]}


@app.post("/webhook")
async def webhook(request: Request) -> JSONResponse:
    """Training events would call fit(); rules do not learn, so report the unchanged version."""
    event = (await request.json()).get("action")
    if event in TRAINING_EVENTS:
        return JSONResponse({"status": "ok", "result": {"model_version": MODEL_VERSION}}, 201)
    return JSONResponse({"status": "Unknown event"})


@app.get("/metrics")
async def metrics() -> dict[str, Any]:
    return {}
