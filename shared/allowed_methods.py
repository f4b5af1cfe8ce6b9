"""405 answers whose ``Allow`` lists every method the path supports (RFC 9110), not just one route's.

FastAPI registers one route per method (``GET /api/tasks/{id}``, ``PATCH …``, ``DELETE …``); the router
answers a wrong method with the ``Allow`` of the first route whose path matched, so a client (or a
conformance check) was told ``Allow: GET`` on a path that also takes PATCH and DELETE.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match

from shared.http import JsonResponse


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method of the routes whose path matches the request's, sorted."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        route_methods = route.methods
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route_methods
    return sorted(methods)


def install_allow_header(app: FastAPI) -> None:
    """Answer every 405 with the path's full ``Allow``."""

    async def method_not_allowed(request: Request, exc: Exception) -> JsonResponse:
        assert isinstance(exc, HTTPException)
        allow = ", ".join(allowed_methods(app, request))
        return JsonResponse(
            {"detail": exc.detail}, status_code=405, headers={**(exc.headers or {}), "Allow": allow}
        )

    app.add_exception_handler(405, method_not_allowed)
