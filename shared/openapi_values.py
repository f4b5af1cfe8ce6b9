"""Declare in the OpenAPI specs which request values the services store: no value they refuse is schema-valid.

Both services refuse, with a 4xx naming the field, what Postgres or a later step cannot take
(``shared.json_values``): text with NUL (``\\u0000``) or a lone UTF-16 surrogate, numbers of magnitude
2^63 or more (integers up to 2^64), nesting deeper than ``MAX_DEPTH``. Pydantic's schemas do not say so;
this rewrites every request-side schema (parameters, bodies and the components they use) to: text gets
``TEXT_PATTERN`` (not for the gateway, which stores nothing and passes NUL on), JSON numbers get bounds, and free-form JSON (task data, results, extra fields a model
ignores) is ``StorableJsonValue``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.json_values import MAX_DEPTH

TEXT_PATTERN = "^[^\\u0000]*$"
"""Text without NUL. Lone surrogates are refused too, but a pattern cannot name them (a surrogate range is
not a valid regex to most validators): they are no Unicode text, so no JSON Schema string either."""
JSON_VALUE = "StorableJsonValue"
_REF_PREFIX = "#/components/schemas/"
_JSON_REF = {"$ref": _REF_PREFIX + JSON_VALUE}
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_FLOAT_LIMIT = 2**63


def _open_object(pattern: str | None) -> dict[str, Any]:
    names = {"propertyNames": {"pattern": pattern}} if pattern else {}
    return {**names, "additionalProperties": _JSON_REF}


def _json_value_schema(pattern: str | None) -> dict[str, Any]:
    text = "text without NUL (\\u0000) or lone surrogates" if pattern else "text without lone surrogates"
    return {
        "description": f"Any JSON value the service can store and pass on: {text}, integers from -2^63 to "
        f"2^64-1, other numbers of magnitude below 2^63, at most {MAX_DEPTH} levels of nesting.",
        "anyOf": [
            {"type": "string", **({"pattern": pattern} if pattern else {})},
            {"type": "integer", "minimum": _INT_MIN, "maximum": _INT_MAX},
            {"type": "number", "exclusiveMinimum": -_FLOAT_LIMIT, "exclusiveMaximum": _FLOAT_LIMIT},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": _JSON_REF},
            {"type": "object", **_open_object(pattern)},
        ],
    }


def _is_free_form(schema: dict[str, Any]) -> bool:
    """``{}`` (pydantic's ``Any``): only annotations, no constraint."""
    return not set(schema) - {"title", "description", "default", "examples"}


def _declare(schema: Any, in_json: bool, pattern: str | None) -> Any:
    """``schema`` with the declarations added; ``in_json``: a body value (numbers are JSON numbers)."""
    if isinstance(schema, list):
        return [_declare(item, in_json, pattern) for item in schema]
    if not isinstance(schema, dict) or "$ref" in schema:
        return schema
    if in_json and _is_free_form(schema):
        return {**schema, **_JSON_REF}
    out = {
        key: _declare(value, in_json, pattern) if key in _SUBSCHEMAS else value
        for key, value in schema.items()
    }
    if key_schemas := out.get("properties"):
        out["properties"] = {name: _declare(sub, in_json, pattern) for name, sub in key_schemas.items()}
    kind = out.get("type")
    if kind == "string" and pattern and "enum" not in out and "const" not in out:
        if "pattern" in out:  # one schema holds one pattern: the other goes in an allOf
            out["allOf"] = [*out.get("allOf", []), {"pattern": pattern}]
        else:
            out["pattern"] = pattern
    elif in_json and kind == "integer":
        out.setdefault("minimum", _INT_MIN)
        out.setdefault("maximum", _INT_MAX)
    elif in_json and kind == "number" and not {"maximum", "exclusiveMaximum"} & out.keys():
        out["exclusiveMaximum"] = _FLOAT_LIMIT
        if not {"minimum", "exclusiveMinimum"} & out.keys():
            out["exclusiveMinimum"] = -_FLOAT_LIMIT
    elif in_json and kind == "object":
        if out.get("additionalProperties", True) is True:
            out.update(_open_object(pattern))
        elif pattern:
            out.setdefault("propertyNames", {"pattern": pattern})
    return out


_SUBSCHEMAS = frozenset({"items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems", "not"})


def schema_refs(node: Any) -> Iterator[str]:
    """Names of the component schemas ``node`` refers to, anywhere inside it."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            yield ref.removeprefix(_REF_PREFIX)
        for value in node.values():
            yield from schema_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from schema_refs(item)


def declare_storable_values(spec: dict[str, Any], *, refuses_nul: bool = True) -> None:
    """Rewrite ``spec`` (a full app spec) in place; ``refuses_nul``: the service refuses NUL in text."""
    pattern = TEXT_PATTERN if refuses_nul else None
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    pending: list[str] = []
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _declare(parameter.get("schema", {}), False, pattern)
                pending.extend(schema_refs(parameter["schema"]))
            for media in operation.get("requestBody", {}).get("content", {}).values():
                media["schema"] = _declare(media.get("schema", {}), True, pattern)
                pending.extend(schema_refs(media["schema"]))
    done: set[str] = set()
    while pending:
        name = pending.pop()
        if name in done or name not in schemas:
            continue
        done.add(name)
        schemas[name] = _declare(schemas[name], True, pattern)
        pending.extend(schema_refs(schemas[name]))
    schemas[JSON_VALUE] = _json_value_schema(pattern)
