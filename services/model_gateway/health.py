"""Liveness and readiness of the gateway: ready means Redis (the job queue) answers."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared.http import JsonResponse

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "UP"}


@router.get("/ready")
async def ready(request: Request) -> JsonResponse:
    try:
        await request.app.state.redis.ping()
    except Exception as exc:
        reason = f"redis not reachable: {type(exc).__name__}: {exc}"
        return JsonResponse({"status": "not ready", "reason": reason[:500]}, status_code=503)
    return JsonResponse({"status": "ready"})
