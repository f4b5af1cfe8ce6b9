"""Liveness and readiness of the gateway's HTTP app, and its ``/metrics``.

The HTTP app needs nothing but itself (backends are called per request, the API only for a client
token), so it is ready once started: Redis belongs to the workers, and a Redis outage must not take
interactive predictions out of the load balancer.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from shared.http import JsonResponse
from shared.metrics import metrics_response

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "UP"}


@router.get("/ready")
async def ready() -> JsonResponse:
    return JsonResponse({"status": "ready"})


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = await metrics_response()
    return Response(body, media_type=content_type)
