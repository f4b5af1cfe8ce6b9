"""How well a prediction agreed with the annotation made after it: a number in [0, 1] per task.

Regions are split in two kinds. Classification regions (choices, rating, taxonomy, textarea …) agree
when both sides hold the same set of ``(from_name, value)``: 1 or 0. Spatial regions (text spans with
``start``/``end``, boxes with ``x``/``y``/``width``/``height``) are matched one to one: a region counts
as matched when the other side has a region of the same ``from_name`` and labels overlapping it with an
intersection over union of at least ``SPATIAL_IOU``; the spatial score is the matched share of all
regions on both sides. A task's agreement is the mean of the kinds present (1 when both sides are
empty).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

SPATIAL_IOU = 0.5
_BOX = ("x", "y", "width", "height")


@dataclass(frozen=True, slots=True)
class _Region:
    from_name: str
    labels: tuple[str, ...]
    span: tuple[float, float] | None
    box: tuple[float, float, float, float] | None


def _labels(value: dict[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    for key, item in value.items():
        if key.endswith("labels") and isinstance(item, list):
            found.extend(str(label) for label in item)
    return tuple(sorted(found))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _spatial(region: dict[str, Any]) -> _Region | None:
    value = region.get("value")
    if not isinstance(value, dict):
        return None
    from_name = str(region.get("from_name", ""))
    start, end = _number(value.get("start")), _number(value.get("end"))
    if start is not None and end is not None:
        return _Region(from_name, _labels(value), (start, end), None)
    box = [_number(value.get(key)) for key in _BOX]
    if all(part is not None for part in box):
        x, y, w, h = (part or 0.0 for part in box)
        return _Region(from_name, _labels(value), None, (x, y, w, h))
    return None


def _classification(regions: Iterable[dict[str, Any]]) -> set[tuple[str, bytes]]:
    keys: set[tuple[str, bytes]] = set()
    for region in regions:
        value = region.get("value")
        if isinstance(value, dict):
            keys.add((str(region.get("from_name", "")), orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
    return keys


def _iou(a: _Region, b: _Region) -> float:
    if a.span is not None and b.span is not None:
        inter = max(0.0, min(a.span[1], b.span[1]) - max(a.span[0], b.span[0]))
        union = max(a.span[1], b.span[1]) - min(a.span[0], b.span[0])
    elif a.box is not None and b.box is not None:
        ax, ay, aw, ah = a.box
        bx, by, bw, bh = b.box
        inter = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
        union = aw * ah + bw * bh - inter
    else:
        return 0.0
    return inter / union if union > 0 else float(a == b)


def _matched(side: list[_Region], other: list[_Region]) -> int:
    return sum(
        any(r.from_name == o.from_name and r.labels == o.labels and _iou(r, o) >= SPATIAL_IOU for o in other)
        for r in side
    )


def task_agreement(predicted: list[Any], annotated: list[Any]) -> float:
    """Agreement of a prediction's ``result`` with an annotation's ``result`` (see the module doc)."""
    pred_regions = [region for region in predicted if isinstance(region, dict)]
    ann_regions = [region for region in annotated if isinstance(region, dict)]
    pred_spatial = [r for r in map(_spatial, pred_regions) if r is not None]
    ann_spatial = [r for r in map(_spatial, ann_regions) if r is not None]
    pred_classes = _classification(r for r in pred_regions if _spatial(r) is None)
    ann_classes = _classification(r for r in ann_regions if _spatial(r) is None)
    scores: list[float] = []
    if pred_classes or ann_classes:
        scores.append(float(pred_classes == ann_classes))
    if pred_spatial or ann_spatial:
        matched = _matched(pred_spatial, ann_spatial) + _matched(ann_spatial, pred_spatial)
        scores.append(matched / (len(pred_spatial) + len(ann_spatial)))
    return sum(scores) / len(scores) if scores else 1.0
