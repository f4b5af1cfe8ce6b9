"""Values the API cannot store, refused up front with a 400 naming the field (``shared.json_values``).

One app-wide dependency checks the query string and the JSON body FastAPI already parsed; routes that
read their body raw (task and prediction import, chunk reports) check it themselves.
"""

from __future__ import annotations

from fastapi import Request

from services.annotation_api.errors import BadRequest
from shared.json_values import find_bad_value, printable, text_problem


def _reject(path: str, problem: str) -> BadRequest:
    """The detail gives the exact position (``selectedItems.included.3``); ``validation_errors`` is keyed
    by the field holding it (``selectedItems.included``), as it is for errors a route's own parser finds."""
    parts = path.split(".")
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    return BadRequest(f"{path}: {problem}", field=".".join(parts))


def _is_json(request: Request) -> bool:
    """The content types FastAPI parses as JSON (a missing one is not: strict content type)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def reject_unstorable_input(request: Request) -> None:
    """App-wide dependency: 400 naming the field for a query value or JSON body value we cannot store."""
    for name, value in request.query_params.multi_items():
        for text in (name, value):
            if problem := text_problem(text):
                raise _reject(printable(name), problem)
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None or not _is_json(request) or not await request.body():
        return  # no body, or one FastAPI did not parse as JSON (its own validation answers)
    try:
        body = await request.json()  # parsed and cached by FastAPI already
    except (ValueError, RecursionError):
        return
    found = find_bad_value(body)
    if found:
        raise _reject(*found)
