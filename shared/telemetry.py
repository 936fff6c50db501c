"""W3C trace context in message headers (``traceparent`` / ``tracestate``).

Always the W3C Trace Context format, whatever ``OTEL_PROPAGATORS`` says: it is part of the bus
contract that platform backends rely on (docs/EVENTS.md). Exporters are set up in each
service's ``main()``, never here.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACE_HEADERS = ("traceparent", "tracestate")

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
