"""A chunk report holding a value Postgres cannot store keeps the rest of the chunk (found by fuzzing).

A NUL character in one prediction used to fail the whole report's INSERT (a 400 the worker does not
retry), so the chunk was predicted again and again until it was given up. Results arrive as the JSON text
the worker encoded (``result_json``): a NUL there is the escape ``\\u0000``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.annotation_api.errors import BadRequest
from services.annotation_api.jobs.schemas import parse_report

RESULT = [
    {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}
]


def prediction(task_id: int, result: Any, model_version: str = "v1", score: float | None = 0.5) -> Any:
    return {
        "task_id": task_id,
        "result_json": orjson.dumps(result).decode(),
        "model_version": model_version,
        "score": score,
    }


def test_a_prediction_with_a_nul_becomes_its_tasks_error_and_the_others_are_kept() -> None:
    bad = [{**RESULT[0], "value": {"choices": ["pos\x00itive"]}}]
    escaped_backslash = [{**RESULT[0], "meta": {"text": "\\u0000 is how JSON writes a NUL"}}]
    raw = orjson.dumps(
        {
            "predictions": [
                prediction(1, RESULT),
                prediction(2, bad),
                prediction(3, RESULT, "v\x001", None),
                prediction(5, escaped_backslash),
            ],
            "errors": [{"task_id": 4, "message": "timeout"}],
        }
    )
    report = parse_report(raw)
    assert report.predictions.task_ids == [1, 5]
    assert orjson.loads(report.predictions.results[1]) == escaped_backslash
    errors = {e.task_id: e.message for e in report.errors}
    assert errors[4] == "timeout"
    assert "result.0.value.choices.0" in errors[2] and "NUL" in errors[2]
    assert "model_version" in errors[3] and "NUL" in errors[3]


def test_results_are_kept_as_the_text_that_came() -> None:
    text = '[ {"from_name": "sentiment", "value": {"n": 1.50}} ]'
    report = parse_report(orjson.dumps({"predictions": [{**prediction(1, []), "result_json": text}]}))
    assert report.predictions.results == [text]


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


@pytest.mark.parametrize(
    ("result_json", "field"),
    [
        (["a list, not its text"], "predictions.1"),
        ('{"an": "object"}', "predictions.1.result_json"),
        ("", "predictions.1.result_json"),
        ('["a raw NUL\x00"]', "predictions.1.result_json"),  # not JSON: found while looking for NULs
        ('["\\u0000", ', "predictions.1.result_json"),
        # Not JSON either; the insert splits a chunk's results at this character, so one holding it
        # would become two results and shift the others onto the wrong tasks.
        ('[]\x1e[{"a": 1}]', "predictions.1.result_json"),
        ('["\x1e"]', "predictions.1.result_json"),
    ],
)
def test_a_result_that_is_not_json_text_of_a_list_is_refused_by_name(result_json: object, field: str) -> None:
    body = {"predictions": [prediction(1, RESULT), {**prediction(2, RESULT), "result_json": result_json}]}
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps(body))
    assert refused.value.field == field
