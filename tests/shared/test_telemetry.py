"""Tracing set-up: nothing when disabled, OTLP/HTTP export when an endpoint is set, a clean
shutdown; a stored trace context continued outside any span and left alone inside one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from shared.config import OtelSettings
from shared.telemetry import (
    continue_trace,
    current_trace_context,
    setup_tracing,
    shutdown_tracing,
    tracer_provider,
    traces_url,
)

ROOT = Path(__file__).resolve().parents[2]
STORED = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


@dataclass
class Collector:
    """An OTLP/HTTP receiver: keeps the path and the decoded body of every export."""

    url: str = ""
    exports: list[tuple[str, ExportTraceServiceRequest]] = field(default_factory=list)

    def span_names(self) -> list[str]:
        return [
            span.name
            for _, request in self.exports
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def service_names(self) -> set[str]:
        return {
            attr.value.string_value
            for _, request in self.exports
            for resource in request.resource_spans
            for attr in resource.resource.attributes
            if attr.key == "service.name"
        }


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.exports.append((self.path, ExportTraceServiceRequest.FromString(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield found
    server.shutdown()
    server.server_close()
    thread.join()


def test_disabled_tracing_installs_nothing() -> None:
    before = trace.get_tracer_provider()
    settings = OtelSettings(enabled=False, otlp_endpoint="http://127.0.0.1:9")
    assert setup_tracing(settings, "gateway") is None
    assert trace.get_tracer_provider() is before
    shutdown_tracing(None)  # what main() does with it: nothing


def test_an_endpoint_gets_batched_otlp_export_flushed_at_shutdown(collector: Collector) -> None:
    settings = OtelSettings(enabled=True, otlp_endpoint=collector.url)
    provider = tracer_provider(settings, "scheduler")
    assert isinstance(provider, TracerProvider)
    with provider.get_tracer("tests").start_as_current_span("handle job"):
        pass
    assert collector.exports == []  # batched: nothing sent per span
    provider.shutdown()
    assert collector.span_names() == ["handle job"]
    assert [path for path, _ in collector.exports] == ["/v1/traces"]
    assert collector.service_names() == {"autoscorer-scheduler"}


def test_enabled_without_an_endpoint_makes_spans_but_exports_none() -> None:
    provider = tracer_provider(OtelSettings(enabled=True), "executor")
    assert provider is not None
    with provider.get_tracer("tests").start_as_current_span("run") as span:
        assert span.get_span_context().is_valid
    provider.shutdown()


def test_setup_tracing_installs_the_global_provider_and_exports_on_shutdown(
    collector: Collector,
) -> None:
    """In a fresh interpreter: the global provider can be installed only once per process."""
    script = (
        "from opentelemetry import trace\n"
        "from shared.config import OtelSettings\n"
        "from shared.telemetry import setup_tracing, shutdown_tracing\n"
        f"settings = OtelSettings(enabled=True, otlp_endpoint={collector.url!r})\n"
        "provider = setup_tracing(settings, 'gateway')\n"
        "assert trace.get_tracer_provider() is provider\n"
        "with trace.get_tracer('t').start_as_current_span('POST /v1/jobs'):\n"
        "    pass\n"
        "shutdown_tracing(provider)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT, timeout=60)
    assert collector.span_names() == ["POST /v1/jobs"]
    assert collector.service_names() == {"autoscorer-gateway"}


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://jaeger:4318", "http://jaeger:4318/v1/traces"),
        ("http://jaeger:4318/", "http://jaeger:4318/v1/traces"),
        ("https://otel.example/custom/traces", "https://otel.example/custom/traces"),
    ],
)
def test_a_base_endpoint_gets_the_traces_path(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


def test_a_stored_context_is_continued_outside_any_span() -> None:
    assert current_trace_context() == {}
    with continue_trace(STORED):
        assert current_trace_context() == STORED
    assert current_trace_context() == {}


def test_the_current_span_wins_over_a_stored_context() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("handler") as span, continue_trace(STORED):
        assert trace.get_current_span() is span
        headers = current_trace_context()
    assert headers["traceparent"].split("-")[1] == format(span.get_span_context().trace_id, "032x")


def test_an_empty_stored_context_changes_nothing() -> None:
    with continue_trace({}):
        assert current_trace_context() == {}
