"""Tracing: W3C trace context in message headers and job documents, and the exporter set-up.

The context is always in the W3C Trace Context format (``traceparent`` / ``tracestate``),
whatever ``OTEL_PROPAGATORS`` says: it is part of the bus contract that platform backends rely on
(docs/EVENTS.md). :func:`setup_tracing` installs the exporter; each service's ``main()`` calls
it (never an import), and :func:`shutdown_tracing` flushes what is left on the way out.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.config import OtelSettings
from shared.errors import AutoscorerError, ErrorCode, Stage

log = logging.getLogger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")
OTLP_TRACES_PATH = "/v1/traces"

_PROPAGATOR = TraceContextTextMapPropagator()


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads header values that AMQP may hand back as ``bytes``."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("ascii", errors="replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def inject_trace_context(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Add ``traceparent`` (and ``tracestate``) of the current or given span to ``headers``."""
    _PROPAGATOR.inject(headers, context=context)


def extract_trace_context(headers: Mapping[str, Any] | None) -> Context:
    """The remote span context found in ``headers`` (an empty context when there is none)."""
    return _PROPAGATOR.extract(headers or {}, getter=_GETTER)


def current_trace_context() -> dict[str, str]:
    """The current span's W3C headers, e.g. for ``Job.trace_context``; empty outside a span."""
    headers: dict[str, str] = {}
    inject_trace_context(headers)
    return headers


@contextmanager
def continue_trace(stored: Mapping[str, str]) -> Iterator[None]:
    """Spans started inside continue the trace ``stored`` (a job's ``trace_context``) unless a
    span is already current: a handler publishing what it wrote stays under its own span, a
    relay publishing it later (no span of its own) puts it back under the job's trace."""
    if trace.get_current_span().get_span_context().is_valid or not stored:
        yield
        return
    token = otel_context.attach(extract_trace_context(stored))
    try:
        yield
    finally:
        otel_context.detach(token)


def setup_tracing(settings: OtelSettings, service_name: str) -> TracerProvider | None:
    """Install the global tracer provider of this process; ``None`` (nothing installed) when
    ``otel.enabled`` is false. Spans go where ``otel.exporter`` says (:func:`span_exporter`);
    without an exporter they are made (trace ids reach logs and headers) but not exported."""
    provider = tracer_provider(settings, service_name)
    if provider is not None:
        trace.set_tracer_provider(provider)
        log.info("tracing as %s to %s", service_name, export_target(settings))
    return provider


def shutdown_tracing(provider: TracerProvider | None) -> None:
    """Export the spans still buffered and stop the exporter (call once, on the way out)."""
    if provider is not None:
        provider.shutdown()


def tracer_provider(settings: OtelSettings, service_name: str) -> TracerProvider | None:
    """The provider :func:`setup_tracing` installs, without installing it."""
    if not settings.enabled:
        return None
    resource = Resource.create(
        {
            "service.name": f"{settings.service_name}-{service_name}",
            "service.namespace": settings.service_name,
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = span_exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def span_exporter(settings: OtelSettings, out: TextIO | None = None) -> SpanExporter | None:
    """The exporter ``otel.exporter`` names: OTLP/HTTP to ``otel.otlp_endpoint`` (none while
    it is unset), one compact JSON object per span on ``out`` (stdout), or none."""
    if settings.exporter == "console":
        return ConsoleSpanExporter(out=out or sys.stdout, formatter=_one_line)
    if settings.exporter == "otlp" and settings.otlp_endpoint:
        return _otlp_exporter(settings.otlp_endpoint)
    return None


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def export_target(settings: OtelSettings) -> str:
    if settings.exporter == "otlp":
        return settings.otlp_endpoint or "nowhere"
    return "stdout" if settings.exporter == "console" else "nowhere"


def traces_url(endpoint: str) -> str:
    """``http://jaeger:4318`` -> ``http://jaeger:4318/v1/traces``; a URL with a path is kept."""
    if urlsplit(endpoint).path.strip("/"):
        return endpoint
    return endpoint.rstrip("/") + OTLP_TRACES_PATH


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # an optional dependency, needed only when exporting
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            "otel.otlp_endpoint needs the opentelemetry-exporter-otlp-proto-http package",
            stage=Stage.PLATFORM,
            details={"otlp_endpoint": endpoint},
        ) from exc
    return OTLPSpanExporter(endpoint=traces_url(endpoint))
