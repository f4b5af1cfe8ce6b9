"""Named entities by substring matching: interactive pre-annotation that needs no GPU (2.x protocol).

A standalone Label Studio ML backend (it imports nothing from labelloop, like any third-party backend):

- It learns from annotations: every ``<Labels>`` span of an annotation it receives on ``/webhook``
  (ANNOTATION_CREATED / ANNOTATION_UPDATED) teaches it "this text is that label". Each project's
  entities are kept in ``<data dir>/project-<id>.json``, so a restart forgets nothing, and every change
  to them is a new model version (``ner-substring-v<N>``).
- A plain ``/predict`` proposes every occurrence of every learned text in the task with its label
  (longest texts first, never two overlapping spans).
- An interactive ``/predict`` (``params.context.result`` holds the regions the annotator just drew,
  as Label Studio's editor sends them: ``{"from_name", "to_name", "type": "labels", "value": {"start",
  "end", "text", "labels"}}``) proposes every OTHER occurrence of each selected text in the task with the
  same label.

Matching ignores case and only takes whole words: "Ann" does not match inside "Annual". Deleting an
annotation does not unlearn its spans; relabeling a text in a later annotation does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

MODEL_CLASS = "NerSubstringBackend"
DATA_DIR_ENV = "LABELLOOP_NER_BACKEND_DATA_DIR"
DEFAULT_DATA_DIR = Path(".data/ner-backend")
LEARNING_EVENTS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED"})
TRAINING_EVENTS = LEARNING_EVENTS | {"ANNOTATION_DELETED", "START_TRAINING"}
"""The events Label Studio's 2.x SDK answers with 201 (it calls fit() on them)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpanTarget:
    """A ``<Labels>`` control over a ``<Text>`` object, and the task data key holding the text."""

    from_name: str
    to_name: str
    data_key: str
    labels: frozenset[str]


def span_targets(label_config: str) -> list[SpanTarget]:
    """Every Labels-over-Text pair of the label config (names and labels as Label Studio reads them)."""
    root = ET.fromstring(label_config)
    texts = {
        tag.get("name", ""): tag.get("value", "").lstrip("$")
        for tag in root.iter()
        if tag.tag == "Text" and tag.get("value", "").startswith("$")
    }
    targets = []
    for tag in root.iter("Labels"):
        to_name = tag.get("toName", "")
        if to_name in texts:
            labels = frozenset(label.get("value", "") for label in tag.iter("Label"))
            targets.append(SpanTarget(tag.get("name", ""), to_name, texts[to_name], labels))
    return targets


def occurrences(phrase: str, text: str) -> list[tuple[int, int]]:
    """(start, end) of each whole-word, case-insensitive occurrence of ``phrase`` in ``text``."""
    if not phrase.strip():
        return []
    pattern = re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)", re.IGNORECASE)
    return [(match.start(), match.end()) for match in pattern.finditer(text)]


def span_region(target: SpanTarget, text: str, start: int, end: int, labels: list[str]) -> dict[str, Any]:
    return {
        "id": f"ner-{start}-{end}",
        "from_name": target.from_name,
        "to_name": target.to_name,
        "type": "labels",
        "value": {"start": start, "end": end, "text": text[start:end], "labels": labels},
        "score": 1.0,
    }


@dataclass
class ProjectEntities:
    """What a project taught the backend: entity text (lower case) → label, and its version number."""

    version: int = 0
    entities: dict[str, str] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        return f"ner-substring-v{self.version}"

    def learn(self, spans: list[tuple[str, str]]) -> bool:
        """Add or relabel ``(text, label)`` spans; True (and a new version) when anything changed."""
        changed = False
        for text, label in spans:
            key = text.strip().lower()
            if key and self.entities.get(key) != label:
                self.entities[key] = label
                changed = True
        if changed:
            self.version += 1
        return changed


class EntityStore:
    """Project entities in memory, saved as JSON under ``root`` (written to a temporary file, then moved)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.projects: dict[int, ProjectEntities] = {}
        self.lock = asyncio.Lock()

    def _path(self, project_id: int) -> Path:
        return self.root / f"project-{project_id}.json"

    def get(self, project_id: int) -> ProjectEntities:
        if project_id not in self.projects:
            path = self._path(project_id)
            state = ProjectEntities()
            if path.exists():
                saved = orjson.loads(path.read_bytes())
                state = ProjectEntities(version=saved["version"], entities=saved["entities"])
            self.projects[project_id] = state
        return self.projects[project_id]

    def save(self, project_id: int) -> None:
        state = self.projects[project_id]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(project_id)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        body = {"model_version": state.model_version, "version": state.version, "entities": state.entities}
        temporary.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.replace(temporary, path)


def project_id_of(ref: Any) -> int:
    """The id in Label Studio's ``"<id>.<created ts>"`` project string, or a webhook's project object."""
    if isinstance(ref, dict):
        ref = ref.get("id")
    return int(str(ref).split(".", 1)[0])


def task_text(task: dict[str, Any], target: SpanTarget) -> str | None:
    text = task.get("data", {}).get(target.data_key)
    return text if isinstance(text, str) else None


def plain_prediction(
    task: dict[str, Any], targets: list[SpanTarget], state: ProjectEntities
) -> dict[str, Any] | list[Any]:
    """Every learned entity found in the task, longest first, without overlaps; ``[]`` when none."""
    regions: list[dict[str, Any]] = []
    for target in targets:
        text = task_text(task, target)
        if text is None:
            continue
        taken: list[tuple[int, int]] = []
        for phrase, label in sorted(state.entities.items(), key=lambda item: (-len(item[0]), item[0])):
            if label not in target.labels:
                continue
            for start, end in occurrences(phrase, text):
                if all(end <= s or start >= e for s, e in taken):
                    taken.append((start, end))
                    regions.append(span_region(target, text, start, end, [label]))
    if not regions:
        return []
    regions.sort(key=lambda region: region["value"]["start"])
    return {"result": regions, "score": 1.0, "model_version": state.model_version}


def interactive_prediction(
    task: dict[str, Any], targets: list[SpanTarget], state: ProjectEntities, selected: list[Any]
) -> dict[str, Any] | list[Any]:
    """Every other occurrence of each selected span's text, with the selected span's labels."""
    by_name = {(target.from_name, target.to_name): target for target in targets}
    regions: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for region in selected:
        if not isinstance(region, dict):
            continue
        value = region.get("value") or {}
        target = by_name.get((region.get("from_name", ""), region.get("to_name", "")))
        labels = value.get("labels")
        if target is None or not isinstance(labels, list) or not labels:
            continue
        text = task_text(task, target)
        if text is None:
            continue
        start, end = value.get("start"), value.get("end")
        phrase = value.get("text")
        if not isinstance(phrase, str) and isinstance(start, int) and isinstance(end, int):
            phrase = text[start:end]
        if not isinstance(phrase, str):
            continue
        for found in occurrences(phrase, text):
            if found != (start, end) and found not in seen:
                seen.add(found)
                regions.append(span_region(target, text, found[0], found[1], list(labels)))
    if not regions:
        return []
    regions.sort(key=lambda item: item["value"]["start"])
    return {"result": regions, "score": 1.0, "model_version": state.model_version}


def annotated_spans(body: dict[str, Any]) -> list[tuple[str, str]]:
    """``(text, label)`` of every labeled span in a webhook's annotation (the editor stores the text)."""
    annotation = body.get("annotation") or {}
    spans = []
    for region in annotation.get("result") or []:
        value = region.get("value") if isinstance(region, dict) else None
        if isinstance(value, dict) and value.get("labels") and isinstance(value.get("text"), str):
            spans.append((value["text"], str(value["labels"][0])))
    return spans


def create_app(data_dir: Path | None = None) -> FastAPI:
    """The backend app; entities live under ``data_dir`` (default: $LABELLOOP_NER_BACKEND_DATA_DIR)."""
    store = EntityStore(data_dir or Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        logger.info("stopped")  # make run interleaves every process's lines: say which one ended

    app = FastAPI(
        title="Named-entity ML backend",
        description="Substring matching that learns from annotations; 2.x protocol.",
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
            return JSONResponse({"status": 500, "detail": f"{type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/")
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "UP", "model_class": MODEL_CLASS}

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, str]:
        body = await request.json()
        async with store.lock:
            return {"model_version": store.get(project_id_of(body["project"])).model_version}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, list[Any]]:
        body = await request.json()
        targets = span_targets(body["label_config"])
        context = (body.get("params") or {}).get("context") or {}
        selected = context.get("result") if isinstance(context, dict) else None
        async with store.lock:
            state = store.get(project_id_of(body["project"]))
        if selected:
            results = [interactive_prediction(task, targets, state, selected) for task in body["tasks"]]
        else:
            results = [plain_prediction(task, targets, state) for task in body["tasks"]]
        return {"results": results}

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        body = await request.json()
        event = body.get("action")
        if event not in TRAINING_EVENTS:
            return JSONResponse({"status": "Unknown event"})
        project_id = project_id_of(body.get("project"))
        async with store.lock:
            state = store.get(project_id)
            if event in LEARNING_EVENTS and state.learn(annotated_spans(body)):
                store.save(project_id)
            version = state.model_version
        return JSONResponse({"status": "ok", "result": {"model_version": version}}, 201)

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {}

    return app
