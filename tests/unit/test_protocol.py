"""The ML backend wire protocol: request models and reading both backend lines' answers."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pydantic
import pytest

from shared.protocol import (
    MAX_DETAIL_CHARS,
    TRAINING_EVENTS,
    CountMismatch,
    HealthResponse,
    NormalizedPrediction,
    PredictParams,
    PredictRequest,
    ProtocolError,
    SetupRequest,
    SetupResponse,
    WebhookEvent,
    backend_error_detail,
    decode_json,
    normalize_predict_response,
    project_ref,
)

REGION = {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["A"]}}


def prediction(**fields: Any) -> dict[str, Any]:
    return {"result": [REGION], **fields}


# ---- requests ---------------------------------------------------------------------------------


def test_project_ref_is_id_dot_unix_seconds() -> None:
    created = datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    assert project_ref(7, created) == f"7.{int(created.timestamp())}"


def test_setup_request_serializes_schema_and_keeps_extra_params_a_string() -> None:
    request = SetupRequest(
        project="3.1700000000",
        label_schema="<View/>",
        hostname="http://127.0.0.1:8080",
        access_token="secret-token",
        extra_params='{"threshold": 0.5}',
    )
    assert request.model_dump() == {
        "project": "3.1700000000",
        "schema": "<View/>",
        "hostname": "http://127.0.0.1:8080",
        "access_token": "secret-token",
        "extra_params": '{"threshold": 0.5}',
    }
    assert "secret-token" not in repr(request)
    parsed = SetupRequest.model_validate(request.model_dump())
    assert parsed.label_schema == "<View/>"


def test_setup_request_refuses_an_object_as_extra_params() -> None:
    with pytest.raises(pydantic.ValidationError):
        SetupRequest.model_validate(
            {
                "project": "3.1700000000",
                "schema": "<View/>",
                "hostname": "h",
                "access_token": "t",
                "extra_params": {"threshold": 0.5},
            }
        )


def test_setup_request_refuses_a_project_that_is_not_id_dot_timestamp() -> None:
    with pytest.raises(pydantic.ValidationError):
        SetupRequest(project="3", label_schema="<View/>", hostname="h", access_token="t")


def test_predict_request_wire_shape() -> None:
    request = PredictRequest(
        tasks=[{"id": 1, "data": {"text": "hi"}}],
        project="3.1700000000",
        label_config="<View/>",
        params=PredictParams(login="u", password="p", context={"result": []}),
    )
    assert request.model_dump() == {
        "tasks": [{"id": 1, "data": {"text": "hi"}}],
        "project": "3.1700000000",
        "label_config": "<View/>",
        "params": {"login": "u", "password": "p", "context": {"result": []}},
    }
    assert "'p'" not in repr(request.params)
    bare = PredictRequest(tasks=[], project="1.2", label_config="<View/>")
    assert bare.model_dump()["params"] == {"login": None, "password": None, "context": None}


def test_webhook_events_and_the_ones_2x_trains_on() -> None:
    assert WebhookEvent("ANNOTATIONS_DELETED") is WebhookEvent.ANNOTATIONS_DELETED
    assert WebhookEvent.START_TRAINING == "START_TRAINING"
    assert "ANNOTATION_CREATED" in TRAINING_EVENTS
    assert WebhookEvent.ANNOTATIONS_DELETED not in TRAINING_EVENTS
    assert WebhookEvent.ANNOTATION_DELETED in TRAINING_EVENTS


# ---- health and setup answers -----------------------------------------------------------------


def test_health_of_both_lines() -> None:
    v2 = HealthResponse.model_validate({"status": "UP", "model_class": "MyModel"})
    assert v2.is_up and not v2.is_legacy and v2.model_class == "MyModel"
    v1 = HealthResponse.model_validate({"status": "UP", "model_dir": "/m", "v2": False})
    assert v1.is_up and v1.is_legacy
    assert not HealthResponse.model_validate({"status": "DOWN"}).is_up
    with pytest.raises(pydantic.ValidationError):
        HealthResponse.model_validate(["UP"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"model_version": "v7"}, "v7"),
        ({"model_version": "INITIAL"}, "INITIAL"),
        ({"model_version": 3}, "3"),
        ({"model_version": "undefined"}, None),
        ({"model_version": ""}, None),
        ({"model_version": None}, None),
        ({}, None),
    ],
)
def test_setup_response_version(raw: dict[str, Any], expected: str | None) -> None:
    assert SetupResponse.model_validate(raw).model_version == expected


def test_setup_response_refuses_a_non_string_version() -> None:
    with pytest.raises(pydantic.ValidationError):
        SetupResponse.model_validate({"model_version": {"v": 1}})


# ---- /predict answers -------------------------------------------------------------------------


def test_2x_shape_with_version_per_prediction() -> None:
    body = {
        "results": [
            prediction(score=0.9, model_version="m2"),
            prediction(score=0.1, model_version="m2"),
        ]
    }
    out = normalize_predict_response(body, 2, setup_version="m1")
    assert out.mismatch is None
    assert (out.task_count, out.result_count) == (2, 2)
    assert out.per_task == [
        [NormalizedPrediction(result=[REGION], score=0.9, model_version="m2")],
        [NormalizedPrediction(result=[REGION], score=0.1, model_version="m2")],
    ]


def test_1x_shape_takes_the_top_level_version() -> None:
    body = {"results": [prediction(score=1)], "model_version": "legacy-5"}
    out = normalize_predict_response(body, 1, setup_version="INITIAL")
    [[only]] = out.per_task
    assert only.model_version == "legacy-5"
    assert only.score == 1.0 and isinstance(only.score, float)


def test_version_order_per_prediction_then_top_level_then_setup() -> None:
    body = {
        "results": [
            prediction(model_version="own"),
            prediction(),
            prediction(model_version="undefined"),
        ],
        "model_version": "top",
    }
    out = normalize_predict_response(body, 3, setup_version="setup")
    assert [p[0].model_version for p in out.per_task] == ["own", "top", "top"]
    no_top = normalize_predict_response({"results": [prediction()]}, 1, setup_version="setup")
    assert no_top.per_task[0][0].model_version == "setup"


@pytest.mark.parametrize("setup_version", [None, "undefined", ""])
def test_missing_version_stays_none(setup_version: str | None) -> None:
    body = {"results": [prediction(model_version="undefined"), prediction(model_version=None)]}
    out = normalize_predict_response(body, 2, setup_version=setup_version)
    assert [p[0].model_version for p in out.per_task] == [None, None]


def test_missing_score_is_none() -> None:
    out = normalize_predict_response({"results": [prediction()]}, 1, None)
    assert out.per_task[0][0].score is None


def test_entry_forms_dict_list_and_empty() -> None:
    body = {
        "results": [
            prediction(score=0.5),
            [prediction(score=0.7, model_version="a"), prediction(score=0.2, model_version="b")],
            [],
        ]
    }
    out = normalize_predict_response(body, 3, "s")
    assert out.mismatch is None
    assert [len(p) for p in out.per_task] == [1, 2, 0]
    assert [p.model_version for p in out.per_task[1]] == ["a", "b"]


def test_empty_result_list_is_a_valid_prediction() -> None:
    out = normalize_predict_response({"results": [{"result": [], "score": 0.0}]}, 1, None)
    assert out.per_task == [[NormalizedPrediction(result=[], score=0.0, model_version=None)]]


def test_single_result_for_many_tasks_means_the_backend_cannot_batch() -> None:
    out = normalize_predict_response({"results": [prediction()]}, 5, "s")
    assert out.mismatch is CountMismatch.SINGLE_RESULT
    assert out.per_task == []
    assert (out.task_count, out.result_count) == (5, 1)


@pytest.mark.parametrize(("count", "tasks"), [(4, 3), (2, 1)])
def test_more_results_than_tasks_cannot_be_matched(count: int, tasks: int) -> None:
    out = normalize_predict_response({"results": [prediction()] * count}, tasks, "s")
    assert out.mismatch is CountMismatch.OTHER
    assert out.per_task == []
    assert (out.task_count, out.result_count) == (tasks, count)


def test_no_results_means_no_predictions_not_an_error() -> None:
    out = normalize_predict_response({"results": []}, 3, "s")
    assert out.mismatch is None and out.per_task == [[], [], []]


def test_fewer_results_go_to_the_first_tasks_in_order() -> None:
    out = normalize_predict_response({"results": [prediction(), prediction()]}, 3, "s")
    assert out.mismatch is None and [len(entry) for entry in out.per_task] == [1, 1, 0]
    assert (out.task_count, out.result_count) == (3, 2)


def test_a_bare_list_is_read_as_results_and_a_numeric_string_score_as_a_number() -> None:
    out = normalize_predict_response([prediction(score="0.25")], 1, "s")
    assert out.mismatch is None and out.per_task[0][0].score == 0.25


def test_no_tasks_and_no_results_match() -> None:
    out = normalize_predict_response({"results": []}, 0, None)
    assert out.mismatch is None and out.per_task == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([{"results": [prediction()]}], "results[0].result is NoneType"),
        ("results", "expected an object"),
        (None, "expected an object"),
        ({"predictions": [prediction()]}, "no 'results'"),
        ({"results": None}, "'results' is NoneType"),
        ({"results": {"0": prediction()}}, "'results' is dict"),
        ({"results": ["Positive"]}, "results[0] is str"),
        ({"results": [prediction(), 3]}, "results[1] is int"),
        ({"results": [[prediction(), "x"]]}, "results[0][1] is str"),
        ({"results": [[[prediction()]]]}, "results[0][0] is list"),
        ({"results": [{"score": 0.5}]}, "results[0].result is NoneType"),
        ({"results": [{"result": "Positive"}]}, "results[0].result is str"),
        ({"results": [{"result": ["Positive"]}]}, "results[0].result holds a str"),
        ({"results": [prediction(score="high")]}, "score is not a finite number"),
        ({"results": [prediction(score="nan")]}, "score is not a finite number"),
        ({"results": [prediction(score=math.nan)]}, "score is not a finite number"),
        ({"results": [prediction(score=math.inf)]}, "score is not a finite number"),
        ({"results": [prediction(score=True)]}, "score is not a finite number"),
        ({"results": [prediction(model_version=["v"])]}, "model_version must be a string"),
        ({"results": [prediction()], "model_version": {}}, "model_version must be a string"),
    ],
)
def test_garbage_is_a_protocol_error(body: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        normalize_predict_response(body, 1, "s")
    assert message in caught.value.detail
    assert str(caught.value) == caught.value.detail


def test_garbage_wins_over_a_count_mismatch() -> None:
    with pytest.raises(ProtocolError):
        normalize_predict_response({"results": [prediction(), "bad"]}, 5, "s")


def test_decode_json() -> None:
    assert decode_json(b'{"results": []}') == {"results": []}
    with pytest.raises(ProtocolError, match="not JSON"):
        decode_json(b"<html>500</html>")
    with pytest.raises(ProtocolError, match="not JSON"):
        decode_json(b"")


# ---- error details ----------------------------------------------------------------------------


def test_detail_of_a_2x_json_error() -> None:
    body = b'{"status": 500, "detail": "ValueError: model not loaded", "traceback": "..."}'
    assert backend_error_detail(500, "application/json", body) == "ValueError: model not loaded"


def test_detail_of_other_json_errors() -> None:
    assert backend_error_detail(500, "application/json", b'{"message": "boom"}') == "boom"
    assert backend_error_detail(400, "application/json", b'{"error": "bad"}') == "bad"
    listed = backend_error_detail(422, "application/json", b'{"detail": [{"msg": "x"}]}')
    assert listed == '[{"msg":"x"}]'
    assert backend_error_detail(500, "application/json", b'{"other": 1}') == '{"other":1}'
    assert backend_error_detail(500, "application/json", b'"oops"') == '"oops"'


def test_detail_from_json_without_a_json_content_type() -> None:
    body = b'{"status":500,"detail":"KeyError: tasks"}'
    assert backend_error_detail(500, "text/plain", body) == "KeyError: tasks"


def test_detail_of_an_html_error_page() -> None:
    page = (
        b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
        b"<style>p { color: red }</style><script>alert(1)</script>"
        b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error &amp; "
        b"was unable to complete your request.</p>\n"
    )
    detail = backend_error_detail(500, "text/html; charset=utf-8", page)
    assert detail == (
        "500 Internal Server Error Internal Server Error The server encountered an internal "
        "error & was unable to complete your request."
    )


def test_detail_of_plain_text_and_empty_bodies() -> None:
    assert backend_error_detail(404, "text/plain", b"Not Found\n") == "Not Found"
    assert backend_error_detail(503, "", b"") == "HTTP 503 Service Unavailable"
    assert backend_error_detail(599, "text/plain", b"  ") == "HTTP 599 error"
    assert backend_error_detail(500, "application/json", b"{broken") == "{broken"


def test_detail_of_a_traceback_keeps_the_exception_line() -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "model.py", line 3, in predict\n'
        "    raise RuntimeError('no weights')\n"
        "RuntimeError: no weights\n"
    )
    assert backend_error_detail(500, "text/plain", traceback.encode()) == "RuntimeError: no weights"
    body = orjson.dumps({"status": "ERROR", "message": traceback})
    assert backend_error_detail(500, "application/json", body) == "RuntimeError: no weights"


def test_detail_is_one_truncated_line() -> None:
    detail = backend_error_detail(500, "text/plain", ("x" * 2000 + "\n\r\ty").encode())
    assert len(detail) == MAX_DETAIL_CHARS
    assert detail.endswith("…")
    assert "\n" not in backend_error_detail(500, "text/plain", b"line one\nline two")


def test_detail_survives_invalid_utf8() -> None:
    assert backend_error_detail(500, "text/plain", b"bad \xff byte") == "bad \ufffd byte"
