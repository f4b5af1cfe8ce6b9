"""OpenTelemetry traces, off unless ``LABELLOOP_OTLP_ENDPOINT`` is set.

When off, every helper here is a no-op costing a global lookup, so the hot paths pay nothing. When on,
spans go to the OTLP/HTTP endpoint in batches, and the W3C ``traceparent`` travels with every hop:
HTTP between the services, the arq job payload of a bulk chunk, and each call to an ML backend, so one
trace follows a bulk job from the action to every backend call.

The provider is this module's own rather than OpenTelemetry's global one (which can be set only once
per process), so tests can install an in-memory exporter and remove it again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:  # the SDK is imported only when tracing is configured: it costs every process start
    from opentelemetry.sdk.trace import TracerProvider

TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    """Export spans of this process to ``otlp_endpoint`` (OTLP over HTTP); nothing when it is unset."""
    if not otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    install(provider)


def install(provider: TracerProvider | None) -> None:
    """Use ``provider`` for every span of this process from now on; None turns tracing off."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("labelloop")


def enabled() -> bool:
    return _tracer is not None


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[None]:
    """A span around the block, child of the current span, or of ``parent`` (carried headers) if given."""
    if _tracer is None:
        yield
        return
    context = _propagator.extract(parent) if parent is not None else None
    with _tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes):
        yield


def record_error(message: str) -> None:
    """Mark the current span as failed (a backend call that did not produce an answer)."""
    if _tracer is not None:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, message[:300]))


def trace_headers() -> dict[str, str]:
    """``traceparent`` of the current span, to send along; empty when tracing is off."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, for log lines; None outside a span or when off."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None
