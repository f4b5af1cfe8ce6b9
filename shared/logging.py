"""Structured logging with a request id on every line.

Lines are JSON when stderr is not a terminal (production, CI) and short text otherwise. The request id
lives in a context variable so every log line written while a request is served carries it, including
lines from libraries.
"""

from __future__ import annotations

import contextvars
import logging
import random
import sys
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "X-Request-ID"
_MAX_REQUEST_ID_LENGTH = 128
_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_ACCESS_FIELDS = "_access_fields"
"""Access lines carry their fields as one dict under this attribute: the formatter takes them as they
are instead of scanning every attribute of the record."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields are kept as top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        extra = getattr(record, _ACCESS_FIELDS, None)
        if extra is not None:
            line.update(extra)
        else:
            for key, value in vars(record).items():
                if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                    line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a developer's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = request_id_var.get()
        prefix = f"[{request_id[:8]}] " if request_id else ""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {record.levelname:<7} {record.name}: {prefix}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(service: str, level: str = "INFO", json_lines: bool | None = None) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    use_json = (not sys.stderr.isatty()) if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for uvicorn_logger in ("uvicorn", "uvicorn.error"):
        logging.getLogger(uvicorn_logger).handlers[:] = []
        logging.getLogger(uvicorn_logger).propagate = True


def new_request_id() -> str:
    """128 random bits as hex. Not a secret, so the seeded PRNG will do (``uuid4`` costs a syscall)."""
    return f"{random.getrandbits(128):032x}"


class RequestIdMiddleware:
    """Take ``X-Request-ID`` from the request (or make one), echo it, and log the request once.

    Every request gets its INFO access line (method, path, status, duration), the gateway's interactive
    predicts included: it is the only place a slow or failed call shows up with its request id, and it
    costs about 15 µs. Pure ASGI rather than ``BaseHTTPMiddleware`` so it keeps streaming responses
    streaming.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("labelloop.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1").strip()[:_MAX_REQUEST_ID_LENGTH]
                break
        request_id = request_id or new_request_id()
        header = (b"x-request-id", request_id.encode("latin-1"))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log.isEnabledFor(logging.INFO):
                method, path = scope["method"], scope["path"]
                fields = {
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                }
                self.log.info("%s %s %s", method, path, status, extra={_ACCESS_FIELDS: fields, **fields})
            request_id_var.reset(token)


def outgoing_request_headers() -> dict[str, str]:
    """Headers that carry the current request id to another labelloop service."""
    request_id = request_id_var.get()
    return {REQUEST_ID_HEADER: request_id} if request_id else {}
