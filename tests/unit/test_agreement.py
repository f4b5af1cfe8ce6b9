"""Agreement of a prediction with a later annotation: classification sets and overlapping regions."""

from __future__ import annotations

from typing import Any

import pytest

from services.annotation_api.ml_backends.agreement import task_agreement


def choices(*labels: str, name: str = "sentiment") -> dict[str, Any]:
    return {"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": list(labels)}}


def span(start: int, end: int, label: str) -> dict[str, Any]:
    value = {"start": start, "end": end, "text": "x" * (end - start), "labels": [label]}
    return {"from_name": "label", "to_name": "text", "type": "labels", "value": value}


def box(x: float, y: float, w: float, h: float, label: str) -> dict[str, Any]:
    value = {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}
    return {"from_name": "box", "to_name": "image", "type": "rectanglelabels", "value": value}


def test_classification_agrees_only_on_equal_sets() -> None:
    assert task_agreement([choices("A")], [choices("A")]) == 1.0
    assert task_agreement([choices("A")], [choices("B")]) == 0.0
    assert task_agreement([choices("A")], [choices("A"), choices("1", name="other")]) == 0.0
    assert task_agreement([], []) == 1.0
    assert task_agreement([], [choices("A")]) == 0.0


def test_spans_match_by_overlap_and_label() -> None:
    assert task_agreement([span(0, 10, "PER")], [span(1, 10, "PER")]) == 1.0
    assert task_agreement([span(0, 10, "PER")], [span(0, 10, "ORG")]) == 0.0
    assert task_agreement([span(0, 10, "PER")], [span(8, 20, "PER")]) == 0.0
    # one of two annotated spans found, nothing extra predicted: 2 of 3 regions matched
    assert task_agreement([span(0, 5, "PER")], [span(0, 5, "PER"), span(10, 15, "ORG")]) == pytest.approx(
        2 / 3
    )


def test_boxes_match_by_iou_and_kinds_average() -> None:
    assert task_agreement([box(10, 10, 20, 20, "cat")], [box(12, 12, 20, 20, "cat")]) == 1.0
    assert task_agreement([box(10, 10, 20, 20, "cat")], [box(40, 40, 20, 20, "cat")]) == 0.0
    mixed = task_agreement(
        [box(10, 10, 20, 20, "cat"), choices("A")], [box(10, 10, 20, 20, "cat"), choices("B")]
    )
    assert mixed == 0.5
