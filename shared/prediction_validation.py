"""Check prediction/annotation results against a project's label config.

Label Studio stores whatever a backend returns and the editor then shows broken or empty regions.
The gateway validates each result first and keeps invalid predictions out with a readable reason;
the API uses the same rules for imported predictions and annotations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from shared.label_config import ControlTag, LabelConfig

_RELATION_TYPE: Final = "relation"
_RELATION_DIRECTIONS: Final = ("left", "right", "bi")
# Percent-of-media geometry keys shared by most image/video region types.
_PERCENT_KEYS: Final = ("x", "y", "width", "height")

_Check = Callable[[Any, ControlTag], str | None]


class ValueRule(NamedTuple):
    """Where a region type keeps its answer in `value`, and how to check it."""

    key: str
    check: _Check


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_str_list(value: Any) -> bool:
    if not isinstance(value, list):
        return False
    for item in value:  # noqa: SIM110 -- all() over a generator costs more, for every region of every prediction
        if not isinstance(item, str):
            return False
    return True


def _unknown(control: ControlTag, labels: list[str]) -> list[str]:
    allowed = control.allowed_labels
    if allowed is None or allowed.issuperset(labels):
        return []
    return [label for label in labels if label not in allowed]


def _check_labels(value: Any, control: ControlTag) -> str | None:
    if not _is_str_list(value) or not value:
        return "must be a non-empty list of strings"
    unknown = _unknown(control, value)
    if unknown:
        return f"{unknown} not among the labels of {control.name!r}: {list(control.labels)}"
    return None


def _check_choices(value: Any, control: ControlTag) -> str | None:
    error = _check_labels(value, control)
    if error is None and control.choice == "single" and len(value) > 1:
        return f"{control.name!r} allows a single choice, got {len(value)}"
    return error


def _check_taxonomy(value: Any, control: ControlTag) -> str | None:
    if not isinstance(value, list) or not value or not all(_is_str_list(p) and p for p in value):
        return "must be a non-empty list of non-empty paths (lists of strings)"
    unknown = _unknown(control, [node for path in value for node in path])
    if unknown:
        return f"{unknown} not in the taxonomy of {control.name!r}"
    return None


def _check_text(value: Any, _control: ControlTag) -> str | None:
    # The editor writes a list of strings; older results carry a single string.
    return None if isinstance(value, str) or _is_str_list(value) else "must be a list of strings"


def _check_rating(value: Any, control: ControlTag) -> str | None:
    top = control.max_rating or 0
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
        return f"must be an integer from 1 to {top}"
    return None


def _check_number(value: Any, control: ControlTag) -> str | None:
    if not _is_number(value):
        return "must be a finite number"
    if control.min is not None and value < control.min:
        return f"{value} is below the minimum {control.min:g}"
    if control.max is not None and value > control.max:
        return f"{value} is above the maximum {control.max:g}"
    return None


def _check_string(value: Any, _control: ControlTag) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _check_list(value: Any, _control: ControlTag) -> str | None:
    return None if isinstance(value, list) else "must be a list"


def _check_object(value: Any, _control: ControlTag) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


#: Region type (Label Studio's lowercased control tag) → the `value` key carrying the answer.
#: None marks geometry-only tools: their value is just the shape.
VALUE_RULES: Final[Mapping[str, ValueRule | None]] = {
    "choices": ValueRule("choices", _check_choices),
    "labels": ValueRule("labels", _check_labels),
    "rectanglelabels": ValueRule("rectanglelabels", _check_labels),
    "polygonlabels": ValueRule("polygonlabels", _check_labels),
    "keypointlabels": ValueRule("keypointlabels", _check_labels),
    "ellipselabels": ValueRule("ellipselabels", _check_labels),
    "brushlabels": ValueRule("brushlabels", _check_labels),
    "bitmasklabels": ValueRule("bitmasklabels", _check_labels),
    "hypertextlabels": ValueRule("hypertextlabels", _check_labels),
    "paragraphlabels": ValueRule("paragraphlabels", _check_labels),
    "timeserieslabels": ValueRule("timeserieslabels", _check_labels),
    "timelinelabels": ValueRule("timelinelabels", _check_labels),
    "taxonomy": ValueRule("taxonomy", _check_taxonomy),
    "textarea": ValueRule("text", _check_text),
    "rating": ValueRule("rating", _check_rating),
    "number": ValueRule("number", _check_number),
    "datetime": ValueRule("datetime", _check_string),
    "ranker": ValueRule("ranker", _check_object),
    "videorectangle": ValueRule("sequence", _check_list),
    "rectangle": None,
    "polygon": None,
    "keypoint": None,
    "ellipse": None,
    "brush": None,
    "bitmask": None,
}


def validate_score(score: Any) -> list[str]:
    """Errors for a prediction/region score: it must be absent (None) or a finite number."""
    if score is None or _is_number(score):
        return []
    return [f"score must be a finite number or null, got {score!r}"]


def validate_result(config: LabelConfig, result: Any) -> list[str]:
    """Human-readable errors for a result (list of regions); an empty list means valid."""
    if not isinstance(result, list):
        return [f"result must be a list of regions, got {type(result).__name__}"]
    errors: list[str] = []
    region_ids: set[str] | None = None  # what relations may point at; built at the first relation
    for index, region in enumerate(result):
        if not isinstance(region, dict):
            errors.append(f"result[{index}]: must be an object, got {type(region).__name__}")
        elif region.get("type") == _RELATION_TYPE:
            if region_ids is None:
                region_ids = _region_ids(result)
            errors.extend(_relation_errors(config, region, region_ids, f"result[{index}]"))
        else:
            errors.extend(_region_errors(config, region, index))
    return errors


def _region_ids(result: list[Any]) -> set[str]:
    return {
        region["id"]
        for region in result
        if isinstance(region, dict)
        and isinstance(region.get("id"), str)
        and region.get("type") != _RELATION_TYPE
    }


def _region_errors(config: LabelConfig, region: dict[str, Any], index: int) -> list[str]:
    """Errors of one ordinary (not relation) region; runs for every region of every bulk prediction."""
    # Messages name ``result[index]`` only once something is wrong: valid regions build no strings.
    from_name = region.get("from_name")
    control = config.control(from_name) if isinstance(from_name, str) else None
    if control is None:
        return [f"result[{index}].from_name: {from_name!r} does not name a control tag"]
    errors = []
    to_name = region.get("to_name")
    if to_name not in control.to_name:
        errors.append(
            f"result[{index}].to_name: {to_name!r} is not a toName of {control.name!r} {list(control.to_name)}"
        )
    score = region.get("score")
    if score is not None:  # most regions have none: no call, no list
        errors += validate_score(score)
    accepted = config.region_types[control.name]
    region_type = region.get("type")
    if not isinstance(region_type, str) or region_type not in accepted:
        errors.append(
            f"result[{index}].type: {region_type!r} does not fit {control.name!r}, "
            f"expected one of {sorted(accepted)}"
        )
        return errors
    value = region.get("value")
    if not isinstance(value, dict):
        return [*errors, f"result[{index}].value: must be an object"]
    rule = VALUE_RULES[region_type]
    if rule is not None:
        key = rule.key
        if key not in value:
            errors.append(f"result[{index}].value.{key}: missing")
        elif problem := rule.check(value[key], control):
            errors.append(f"result[{index}].value.{key}: {problem}")
    if not value.keys().isdisjoint(_PERCENT_KEYS):
        for key in _PERCENT_KEYS:
            if key in value and not (_is_number(value[key]) and 0 <= value[key] <= 100):
                errors.append(f"result[{index}].value.{key}: must be a percentage from 0 to 100")
    return errors


def _relation_errors(
    config: LabelConfig, region: dict[str, Any], region_ids: set[str], where: str
) -> list[str]:
    errors = [
        f"{where}.{end}: {region.get(end)!r} does not name a region of this result"
        for end in ("from_id", "to_id")
        if not isinstance(region.get(end), str) or region[end] not in region_ids
    ]
    direction = region.get("direction")
    if direction is not None and direction not in _RELATION_DIRECTIONS:
        errors.append(f"{where}.direction: must be one of {list(_RELATION_DIRECTIONS)}")
    labels = region.get("labels")
    if labels is not None:
        if not _is_str_list(labels):
            errors.append(f"{where}.labels: must be a list of strings")
        elif config.relation_labels:
            unknown = [label for label in labels if label not in config.relation_labels]
            if unknown:
                errors.append(
                    f"{where}.labels: {unknown} not among the relation labels {list(config.relation_labels)}"
                )
    return errors
