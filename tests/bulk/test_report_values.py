"""A chunk report holding a value Postgres cannot store keeps the rest of the chunk (found by fuzzing).

A NUL character in one prediction used to fail the whole report's INSERT (a 400 the worker does not
retry), so the chunk was predicted again and again until it was given up.
"""

from __future__ import annotations

import orjson
import pytest

from services.annotation_api.errors import BadRequest
from services.annotation_api.jobs.schemas import parse_report

RESULT = [
    {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}
]


def test_a_prediction_with_a_nul_becomes_its_tasks_error_and_the_others_are_kept() -> None:
    bad = [{**RESULT[0], "value": {"choices": ["pos\x00itive"]}}]
    raw = orjson.dumps(
        {
            "predictions": [
                {"task_id": 1, "result": RESULT, "model_version": "v1", "score": 0.5},
                {"task_id": 2, "result": bad, "model_version": "v1", "score": 0.5},
                {"task_id": 3, "result": RESULT, "model_version": "v\x001", "score": None},
            ],
            "errors": [{"task_id": 4, "message": "timeout"}],
        }
    )
    report = parse_report(raw)
    assert [p.task_id for p in report.predictions] == [1]
    errors = {e.task_id: e.message for e in report.errors}
    assert errors[4] == "timeout"
    assert "result.0.value.choices.0" in errors[2] and "NUL" in errors[2]
    assert "model_version" in errors[3] and "NUL" in errors[3]


def test_a_report_model_version_with_a_nul_is_refused_by_name() -> None:
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps({"predictions": [], "errors": [], "model_version": "v\x00"}))
    assert refused.value.field == "model_version"


@pytest.mark.parametrize("field", ["predictions", "errors"])
@pytest.mark.parametrize("value", [0.5, 3, "x", {"task_id": 1}])
def test_a_report_list_that_is_not_a_list_is_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps({field: value}))
    assert refused.value.field == field
