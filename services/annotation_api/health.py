"""Liveness and readiness.

``/health`` answers while the process runs. ``/ready`` answers 200 only when the database is reachable
and its schema is at the migration head this code expects, else 503 with the reason, so a load balancer
never routes to an instance that would fail every query.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request
from sqlalchemy import text

from shared.http import JsonResponse

router = APIRouter(tags=["health"])
REPO_ROOT = Path(__file__).resolve().parents[2]


@cache
def migration_head() -> str | None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "UP"}


@router.get("/ready")
async def ready(request: Request) -> JsonResponse:
    try:
        async with request.app.state.engine.connect() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except Exception as exc:
        reason = f"database not reachable or not migrated: {type(exc).__name__}: {exc}"
        return JsonResponse({"status": "not ready", "reason": reason[:500]}, status_code=503)
    expected = migration_head()
    if current != expected:
        reason = f"database schema at {current}, code expects {expected}: run `make migrate`"
        return JsonResponse({"status": "not ready", "reason": reason}, status_code=503)
    return JsonResponse({"status": "ready", "migration": current})
