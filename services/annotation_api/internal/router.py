"""``/internal/chunks``: how gateway workers take and return bulk-prediction chunks (service token only).

Not part of the public API: the model gateway's workers are the only callers, and client tokens are
refused here. The routes use the ``/internal`` pool (``db.get_internal_session``): a busy API answers
503 with ``Retry-After``, which the workers honour.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from services.annotation_api.auth.dependencies import service_caller
from services.annotation_api.db import InternalSessionDep
from services.annotation_api.ids import PathId
from services.annotation_api.jobs import service
from services.annotation_api.jobs.schemas import parse_report, unstorable_result
from services.annotation_api.routing import PrefixRouter
from shared.gateway_contract import ChunkAck, ChunkHeartbeat, ChunkLease, ChunkRelease, ChunkReport
from shared.http import JsonResponse


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` substituted in, valid anywhere in an OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


_BUSY: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "Busy with other bulk calls (no `/internal` slot free in time): retry after the "
        "`Retry-After` header's seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
    }
}

router = PrefixRouter(
    prefix="/internal/chunks", tags=["internal"], dependencies=[Depends(service_caller)], responses=_BUSY
)


@router.post("/{chunk_id}/lease", response_model=ChunkLease)
async def lease_chunk(chunk_id: PathId, request: Request, session: InternalSessionDep) -> JsonResponse:
    """Lease the chunk for ``chunk_lease_s``; its tasks minus those already predicted by the backend."""
    answer = await service.lease_chunk(session, chunk_id, request.app.state.settings.chunk_lease_s)
    body = answer.lease.model_dump(mode="json")
    body["tasks"] = orjson.Fragment(answer.tasks_json)
    return JsonResponse(body)


@router.post("/{chunk_id}/heartbeat", response_model=ChunkHeartbeat)
async def heartbeat(chunk_id: PathId, request: Request, session: InternalSessionDep) -> ChunkHeartbeat:
    """Keep the lease of a chunk still being predicted; ``cancelled`` tells the worker to stop."""
    return await service.heartbeat(session, chunk_id, request.app.state.settings.chunk_lease_s)


@router.post("/{chunk_id}/release", response_model=ChunkRelease)
async def release(chunk_id: PathId, session: InternalSessionDep) -> ChunkRelease:
    """Take back a chunk its worker is shutting down with: pending again, the attempt not counted."""
    return await service.release_chunk(session, chunk_id)


@router.post(
    "/{chunk_id}/complete",
    response_model=ChunkAck,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(ChunkReport)}},
        }
    },
)
async def complete_chunk(chunk_id: PathId, request: Request, session: InternalSessionDep) -> ChunkAck:
    """Store the chunk's predictions once; a repeated or late report is acknowledged and ignored.

    The body is a ``ChunkReport``, parsed by ``parse_report`` (reports are large and frequent). Each
    ``result_json`` is stored as it is: one Postgres refuses is a 400 naming it, and nothing is stored.
    """
    raw = await request.body()
    report = parse_report(raw)
    try:
        return await service.complete_chunk(session, chunk_id, report)
    except (DBAPIError, asyncpg.PostgresError) as exc:
        refused = unstorable_result(raw) if _bad_value(exc) else None
        if refused is None:
            raise
        raise refused from exc


def _bad_value(exc: Exception) -> bool:
    """Postgres refused a value (SQLSTATE class 22, data exception), e.g. a text that is not JSON."""
    error = getattr(exc.orig, "__cause__", None) if isinstance(exc, DBAPIError) else exc
    return str(getattr(error, "sqlstate", "") or "").startswith("22")
