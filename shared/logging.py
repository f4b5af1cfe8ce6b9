"""Structured logging with a request id on every line.

Lines are JSON when stderr is not a terminal (production, CI) and short text otherwise. The request id
lives in a context variable so every log line written while a request is served carries it, including
lines from libraries.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
from opentelemetry.trace import SpanKind, get_current_span
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import tracing
from shared.metrics import HTTP_REQUEST_SECONDS

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
        trace_id = tracing.current_trace_id()
        if trace_id:
            line["trace_id"] = trace_id
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


def uvicorn_log_config(service: str, level: str = "INFO", json_lines: bool | None = None) -> dict[str, Any]:
    """``log_config`` for ``uvicorn.run``: uvicorn's own lines in the same format as everything else."""
    use_json = (not sys.stderr.isatty()) if json_lines is None else json_lines
    formatter = {"()": JsonFormatter, "service": service} if use_json else {"()": TextFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"labelloop": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "labelloop"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
        },
    }


def new_request_id() -> str:
    """128 random bits as hex. Not a secret, so the seeded PRNG will do (``uuid4`` costs a syscall)."""
    return f"{random.getrandbits(128):032x}"


_QUIET_PREFIXES = ("/internal/chunks/", "/metrics", "/health", "/ready")
"""Per-chunk worker calls and scrapes/probes: logged at DEBUG, or they would drown everything else."""


class RequestIdMiddleware:
    """Take ``X-Request-ID`` from the request (or make one), echo it, log and measure the request once.

    Every request gets its INFO access line (method, path, status, duration), the gateway's interactive
    predicts included: it is the only place a slow or failed call shows up with its request id, and it
    costs about 15 µs. Chunk traffic between workers and the API, scrapes and probes are DEBUG lines.
    Each request is observed in the latency histogram by route template, and, when tracing is on, gets
    a server span continuing the caller's ``traceparent``. Pure ASGI rather than ``BaseHTTPMiddleware``
    so it keeps streaming responses streaming.
    """

    def __init__(self, app: ASGIApp, service: str = "") -> None:
        self.app = app
        self.service = service
        self.log = logging.getLogger("labelloop.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        traceparent: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1").strip()[:_MAX_REQUEST_ID_LENGTH]
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        request_id = request_id or new_request_id()
        if tracing.enabled():
            parent = {tracing.TRACEPARENT: traceparent} if traceparent else {}
            with tracing.span(f"{scope['method']} {scope['path']}", kind=SpanKind.SERVER, parent=parent):
                await self._serve(scope, receive, send, request_id)
        else:
            await self._serve(scope, receive, send, request_id)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
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
            elapsed = time.perf_counter() - started
            method, path = scope["method"], scope["path"]
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            HTTP_REQUEST_SECONDS.labels(self.service, method, template, status).observe(elapsed)
            if tracing.enabled():
                get_current_span().update_name(f"{method} {template}")
            level = logging.DEBUG if path.startswith(_QUIET_PREFIXES) else logging.INFO
            if self.log.isEnabledFor(level):
                fields = {
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                self.log.log(
                    level, "%s %s %s", method, path, status, extra={_ACCESS_FIELDS: fields, **fields}
                )
            request_id_var.reset(token)


def outgoing_request_headers() -> dict[str, str]:
    """Headers that carry the current request id and trace context to another service or a backend."""
    request_id = request_id_var.get()
    headers = tracing.trace_headers()
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return headers


def carried_context() -> dict[str, str]:
    """The request id and trace context to put in a queued job, so its work joins the same trace."""
    return outgoing_request_headers()


@contextlib.contextmanager
def adopted_context(carried: dict[str, str] | None, span_name: str) -> Iterator[None]:
    """Run a queued job under the request id and inside the trace that ``carried_context`` captured."""
    carried = carried or {}
    token = request_id_var.set(carried.get(REQUEST_ID_HEADER) or new_request_id())
    try:
        with tracing.span(span_name, kind=SpanKind.CONSUMER, parent=carried):
            yield
    finally:
        request_id_var.reset(token)
