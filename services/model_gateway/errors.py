"""Request validation errors as 422 naming the field, without echoing the bad input.

FastAPI's default handler echoes every bad value back and fails with a 500 when that value cannot be
rendered as JSON: undecodable bytes, a lone UTF-16 surrogate, an infinite float parsed from ``1e400``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def _text(value: Any) -> str:
    return str(value).encode(errors="backslashreplace").decode()


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "type": _text(error.get("type", "invalid")),
            "loc": [part if isinstance(part, int) else _text(part) for part in error.get("loc", ())],
            "msg": _text(error.get("msg", "invalid")),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
