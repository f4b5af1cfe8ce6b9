"""Typed errors that carry their HTTP status, and the handlers that render every error as JSON.

Bad input is always a 4xx naming the field: request validation errors become 400 with
``{"detail": ..., "validation_errors": {"field.path": ["message"]}}`` (the shape Label Studio clients
expect), and a database integrity error that slipped past validation becomes 409/400, never a 500.
A deadlock or serialization failure with a concurrent request (say, a project deleted while a worker
reports on it) is a 409 "retry", since Postgres rolled the whole transaction back and nothing was written.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.allowed_methods import install_allow_header
from shared.http import JsonResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, field: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail, **self.extra}
        if self.field:
            body["validation_errors"] = {self.field: [self.detail]}
        return body


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class ServiceBusy(ApiError):
    """Too much bulk work at once (``/internal``): the caller retries after ``retry_after_s``."""

    status_code = 503

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class UpstreamError(ApiError):
    """The model gateway or a backend behind it failed in a way the client cannot fix by retrying input."""

    status_code = 502


def _field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _api_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Token"} if exc.status_code == 401 else None
    if isinstance(exc, ServiceBusy):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return JsonResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, RequestValidationError)
    fields: dict[str, list[str]] = {}
    for error in exc.errors():
        message = error.get("msg", "invalid")
        if error.get("type") == "json_invalid":
            message = f"malformed JSON: {error.get('ctx', {}).get('error', message)}"
        fields.setdefault(_field_path(error.get("loc", ())), []).append(message)
    summary = "; ".join(f"{name}: {', '.join(messages)}" for name, messages in fields.items())
    return JsonResponse(
        {"detail": f"Invalid request: {summary}", "validation_errors": fields}, status_code=400
    )


async def _http_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JsonResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _integrity_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, IntegrityError)
    constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)
    log.info("integrity error: %s", constraint or exc.orig)
    return JsonResponse(
        {"detail": f"Conflicts with existing data ({constraint or 'constraint violated'})"},
        status_code=409,
    )


_RETRY_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock detected
_SERVER_GONE_SQLSTATES = ("57P01", "57P02", "57P03")  # shut down (admin, crash), not accepting yet


def _connection_lost(error: BaseException | None) -> bool:
    """The driver error says the database is gone: class 08 (connection exception, also "cannot connect",
    ``db.make_engine``), or the server shutting down, crashed or not accepting connections yet."""
    sqlstate = getattr(error, "sqlstate", "") or ""
    return sqlstate.startswith("08") or sqlstate in _SERVER_GONE_SQLSTATES


def database_gone(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a statement or a connect, means the database cannot be reached or
    dropped the connection: a retry once it is back will do."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or _connection_lost(getattr(exc.orig, "__cause__", None))
    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) and _connection_lost(exc)


def database_answer(error: BaseException | None, *, connection_lost: bool = False) -> JsonResponse | None:
    """The answer for a driver error the client can act on (bad value, retry, the database connection
    lost), else None (a real 500). ``connection_lost``: SQLAlchemy invalidated the connection."""
    sqlstate = getattr(error, "sqlstate", "") or ""
    if connection_lost or _connection_lost(error):
        # Postgres restarted or dropped the connection (class 08: connection exception); the pool
        # reconnects, so a retry works. A connection dropped since its checkout check, or on a pool
        # without checks (``/internal``), ends here.
        log.warning("database connection lost: %s", error)
        return JsonResponse(
            {"detail": "The connection to the database was lost; retry."},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    if sqlstate.startswith("22") or (
        isinstance(error, asyncpg.InterfaceError) and isinstance(error, ValueError)
    ):  # class 22: data exception (out of range, bad text, …); or a value asyncpg could not encode
        return JsonResponse({"detail": f"Invalid value: {error}"}, status_code=400)
    if sqlstate in _RETRY_SQLSTATES:
        log.warning("transaction rolled back (%s): %s", sqlstate, error)
        return JsonResponse(
            {"detail": "This request collided with a concurrent change and was rolled back; retry it."},
            status_code=409,
        )
    return None


async def _data_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, DBAPIError)
    answer = database_answer(getattr(exc.orig, "__cause__", None), connection_lost=exc.connection_invalidated)
    if answer is None:
        raise exc
    return answer


async def _asyncpg_error(_: Request, exc: Exception) -> JsonResponse:
    """Errors of queries run on the raw asyncpg connection (hot paths), not wrapped by SQLAlchemy."""
    answer = database_answer(exc)
    if answer is None:
        raise exc
    return answer


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _data_error)
    app.add_exception_handler(asyncpg.PostgresError, _asyncpg_error)
    app.add_exception_handler(asyncpg.InterfaceError, _asyncpg_error)
    install_allow_header(app)
