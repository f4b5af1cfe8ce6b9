"""What the gateway worker reads from and writes to the annotation API: the lease and the report.

Tasks are passed on as they came, exactly (a number beyond 64 bits stays an integer, so such a task fails
alone later, as unsendable). Results travel as JSON text, written once by the predictor as it validated
them (tests/gateway), and the API keeps that text.
"""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from services.annotation_api.jobs.schemas import parse_report
from services.model_gateway.predictor import Predicted, PredictedRow
from services.model_gateway.worker import encode_report, parse_lease
from shared.gateway_contract import BackendSpec, ChunkReport, TaskError

REGION = {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["A"]}}


def lease_body(tasks: str) -> bytes:
    """A lease as the API writes it: the envelope, and the tasks as the JSON text Postgres built."""
    envelope = {
        "chunk_id": 7,
        "job_id": 3,
        "status": "leased",
        "backend": {"id": 1, "url": "http://127.0.0.1:9090", "batch_size": 4},
        "project": {"id": 2, "created_at_ts": 1700000000, "label_config": "<View/>"},
        "skipped": 1,
        "lease_s": 120.0,
    }
    return orjson.dumps(envelope)[:-1] + b', "tasks": ' + tasks.encode() + b"}"


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_a_lease_keeps_its_tasks_as_they_came_and_validates_the_envelope() -> None:
    tasks = '[{"id": 1, "data": {"text": "a", "n": 1.5, "big": 9007199254740993}, "meta": {}, "project": 2}]'
    lease = parse_lease(lease_body(tasks))
    assert lease.tasks == orjson.loads(tasks)
    assert isinstance(lease.backend, BackendSpec) and lease.backend.batch_size == 4
    assert lease.project is not None and lease.project.protocol_id == "2.1700000000"
    assert (lease.chunk_id, lease.skipped, lease.lease_s) == (7, 1, 120.0)


@pytest.mark.parametrize("depth", [150, 300])
def test_a_number_beyond_64_bits_stays_an_integer_at_any_depth(depth: int) -> None:
    tasks = f'[{{"id": 1, "data": {{"n": 100000000000000000000, "deep": {nested(depth)}}}}}]'
    (task,) = parse_lease(lease_body(tasks)).tasks
    assert task["data"]["n"] == 10**20 and isinstance(task["data"]["n"], int)


def test_a_lease_without_tasks_is_read() -> None:
    lease = parse_lease(b'{"chunk_id": 7, "job_id": 3, "status": "done"}')
    assert (lease.status, lease.tasks, lease.backend) == ("done", [], None)


@pytest.mark.parametrize(
    "body",
    [
        lease_body('[{"id": 1}, 2]'),
        lease_body('{"id": 1}'),
        b'{"chunk_id": 7, "job_id": 3, "status": "lost"}',
        b"[]",
        b"<html>",
    ],
)
def test_a_body_that_is_no_lease_is_refused_as_pydantic_would(body: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_lease(body)


def test_the_report_carries_each_result_as_text_the_api_keeps() -> None:
    text = orjson.dumps([REGION]).decode()
    rows = [PredictedRow(1, [REGION], 0.25, "v1", text), PredictedRow(2, [], None, "v1", "[]")]
    result = Predicted(rows, [TaskError(task_id=3, message="timeout")], "v1")
    body = encode_report(result, [1, 2, 3])
    assert ChunkReport.model_validate_json(body).sent == [1, 2, 3]  # the contract's shape
    assert orjson.loads(body)["predictions"].get("model_versions") is None  # once, as the report's
    report = parse_report(body)
    rows_read = report.predictions
    assert rows_read.results == [text, "[]"]  # the predictor's text, as it is
    stored = list(
        zip(
            rows_read.task_ids,
            map(orjson.loads, rows_read.results),
            rows_read.scores,
            rows_read.versions,
            strict=True,
        )
    )
    assert stored == [(1, [REGION], 0.25, "v1"), (2, [], None, "v1")]
    assert [(e.task_id, e.message) for e in report.errors] == [(3, "timeout")]
    assert (report.model_version, report.sent) == ("v1", [1, 2, 3])


def test_predictions_of_different_versions_each_carry_theirs() -> None:
    rows = [PredictedRow(1, [], None, "v1", "[]"), PredictedRow(2, [], 0.5, "v2", "[]")]
    body = encode_report(Predicted(rows, [], None), [1, 2])
    assert ChunkReport.model_validate_json(body).predictions.model_versions == ["v1", "v2"]
    report = parse_report(body)
    assert (report.predictions.versions, report.model_version) == (["v1", "v2"], None)
