"""The HTTP side: Label Studio ML backend protocol 2.x (see docs PROTOCOL.md) over ``model.Model``.

- ``GET /health``, ``GET /``: ``{"status": "UP", "model_class": ...}``.
- ``POST /setup``: remembers the annotation server and token for the project, answers its model version.
- ``POST /predict``: one entry per task, ``[]`` while the model has learned fewer than two labels.
- ``POST /webhook``: ANNOTATION_CREATED/UPDATED learn that annotation at once; ANNOTATION(S)_DELETED
  drop it from the replay set; START_TRAINING retrains from the annotation server's export. Each
  training bumps the version ``sklearn-<project>-v<N>``. Answers ``201 {"result": ..., "status": "ok"}``.
- ``GET /metrics``: ``{}``.

Failures answer ``500 {"status": 500, "detail": "<Exception>: message"}`` as the upstream SDK does.
Training for one project is serialized by a lock; predictions read the latest complete snapshot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from examples.sklearn_backend.media import AnnotationServer, load_media, server_from_env
from examples.sklearn_backend.model import (
    Example,
    Model,
    Sample,
    Target,
    find_target,
    image_vector,
    label_of,
    version_name,
)
from examples.sklearn_backend.store import ModelStore
from shared.label_config import parse_label_config_cached
from shared.protocol import PredictRequest, SetupRequest, WebhookEvent

MODEL_CLASS = "SklearnOnlineClassifier"
DATA_DIR_ENV = "LABELLOOP_BACKEND_DATA_DIR"
DEFAULT_DATA_DIR = Path(".data/example-backend")

_LEARN_EVENTS = frozenset({WebhookEvent.ANNOTATION_CREATED, WebhookEvent.ANNOTATION_UPDATED})
# 2.x only knows the singular event; labelloop sends the plural one. Both mean the same here.
_DELETE_EVENTS = frozenset({WebhookEvent.ANNOTATION_DELETED, WebhookEvent.ANNOTATIONS_DELETED})
_MEDIA_CONCURRENCY = 8

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def _parse_project_ref(ref: str) -> tuple[int, int]:
    """``"<id>.<created unix ts>"`` → (id, ts)."""
    project_id, _, created = ref.partition(".")
    return int(project_id), int(created)


@dataclass
class ProjectState:
    """One project's live state: its current model, where its data lives, and its training lock."""

    model: Model | None
    server: AnnotationServer | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Backend:
    """Projects' models, loaded lazily from disk; blocking work goes to ``executor``."""

    def __init__(self, store: ModelStore, client: httpx.AsyncClient, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self.client = client
        self.executor = executor
        self.projects: dict[int, ProjectState] = {}
        self._loading = asyncio.Lock()
        self._media_slots = asyncio.Semaphore(_MEDIA_CONCURRENCY)

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking scikit-learn or file work off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def project(self, project_id: int) -> ProjectState:
        state = self.projects.get(project_id)
        if state is None:
            async with self._loading:
                state = self.projects.get(project_id)
                if state is None:
                    model = await self.run(self.store.load, project_id)
                    state = ProjectState(model, server_from_env())
                    self.projects[project_id] = state
        return state

    async def target_of(self, label_config: str) -> Target | None:
        return find_target(await self.run(parse_label_config_cached, label_config))

    async def _current(
        self, state: ProjectState, project_id: int, target: Target | None, project_ts: int | None
    ) -> Model:
        """The project's model for ``target``, starting over (and saving that) when the labels or the
        project behind the id changed. Call with the project lock held."""
        model = state.model
        if target is None:
            if model is None:
                raise ValueError(f"project {project_id} is unknown: send its label_config or call /setup")
            return model
        if model is None:
            fresh = Model(project_id, target, project_ts)
        elif model.target != target or model.is_other_project(project_ts):
            fresh = model.restarted(target, project_ts)
        elif model.project_ts is None and project_ts is not None:
            fresh = replace(model, project_ts=project_ts)
        else:
            return model
        await self.run(self.store.save, fresh)
        state.model = fresh
        return fresh

    async def setup(self, request: SetupRequest) -> str:
        project_id, project_ts = _parse_project_ref(request.project)
        state = await self.project(project_id)
        if request.hostname:
            state.server = AnnotationServer(request.hostname, request.access_token)
        target = await self.target_of(request.label_schema)
        async with state.lock:
            if target is None:
                return state.model.version_name if state.model else version_name(project_id, 0)
            model = await self._current(state, project_id, target, project_ts)
        return model.version_name

    async def sample(self, data: Any, target: Target, server: AnnotationServer | None) -> Sample | None:
        """The model input for a task's ``data``; None when the task lacks the field."""
        value = data.get(target.data_key) if isinstance(data, dict) else None
        if not isinstance(value, str):
            return None
        if target.kind == "text":
            return value
        async with self._media_slots:
            content = await load_media(value, server, self.client)
        return await self.run(image_vector, content)

    async def predict(self, request: PredictRequest) -> list[Any]:
        project_id, project_ts = _parse_project_ref(request.project)
        state = await self.project(project_id)
        model = state.model
        target = await self.target_of(request.label_config)
        if model is None or not model.ready or model.target != target or model.is_other_project(project_ts):
            return [[] for _ in request.tasks]
        samples = await asyncio.gather(
            *(self.sample(task.get("data"), model.target, state.server) for task in request.tasks)
        )
        present = [sample for sample in samples if sample is not None]
        predictions = iter(await self.run(model.predict, present))
        results: list[Any] = []
        for sample in samples:
            if sample is None:
                results.append([])
                continue
            prediction = next(predictions)
            region = {
                "from_name": model.target.from_name,
                "to_name": model.target.to_name,
                "type": "choices",
                "value": {"choices": [prediction.label]},
                "score": prediction.score,
            }
            results.append(
                {"result": [region], "score": prediction.score, "model_version": model.version_name}
            )
        return results

    async def webhook(self, event: WebhookEvent, body: Mapping[str, Any]) -> dict[str, Any]:
        project = body["project"]
        project_id = int(project["id"])
        state = await self.project(project_id)
        label_config = project.get("label_config")
        target = await self.target_of(label_config) if isinstance(label_config, str) else None
        async with state.lock:
            if isinstance(label_config, str) and target is None:
                version = state.model.version_name if state.model else version_name(project_id, 0)
                return {
                    "model_version": version,
                    "skipped": "the label config has no <Choices> on text or image",
                }
            model = await self._current(state, project_id, target, None)
            note: str | None = None
            if event in _LEARN_EVENTS:
                updated, note = await self._learn(model, body, state.server)
            elif event in _DELETE_EVENTS:
                deleted = body.get("annotations") or [body.get("annotation") or {}]
                updated = model.forget(int(item["id"]) for item in deleted if "id" in item)
            else:
                updated = await self._retrain(model, state)
            if updated is not model:
                await self.run(self.store.save, updated)
                state.model = updated
        result: dict[str, Any] = {
            "model_version": updated.version_name,
            "examples": len(updated.examples),
            "deleted_since_retrain": updated.deleted,
        }
        if note:
            result["skipped"] = note
        return result

    async def _learn(
        self, model: Model, body: Mapping[str, Any], server: AnnotationServer | None
    ) -> tuple[Model, str | None]:
        annotation = body.get("annotation") or {}
        task = body.get("task") or {}
        task_id = task.get("id", annotation.get("task"))
        label = label_of(annotation, model.target)
        if label is None or task_id is None:
            return model, "the annotation has no usable label for the model"
        sample = await self.sample(task.get("data"), model.target, server)
        if sample is None:
            return model, f"the task has no {model.target.data_key!r} to learn from"
        updated = await self.run(model.learn, int(task_id), Example(annotation.get("id"), sample, label))
        return updated, None if updated is not model else "already learned"

    async def _retrain(self, model: Model, state: ProjectState) -> Model:
        """Train from scratch on the latest annotation of every labeled task in the export."""
        if state.server is None:
            raise ValueError(
                f"project {model.project_id}: no annotation server to train from (call /setup first)"
            )
        tasks = await state.server.export(self.client, model.project_id)
        labeled: list[tuple[int, int | None, dict[str, Any], str]] = []
        for task in tasks:
            latest = _latest_labeled(task.get("annotations") or [], model.target)
            if latest is not None:
                annotation, label = latest
                labeled.append((int(task["id"]), annotation.get("id"), task.get("data") or {}, label))
        samples = await asyncio.gather(
            *(self.sample(data, model.target, state.server) for _, _, data, _ in labeled)
        )
        examples = {
            task_id: Example(annotation_id, sample, label)
            for (task_id, annotation_id, _, label), sample in zip(labeled, samples, strict=True)
            if sample is not None
        }
        return await self.run(model.retrained, examples)


def _latest_labeled(annotations: list[dict[str, Any]], target: Target) -> tuple[dict[str, Any], str] | None:
    """The most recently updated annotation that labels the target, with its label."""
    best: tuple[tuple[str, int], dict[str, Any], str] | None = None
    for annotation in annotations:
        label = label_of(annotation, target)
        if label is None:
            continue
        key = (
            str(annotation.get("updated_at") or annotation.get("created_at") or ""),
            int(annotation.get("id") or 0),
        )
        if best is None or key > best[0]:
            best = (key, annotation, label)
    return None if best is None else (best[1], best[2])


def _error(exc: Exception) -> JSONResponse:
    return JSONResponse({"status": 500, "detail": f"{type(exc).__name__}: {exc}"}, status_code=500)


def create_app(data_dir: Path | None = None) -> FastAPI:
    """The backend app; models live under ``data_dir`` (default: $LABELLOOP_BACKEND_DATA_DIR)."""
    root = data_dir or Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="sklearn") as executor:
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
                app.state.backend = Backend(ModelStore(root), client, executor)
                yield
        logger.info("stopped")

    app = FastAPI(
        title="scikit-learn online ML backend",
        description="Text and image classification that learns from every annotation (2.x protocol).",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def upstream_error_shape(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Answer failures the way the upstream SDK does, so callers can show the backend's reason."""
        try:
            return await call_next(request)
        except Exception as exc:
            logger.exception("%s %s failed", request.method, request.url.path)
            return _error(exc)

    def backend(request: Request) -> Backend:
        state: Backend = request.app.state.backend
        return state

    @app.get("/")
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "UP", "model_class": MODEL_CLASS}

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, str]:
        body = SetupRequest.model_validate_json(await request.body())
        return {"model_version": await backend(request).setup(body)}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, list[Any]]:
        body = PredictRequest.model_validate_json(await request.body())
        return {"results": await backend(request).predict(body)}

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        body = await request.json()
        action = body.get("action") if isinstance(body, dict) else None
        if not isinstance(action, str) or action not in WebhookEvent.__members__:
            return JSONResponse({"status": "Unknown event"})
        result = await backend(request).webhook(WebhookEvent(action), body)
        return JSONResponse({"result": result, "status": "ok"}, status_code=201)

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {}

    return app
