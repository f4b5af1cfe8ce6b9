"""Liveness and readiness.

``/health`` answers while the process runs. ``/ready`` answers 200 only when the database is reachable
and its schema is at or after the migration head this code expects, else 503 with the reason, so a load
balancer never routes to an instance that would fail every query.

"After" is what makes rolling upgrades work: migrations are expand/contract (a release only adds what
its code needs, and drops only what the previous release no longer used), and they run before the new
code rolls out, so old instances keep serving on the newer schema. A revision this code does not know is
taken to be such a later one; a known revision other than the head is older, and not ready.

Nor is it ready while its Redis database is claimed by another deployment (``redis_claim``).

A ready answer also says whether the process runs the background loops (``background_loops``): a
process without them serves requests only, and some other API process must run them.
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
def _scripts() -> ScriptDirectory:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    return ScriptDirectory.from_config(config)


def migration_head() -> str | None:
    return _scripts().get_current_head()


@cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def schema_problem(current: str | None) -> str | None:
    """Why a database at revision ``current`` cannot serve this code, or None when it can."""
    expected = migration_head()
    if current == expected:
        return None
    if current is None:
        return f"database not migrated, code expects {expected}: run `make migrate`"
    if current in _known_revisions():
        return (
            f"database schema at {current}, older than {expected} which this code expects: run `make migrate`"
        )
    return None  # a later revision, from newer code: expand/contract keeps it compatible


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
    problem = schema_problem(current)
    if problem is None:
        problem = request.app.state.redis_claim.conflict
    if problem is not None:
        return JsonResponse({"status": "not ready", "reason": problem}, status_code=503)
    loops: bool = request.app.state.settings.background_loops
    return JsonResponse({"status": "ready", "migration": current, "background_loops": loops})
