"""A chunk report holding a value Postgres cannot store keeps the rest of the chunk (found by fuzzing), and a
report that does not fit its columns is refused naming the column or result.

A NUL character in one prediction used to fail the whole report's INSERT (a 400 the worker does not
retry), so the chunk was predicted again and again until it was given up. Results arrive as the JSON text
the worker encoded: a NUL there is the escape ``\\u0000``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.annotation_api.errors import BadRequest
from services.annotation_api.jobs.schemas import parse_report
from tests.support.builders import chunk_report

RESULT = [
    {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}
]


def prediction(
    task_id: int, result: Any, model_version: str = "v1", score: float | None = 0.5
) -> tuple[int, str, float | None, str]:
    return (task_id, orjson.dumps(result).decode(), score, model_version)


def test_a_prediction_with_a_nul_becomes_its_tasks_error_and_the_others_are_kept() -> None:
    bad = [{**RESULT[0], "value": {"choices": ["pos\x00itive"]}}]
    escaped_backslash = [{**RESULT[0], "meta": {"text": "\\u0000 is how JSON writes a NUL"}}]
    raw = orjson.dumps(
        chunk_report(
            [
                prediction(1, RESULT),
                prediction(2, bad),
                prediction(3, RESULT, "v\x001", None),
                prediction(5, escaped_backslash),
            ],
            errors=[{"task_id": 4, "message": "timeout"}],
        )
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
    report = parse_report(orjson.dumps(chunk_report([(1, text, None, "v1")])))
    assert report.predictions.results == [text]


def test_versions_left_out_are_the_reports_and_needed_when_it_has_none() -> None:
    """A worker sends the versions once, as the report's, when every prediction shares it."""
    body = chunk_report([prediction(1, RESULT), prediction(2, [], score=1)], model_version="v7")
    del body["predictions"]["model_versions"]
    report = parse_report(orjson.dumps(body))
    assert (report.predictions.versions, report.predictions.scores) == (["v7", "v7"], [0.5, 1.0])
    assert type(report.predictions.scores[1]) is float
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps({**body, "model_version": None}))
    assert refused.value.field == "predictions.model_versions"


def test_a_report_model_version_with_a_nul_is_refused_by_name() -> None:
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps({"errors": [], "model_version": "v\x00"}))
    assert refused.value.field == "model_version"


@pytest.mark.parametrize("value", [0.5, 3, "x"])
def test_predictions_that_are_not_an_object_of_columns_are_refused_by_name(value: object) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps({"predictions": value}))
    assert refused.value.field == "predictions"


@pytest.mark.parametrize("value", [0.5, 3, "x", {"task_id": 1}])
def test_errors_that_are_not_a_list_are_refused_by_name(value: object) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps({"errors": value}))
    assert refused.value.field == "errors"


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("task_ids", [1, "2"]),
        ("task_ids", [1, True]),
        ("task_ids", [1, 2.0]),
        ("task_ids", "1,2"),
        ("results", ["[]", ["a list, not its text"]]),
        ("scores", [0.5, "0.5"]),
        ("scores", [0.5, False]),
        ("model_versions", ["v1", 1]),
        ("results", ["[]"]),  # one short
        ("scores", [0.5, 0.5, 0.5]),  # one too many
        ("model_versions", ["v1"]),
    ],
)
def test_a_column_of_the_wrong_type_or_length_is_refused_by_name(column: str, values: object) -> None:
    body = chunk_report([prediction(1, RESULT), prediction(2, RESULT)])
    body["predictions"][column] = values
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps(body))
    assert refused.value.field == f"predictions.{column}"


def test_a_report_of_an_object_per_prediction_is_read_for_one_release() -> None:
    """What workers of the previous release post; the next release reads columns only."""
    rows = [
        {"task_id": 1, "result_json": orjson.dumps(RESULT).decode(), "score": 1, "model_version": "v1"},
        {"task_id": 2, "result_json": "[]", "score": None, "model_version": "v2"},
    ]
    report = parse_report(orjson.dumps({"predictions": rows}))
    predictions = report.predictions
    assert (predictions.task_ids, predictions.results) == ([1, 2], [rows[0]["result_json"], "[]"])
    assert (predictions.scores, predictions.versions) == ([1.0, None], ["v1", "v2"])
    for bad in ({**rows[1], "task_id": True}, {**rows[1], "result_json": "{}"}, {**rows[1], "score": "1"}, 7):
        with pytest.raises(BadRequest) as refused:
            parse_report(orjson.dumps({"predictions": [rows[0], bad]}))
        assert refused.value.field == "predictions.1"


@pytest.mark.parametrize(
    "text",
    [
        '{"an": "object"}',
        "",
        '["a raw NUL\x00"]',  # not JSON: found while looking for NULs
        '["\\u0000", ',
        # Not JSON either; the insert splits a chunk's results at this character, so one holding it
        # would become two results and shift the others onto the wrong tasks.
        '[]\x1e[{"a": 1}]',
        '["\x1e"]',
    ],
)
def test_a_result_that_is_not_json_text_of_a_list_is_refused_by_name(text: str) -> None:
    body = chunk_report([prediction(1, RESULT), (2, text, 0.5, "v1")])
    with pytest.raises(BadRequest) as refused:
        parse_report(orjson.dumps(body))
    assert refused.value.field == "predictions.results.1"
