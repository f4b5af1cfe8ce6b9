"""What the backend learns: the part of a label config it can predict, features, and the classifier.

A ``Model`` is an immutable snapshot. Training builds a new snapshot from a copy of the classifier, so
``/predict`` always reads a complete model without waiting for (or seeing half of) a training step.
Everything here is synchronous scikit-learn/numpy work; the app runs it in a thread pool.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier

from shared.label_config import LabelConfig

Kind = Literal["text", "image"]
Sample = str | NDArray[np.float32]
"""Raw model input: a text, or an image already reduced to its pixel vector."""

IMAGE_SIDE = 8
"""Images are reduced to IMAGE_SIDE x IMAGE_SIDE grey levels: enough for digits, tiny to learn from."""
MAX_IMAGE_PIXELS = 40_000_000
"""Refuse to decode larger images (decompression bombs)."""
MAX_EXAMPLES = 20_000
"""Labeled examples kept for replay; beyond this a random old one makes room."""
REPLAY = 32
"""Past examples mixed into every online update, so one annotation cannot drag the model around."""
EPOCHS = 20
"""Passes over the labeled set in a full retrain."""

_OBJECT_KINDS: dict[str, Kind] = {"Text": "text", "HyperText": "text", "Image": "image"}
# Stateless, so one instance is safe to share between threads and needs no fitting or saving.
_TEXT_FEATURES = HashingVectorizer(n_features=2**16, alternate_sign=False, ngram_range=(1, 2))


@dataclass(frozen=True, slots=True)
class Target:
    """The one <Choices> control this backend predicts and the data it reads."""

    kind: Kind
    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]


def find_target(config: LabelConfig) -> Target | None:
    """The first <Choices> with fixed labels over a text or image object; None if the config has none."""
    objects = {obj.name: obj for obj in config.objects}
    for control in config.controls:
        if control.type != "Choices" or len(control.labels) < 2:
            continue
        for name in control.to_name:
            obj = objects.get(name)
            if obj is not None and obj.data_key is not None and obj.type in _OBJECT_KINDS:
                return Target(_OBJECT_KINDS[obj.type], control.name, obj.name, obj.data_key, control.labels)
    return None


def label_of(annotation: Mapping[str, Any], target: Target) -> str | None:
    """The label an annotation gives the target, or None (cancelled, other control, unknown label)."""
    if annotation.get("was_cancelled"):
        return None
    result = annotation.get("result")
    if not isinstance(result, list):
        return None
    for region in result:
        if not isinstance(region, dict) or region.get("from_name") != target.from_name:
            continue
        value = region.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if isinstance(choices, list) and choices and choices[0] in target.labels:
            return str(choices[0])
    return None


def image_vector(content: bytes) -> NDArray[np.float32]:
    """Grey levels in [0, 1] of the image shrunk to IMAGE_SIDE x IMAGE_SIDE (box filter = area average)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise RuntimeError("image tasks need Pillow: pip install pillow") from exc
    with Image.open(io.BytesIO(content)) as image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image of {width}x{height} pixels is too large")
        grey = image.convert("L").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BOX)
        return np.asarray(grey, dtype=np.float32).reshape(-1) / 255.0


def version_name(project_id: int, version: int) -> str:
    return f"sklearn-{project_id}-v{version}"


def _features(kind: Kind, samples: Sequence[Sample]) -> Any:
    if kind == "text":
        return _TEXT_FEATURES.transform([str(sample) for sample in samples])
    return np.vstack([np.asarray(sample, dtype=np.float32) for sample in samples])


@dataclass(frozen=True, slots=True)
class Example:
    """One labeled task as the model learned it (the latest annotation of the task)."""

    annotation_id: int | None
    sample: Sample
    label: str


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Model:
    """A project's model at one version; every training step produces a new one."""

    project_id: int
    target: Target
    project_ts: int | None = None
    version: int = 0
    classifier: SGDClassifier | None = None
    examples: Mapping[int, Example] = field(default_factory=dict)
    """Labeled examples by task id: replayed in online updates, replaced by a full retrain."""
    seen: frozenset[str] = frozenset()
    """Labels the classifier has been trained on; deleting annotations cannot unlearn them."""
    deleted: int = 0
    """Annotations deleted since the last full retrain (the weights still remember them)."""

    @property
    def version_name(self) -> str:
        return version_name(self.project_id, self.version)

    def is_other_project(self, project_ts: int | None) -> bool:
        """True when the id now names another project (its creation time differs, e.g. a reset database)."""
        return None not in (self.project_ts, project_ts) and self.project_ts != project_ts

    @property
    def ready(self) -> bool:
        """Predictions from fewer than two classes are not predictions, so say nothing until then."""
        return self.classifier is not None and len(self.seen) >= 2

    def restarted(self, target: Target, project_ts: int | None) -> Model:
        """An empty model for a changed label set or a new project under this id; versions never repeat."""
        return Model(self.project_id, target, project_ts, self.version + 1)

    def learn(self, task_id: int, example: Example) -> Model:
        """This model after one online step on ``example``; itself when that exact annotation is known."""
        known = self.examples.get(task_id)
        if known is not None and (known.annotation_id, known.label) == (example.annotation_id, example.label):
            return self
        rng = np.random.default_rng(self.version)
        examples = dict(self.examples)
        examples.pop(task_id, None)
        past = list(examples.values())
        replayed = [past[i] for i in rng.choice(len(past), size=min(REPLAY, len(past)), replace=False)]
        if len(examples) >= MAX_EXAMPLES:
            examples.pop(list(examples)[int(rng.integers(len(examples)))])
        examples[task_id] = example
        batch = [example, *replayed]
        classifier = copy.deepcopy(self.classifier) if self.classifier is not None else _new_classifier()
        classifier.partial_fit(
            _features(self.target.kind, [item.sample for item in batch]),
            [item.label for item in batch],
            classes=list(self.target.labels),
        )
        return replace(
            self,
            version=self.version + 1,
            classifier=classifier,
            examples=examples,
            seen=self.seen | {example.label},
        )

    def forget(self, annotation_ids: Iterable[int]) -> Model:
        """Drop deleted annotations from the replay set; only a full retrain removes them from the weights."""
        gone = set(annotation_ids)
        examples = {task: ex for task, ex in self.examples.items() if ex.annotation_id not in gone}
        return replace(self, examples=examples, deleted=self.deleted + len(gone))

    def retrained(self, examples: Mapping[int, Example]) -> Model:
        """A model trained from scratch on exactly ``examples`` (the annotation server's current truth)."""
        # Seeded by the data, not the version: how many online steps came first must not change the result.
        rng = np.random.default_rng(len(examples))
        kept = dict(examples)
        if len(kept) > MAX_EXAMPLES:
            keys = list(kept)
            kept = {
                keys[i]: kept[keys[i]] for i in sorted(rng.choice(len(keys), MAX_EXAMPLES, replace=False))
            }
        items = list(kept.values())
        classifier: SGDClassifier | None = None
        if items:
            features = _features(self.target.kind, [item.sample for item in items])
            labels = np.array([item.label for item in items])
            classifier = _fit_averaged(features, labels, list(self.target.labels), rng)
        return replace(
            self,
            version=self.version + 1,
            classifier=classifier,
            examples=kept,
            seen=frozenset(item.label for item in items),
            deleted=0,
        )

    def predict(self, samples: Sequence[Sample]) -> list[Prediction]:
        """The most probable label of each sample and its probability (the model must be ``ready``)."""
        if self.classifier is None or not samples:
            return []
        probabilities = self.classifier.predict_proba(_features(self.target.kind, samples))
        best = probabilities.argmax(axis=1)
        classes = self.classifier.classes_
        return [
            Prediction(str(classes[i]), float(row[i])) for row, i in zip(probabilities, best, strict=True)
        ]


def _new_classifier(average: bool = False) -> SGDClassifier:
    """Logistic regression by SGD: learns online and gives class probabilities for the score."""
    return SGDClassifier(loss="log_loss", alpha=1e-3, average=average, random_state=0)


def _fit_averaged(
    features: Any, labels: NDArray[Any], classes: list[str], rng: np.random.Generator
) -> SGDClassifier:
    """Fit by averaged SGD, then hand its weights to a plain online classifier.

    Averaging the weights over all steps removes most of SGD's noise (steadier accuracy round to round),
    but an averaged model barely moves on one more annotation; the plain classifier does, and continues
    from the averaged weights with the same step count, so online updates stay small and useful.
    """
    averaged = _new_classifier(average=True)
    for _ in range(EPOCHS):
        order = rng.permutation(len(labels))
        averaged.partial_fit(features[order], labels[order], classes=classes)
    online = _new_classifier()
    online.partial_fit(features[:1], labels[:1], classes=classes)
    online.coef_ = averaged.coef_.copy()
    online.intercept_ = averaged.intercept_.copy()
    online.t_ = averaged.t_
    return online
