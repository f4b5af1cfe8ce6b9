"""Models on disk, one folder per project, so a restarted backend keeps what it learned.

``model-v<N>.pickle`` holds the whole snapshot; ``meta.json`` names the current one and says what it
knows, in a form people can read. Both are written to a temporary file and moved into place with
``os.replace``, and meta.json is written last: a crash mid-save leaves the previous version in use.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import orjson

from examples.sklearn_backend.model import Model

_META = "meta.json"


def _write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)


class ModelStore:
    """Loads and saves project models under ``root`` (blocking file I/O: call from a worker thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, project_id: int) -> Path:
        return self.root / f"project-{project_id}"

    def load(self, project_id: int) -> Model | None:
        meta_path = self._folder(project_id) / _META
        if not meta_path.exists():
            return None
        meta = orjson.loads(meta_path.read_bytes())
        # Our own files in our own data folder; pickle is how scikit-learn models are saved.
        model = pickle.loads((meta_path.parent / meta["model_file"]).read_bytes())
        if not isinstance(model, Model):
            raise TypeError(f"{meta['model_file']} holds a {type(model).__name__}, not a Model")
        return model

    def save(self, model: Model) -> None:
        folder = self._folder(model.project_id)
        folder.mkdir(parents=True, exist_ok=True)
        model_file = f"model-v{model.version}.pickle"
        _write_atomically(folder / model_file, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        _write_atomically(
            folder / _META, orjson.dumps(self._meta(model, model_file), option=orjson.OPT_INDENT_2)
        )
        for old in folder.glob("model-v*.pickle"):
            if old.name != model_file:
                old.unlink(missing_ok=True)

    @staticmethod
    def _meta(model: Model, model_file: str) -> dict[str, Any]:
        return {
            "model_version": model.version_name,
            "model_file": model_file,
            "project_id": model.project_id,
            "project_ts": model.project_ts,
            "kind": model.target.kind,
            "from_name": model.target.from_name,
            "labels": list(model.target.labels),
            "labels_seen": sorted(model.seen),
            "examples": len(model.examples),
            "deleted_since_retrain": model.deleted,
        }
