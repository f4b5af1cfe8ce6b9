"""The error answers every route of both services may give, declared once for their OpenAPI specs.

Bad input is a 400 naming the field (never FastAPI's 422), a missing or foreign row a 404, a body over
the size cap a 413, a collision with a concurrent change a 409; declaring them on every operation keeps
the published contract true to what the services answer (schemathesis checks it in the test suite).
"""

from __future__ import annotations

from typing import Any

_ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "detail": {"description": "What went wrong."},
        "validation_errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Per field (dotted path), the reasons it was rejected.",
        },
    },
}


def _answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_BODY}}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _answer(
        "Invalid input: `validation_errors` names the field (bad value, unknown id, NUL in text, …)."
    ),
    401: _answer("Missing or invalid credentials."),
    403: _answer("The credentials do not allow this request."),
    404: _answer("No such row (or not reachable with these credentials)."),
    409: _answer("Collided with a concurrent change or existing data; nothing was written."),
    413: _answer("The request body is larger than the service accepts."),
}
