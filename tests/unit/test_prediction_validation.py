"""Region validation: which predicted/annotated results fit a label config, and the reasons why not."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shared.label_config import CONTROL_TAGS, LabelConfig, parse_label_config
from shared.prediction_validation import VALUE_RULES, validate_result, validate_score

CONFIG = parse_label_config(
    """
<View>
  <Text name="text" value="$text"/>
  <Text name="title" value="$title"/>
  <Image name="image" value="$image"/>
  <Choices name="sentiment" toName="text">
    <Choice value="Positive"/><Choice value="Negative" alias="neg"/>
  </Choices>
  <Choices name="topics" toName="text,title" choice="multiple">
    <Choice value="Sports"/><Choice value="Politics"/>
  </Choices>
  <Choices name="dynamic" toName="text" value="$options"/>
  <Labels name="ner" toName="text"><Label value="PER"/><Label value="ORG"/></Labels>
  <RectangleLabels name="box" toName="image"><Label value="Car"/></RectangleLabels>
  <Labels name="kind" toName="image"><Label value="Cat"/></Labels>
  <Rectangle name="rect" toName="image"/>
  <TextArea name="summary" toName="text"/>
  <Rating name="stars" toName="text" maxRating="4"/>
  <Number name="year" toName="text" min="1900" max="2100"/>
  <DateTime name="when" toName="text"/>
  <Taxonomy name="tax" toName="text">
    <Choice value="Animals"><Choice value="Cats"/></Choice><Choice value="Plants"/>
  </Taxonomy>
  <Relations><Relation value="knows"/></Relations>
</View>
"""
)


def region(from_name: str, to_name: str, type_: str, **value: Any) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": to_name, "type": type_, "value": value}


def errors_for(*regions: Any) -> list[str]:
    return validate_result(CONFIG, list(regions))


def test_every_control_type_has_a_value_rule() -> None:
    assert {tag.lower() for tag in CONTROL_TAGS} <= set(VALUE_RULES)


def test_empty_result_is_valid() -> None:
    assert validate_result(CONFIG, []) == []


@pytest.mark.parametrize("result", [None, {"from_name": "sentiment"}, "choices"])
def test_result_must_be_a_list(result: Any) -> None:
    assert validate_result(CONFIG, result) == [
        f"result must be a list of regions, got {type(result).__name__}"
    ]


def test_region_must_be_an_object() -> None:
    assert errors_for(region("sentiment", "text", "choices", choices=["Positive"]), "oops") == [
        "result[1]: must be an object, got str"
    ]


def test_valid_regions_of_many_types() -> None:
    assert (
        errors_for(
            {**region("sentiment", "text", "choices", choices=["Positive"]), "score": 0.9},
            region("sentiment", "text", "choices", choices=["neg"]),
            region("topics", "title", "choices", choices=["Sports", "Politics"]),
            region("dynamic", "text", "choices", choices=["anything from the task"]),
            region("ner", "text", "labels", start=0, end=5, text="Alice", labels=["PER"]),
            region(
                "box", "image", "rectanglelabels", x=0, y=10.5, width=100, height=20, rectanglelabels=["Car"]
            ),
            region("rect", "image", "rectangle", x=1, y=2, width=3, height=4),
            region("summary", "text", "textarea", text=["a summary"]),
            region("summary", "text", "textarea", text="an old-style summary"),
            region("stars", "text", "rating", rating=4),
            region("year", "text", "number", number=1999.5),
            region("when", "text", "datetime", datetime="2024-01-02"),
            region("tax", "text", "taxonomy", taxonomy=[["Animals", "Cats"], ["Plants"]]),
        )
        == []
    )


def test_from_name_must_name_a_control() -> None:
    assert errors_for(region("text", "text", "choices", choices=["Positive"])) == [
        "result[0].from_name: 'text' does not name a control tag"
    ]
    assert errors_for({"to_name": "text", "type": "choices", "value": {}}) == [
        "result[0].from_name: None does not name a control tag"
    ]


def test_to_name_must_be_one_of_the_controls_targets() -> None:
    assert errors_for(region("sentiment", "image", "choices", choices=["Positive"])) == [
        "result[0].to_name: 'image' is not a toName of 'sentiment' ['text']"
    ]
    assert errors_for(region("topics", "title", "choices", choices=["Sports"])) == []


@pytest.mark.parametrize("type_", ["labels", "Choices", None, ["choices"]])
def test_type_must_match_the_control(type_: Any) -> None:
    assert errors_for(region("sentiment", "text", type_, choices=["Positive"])) == [
        f"result[0].type: {type_!r} does not fit 'sentiment', expected one of ['choices']"
    ]


def test_labels_control_with_a_tool_accepts_merged_regions() -> None:
    merged = region("kind", "image", "rectanglelabels", x=1, y=1, width=5, height=5, rectanglelabels=["Cat"])

    assert errors_for(merged) == []
    assert errors_for({**merged, "value": {"rectanglelabels": ["Dog"]}}) == [
        "result[0].value.rectanglelabels: ['Dog'] not among the labels of 'kind': ['Cat']"
    ]
    # "ner" has no Rectangle on its object, so it only makes plain "labels" regions.
    assert errors_for(region("ner", "text", "rectanglelabels", rectanglelabels=["PER"])) == [
        "result[0].type: 'rectanglelabels' does not fit 'ner', expected one of ['labels']"
    ]


@pytest.mark.parametrize("value", [1, "x", ["choices"], None])
def test_value_must_be_an_object(value: Any) -> None:
    bad = {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": value}

    assert errors_for(bad) == ["result[0].value: must be an object"]


def test_answer_key_is_required() -> None:
    assert errors_for(region("sentiment", "text", "choices", labels=["Positive"])) == [
        "result[0].value.choices: missing"
    ]
    assert errors_for(region("summary", "text", "textarea", textarea=["x"])) == [
        "result[0].value.text: missing"
    ]


@pytest.mark.parametrize("choices", [[], "Positive", [1], None])
def test_choices_must_be_a_non_empty_string_list(choices: Any) -> None:
    assert errors_for(region("sentiment", "text", "choices", choices=choices)) == [
        "result[0].value.choices: must be a non-empty list of strings"
    ]


def test_choices_must_be_allowed_labels() -> None:
    assert errors_for(region("sentiment", "text", "choices", choices=["Maybe"])) == [
        "result[0].value.choices: ['Maybe'] not among the labels of 'sentiment': ['Positive', 'Negative']"
    ]


def test_single_choice_control_takes_one_choice() -> None:
    assert errors_for(region("sentiment", "text", "choices", choices=["Positive", "Negative"])) == [
        "result[0].value.choices: 'sentiment' allows a single choice, got 2"
    ]


@pytest.mark.parametrize(
    ("from_name", "to_name", "type_", "key", "allowed"),
    [
        ("ner", "text", "labels", "labels", ["PER", "ORG"]),
        ("box", "image", "rectanglelabels", "rectanglelabels", ["Car"]),
    ],
)
def test_span_and_box_labels_must_be_allowed(
    from_name: str, to_name: str, type_: str, key: str, allowed: list[str]
) -> None:
    assert errors_for(region(from_name, to_name, type_, **{key: ["Nope"]})) == [
        f"result[0].value.{key}: ['Nope'] not among the labels of {from_name!r}: {allowed}"
    ]
    assert errors_for(region(from_name, to_name, type_, **{key: []})) == [
        f"result[0].value.{key}: must be a non-empty list of strings"
    ]


@pytest.mark.parametrize("text", [[1], None, 3, {"t": "x"}])
def test_textarea_text_must_be_strings(text: Any) -> None:
    assert errors_for(region("summary", "text", "textarea", text=text)) == [
        "result[0].value.text: must be a list of strings"
    ]


@pytest.mark.parametrize("rating", [0, 5, -1, 2.0, "3", True, None])
def test_rating_must_be_an_integer_within_max(rating: Any) -> None:
    assert errors_for(region("stars", "text", "rating", rating=rating)) == [
        "result[0].value.rating: must be an integer from 1 to 4"
    ]


@pytest.mark.parametrize("rating", [1, 4])
def test_rating_bounds_are_inclusive(rating: int) -> None:
    assert errors_for(region("stars", "text", "rating", rating=rating)) == []


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("1999", "must be a finite number"),
        (math.nan, "must be a finite number"),
        (math.inf, "must be a finite number"),
        (True, "must be a finite number"),
        (1899, "1899 is below the minimum 1900"),
        (2100.5, "2100.5 is above the maximum 2100"),
    ],
)
def test_number_must_be_finite_and_in_range(number: Any, problem: str) -> None:
    assert errors_for(region("year", "text", "number", number=number)) == [
        f"result[0].value.number: {problem}"
    ]


def test_datetime_must_be_a_string() -> None:
    assert errors_for(region("when", "text", "datetime", datetime=20240102)) == [
        "result[0].value.datetime: must be a string"
    ]


@pytest.mark.parametrize("taxonomy", [["Animals"], [[]], [], [["Animals", 1]]])
def test_taxonomy_must_be_paths(taxonomy: Any) -> None:
    assert errors_for(region("tax", "text", "taxonomy", taxonomy=taxonomy)) == [
        "result[0].value.taxonomy: must be a non-empty list of non-empty paths (lists of strings)"
    ]


def test_taxonomy_nodes_must_exist() -> None:
    assert errors_for(region("tax", "text", "taxonomy", taxonomy=[["Animals", "Dogs"]])) == [
        "result[0].value.taxonomy: ['Dogs'] not in the taxonomy of 'tax'"
    ]


@pytest.mark.parametrize(("key", "bad"), [("x", -0.1), ("y", 100.01), ("width", "10"), ("height", math.nan)])
def test_geometry_must_be_percentages(key: str, bad: Any) -> None:
    geometry: dict[str, Any] = {"x": 10, "y": 10, "width": 10, "height": 10, key: bad}

    assert errors_for(region("box", "image", "rectanglelabels", rectanglelabels=["Car"], **geometry)) == [
        f"result[0].value.{key}: must be a percentage from 0 to 100"
    ]
    assert errors_for(region("rect", "image", "rectangle", **geometry)) == [
        f"result[0].value.{key}: must be a percentage from 0 to 100"
    ]


def test_region_score_must_be_finite() -> None:
    assert errors_for(
        {**region("sentiment", "text", "choices", choices=["Positive"]), "score": math.inf}
    ) == ["score must be a finite number or null, got inf"]


def test_every_bad_region_is_reported() -> None:
    errors = errors_for(
        region("sentiment", "text", "choices", choices=["Positive"]),
        region("nope", "text", "choices", choices=["Positive"]),
        region("stars", "image", "rating", rating=9),
    )

    assert errors == [
        "result[1].from_name: 'nope' does not name a control tag",
        "result[2].to_name: 'image' is not a toName of 'stars' ['text']",
        "result[2].value.rating: must be an integer from 1 to 4",
    ]


# --- relations ---------------------------------------------------------------------------------

PERSON_A = {"id": "a", **region("ner", "text", "labels", start=0, end=1, labels=["PER"])}
PERSON_B = {"id": "b", **region("ner", "text", "labels", start=2, end=3, labels=["PER"])}


def relation(**fields: Any) -> dict[str, Any]:
    return {"type": "relation", "from_id": "a", "to_id": "b", "direction": "right", **fields}


def test_valid_relation() -> None:
    assert errors_for(PERSON_A, PERSON_B, relation(labels=["knows"])) == []
    assert errors_for(PERSON_A, PERSON_B, relation(direction=None)) == []


def test_relation_ends_must_be_regions_of_the_result() -> None:
    assert errors_for(PERSON_A, relation(to_id=["b"]), relation(from_id="zzz")) == [
        "result[1].to_id: ['b'] does not name a region of this result",
        "result[2].from_id: 'zzz' does not name a region of this result",
        "result[2].to_id: 'b' does not name a region of this result",
    ]


def test_relation_direction_and_labels() -> None:
    assert errors_for(PERSON_A, PERSON_B, relation(direction="up", labels=["hates"])) == [
        "result[2].direction: must be one of ['left', 'right', 'bi']",
        "result[2].labels: ['hates'] not among the relation labels ['knows']",
    ]
    assert errors_for(PERSON_A, PERSON_B, relation(labels="knows")) == [
        "result[2].labels: must be a list of strings"
    ]


def test_relation_labels_are_free_without_relations_tag() -> None:
    config: LabelConfig = parse_label_config(
        '<View><Text name="text" value="$text"/>'
        '<Labels name="ner" toName="text"><Label value="PER"/></Labels></View>'
    )

    assert validate_result(config, [PERSON_A, PERSON_B, relation(labels=["anything"])]) == []


# --- scores ------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", [None, 0, 1, 0.5, -2.5, 10**6])
def test_valid_scores(score: Any) -> None:
    assert validate_score(score) == []


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, "0.5", True, [0.5]])
def test_invalid_scores(score: Any) -> None:
    assert validate_score(score) == [f"score must be a finite number or null, got {score!r}"]
