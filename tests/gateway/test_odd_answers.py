"""Odd but legal ``/predict`` answers, read as Label Studio reads them (label_studio/ml/models.py):
an error only where no reasonable reading exists. Each case is a real fake backend answering that body."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.model_gateway.predictor import Predicted
from shared.gateway_contract import ProjectRef
from tests.fakes.fake_backend import FakeBackend
from tests.gateway.conftest import MakeGateway, spec, tasks

POSITIVE = [
    {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}}
]


def prediction(**fields: Any) -> dict[str, Any]:
    return {"result": POSITIVE, **fields}


async def _predict(
    make_gateway: MakeGateway,
    fake: FakeBackend,
    project: ProjectRef,
    body: Any,
    count: int,
    **spec_fields: Any,
) -> Predicted:
    fake.configure(predict_body=body)
    return await make_gateway().predict(spec(fake, **spec_fields), project, tasks(count))


async def test_no_results_for_a_batch_means_no_predictions_and_no_error(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    """What upstream examples answer before they have learned anything."""
    result = await _predict(make_gateway, fake, project, {"results": []}, 5)
    assert result.predictions == [] and result.errors == []


async def test_fewer_results_than_tasks_go_to_the_first_tasks(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    body = {"results": [prediction(model_version="v1"), prediction(model_version="v1")]}
    result = await _predict(make_gateway, fake, project, body, 3)
    assert [p.task_id for p in result.predictions] == [1, 2] and result.errors == []


async def test_a_bare_list_is_the_results(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    result = await _predict(make_gateway, fake, project, [prediction(model_version="v1")] * 2, 2)
    assert [p.task_id for p in result.predictions] == [1, 2] and result.errors == []


async def test_one_dict_or_a_list_of_dicts_per_task(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    body = {
        "results": [
            prediction(model_version="a"),
            [prediction(model_version="b"), prediction(model_version="c")],
        ]
    }
    result = await _predict(make_gateway, fake, project, body, 2)
    assert [(p.task_id, p.model_version) for p in result.predictions] == [(1, "a"), (2, "b"), (2, "c")]


@pytest.mark.parametrize(
    ("body", "configured", "expected"),
    [
        ({"results": [prediction()]}, None, "undefined"),  # named nowhere
        ({"results": [prediction()]}, "from-setup", "from-setup"),  # the version /setup reported
        ({"results": [prediction()], "model_version": "top"}, "from-setup", "top"),  # 1.0.x: top level only
        ({"results": [prediction(model_version="own")], "model_version": "top"}, None, "own"),
    ],
)
async def test_model_version_missing_or_only_at_the_top_level(
    make_gateway: MakeGateway,
    fake: FakeBackend,
    project: ProjectRef,
    body: dict[str, Any],
    configured: str | None,
    expected: str,
) -> None:
    result = await _predict(make_gateway, fake, project, body, 1, model_version=configured)
    assert [p.model_version for p in result.predictions] == [expected]


async def test_a_score_given_as_a_string(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    result = await _predict(make_gateway, fake, project, {"results": [prediction(score="0.75")]}, 1)
    assert [p.score for p in result.predictions] == [0.75]


async def test_an_empty_result_is_a_prediction_of_nothing(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    """Label Studio stores it (the model looked and found nothing), so do we."""
    result = await _predict(make_gateway, fake, project, {"results": [{"result": [], "score": 0.1}]}, 1)
    assert [(p.result, p.score) for p in result.predictions] == [([], 0.1)] and result.errors == []


async def test_a_result_nested_deeper_than_json_is_written_fails_its_task_alone(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef
) -> None:
    """orjson reads 1024 levels but writes 255: such a result could not travel in the chunk report."""
    deep = "[" * 300 + "1" + "]" * 300
    region = orjson.dumps(POSITIVE[0])[:-1] + b', "meta": ' + deep.encode() + b"}"
    body = b'{"results": [' + orjson.dumps(prediction()) + b', {"result": [' + region + b"]}]}"
    result = await _predict(make_gateway, fake, project, body, 2)
    assert [(p.task_id, orjson.loads(p.result_json)) for p in result.predictions] == [(1, POSITIVE)]
    ((error,),) = [result.errors]
    assert error.task_id == 2
    assert error.message.startswith("prediction not stored: its result cannot be written as JSON")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"results": [prediction()] * 3},
            "/predict answered 3 results for 2 tasks; results cannot be matched",
        ),
        ({"results": [prediction(score="high")] * 2}, "results[0].score is not a finite number: 'high'"),
        ({"results": [{"score": 0.5}] * 2}, "results[0].result is NoneType, expected a list"),
        ({"predictions": []}, "response has no 'results'"),
    ],
)
async def test_no_reasonable_reading_is_an_error_per_task(
    make_gateway: MakeGateway, fake: FakeBackend, project: ProjectRef, body: Any, message: str
) -> None:
    result = await _predict(make_gateway, fake, project, body, 2)
    assert result.predictions == [] and len(result.errors) == 2
    assert all(message in error.message for error in result.errors)
