"""The gateway's server span per request: route template, status, errors, a caller's trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.gateway.http import error_middleware
from services.gateway.tracing import tracing_middleware
from shared.errors import AutoscorerError, ErrorCode, Stage

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def found(request: web.Request) -> web.Response:
    return web.json_response({"job": request.match_info["job_id"]})


async def broken(request: web.Request) -> web.Response:
    raise AutoscorerError(ErrorCode.INTERNAL_ERROR, "bug", stage=Stage.PLATFORM)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def client(
    spans: InMemorySpanExporter,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = web.Application(
        middlewares=[tracing_middleware(provider.get_tracer("tests")), error_middleware]
    )
    app.add_routes(
        [
            web.get("/v1/jobs/{job_id}", found),
            web.post("/v1/broken", broken),
            web.get("/healthz", healthz),
        ]
    )
    async with TestClient(TestServer(app)) as opened:
        yield opened


def only(spans: InMemorySpanExporter) -> ReadableSpan:
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    return span


async def test_a_request_is_a_server_span_named_by_its_route(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    response = await client.get("/v1/jobs/job-1", headers={"User-Agent": "tests"})
    assert response.status == 200
    span = only(spans)
    assert span.name == "GET /v1/jobs/{job_id}"
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes.pop("client.address") == "127.0.0.1"
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "/v1/jobs/{job_id}",
        "http.response.status_code": 200,
        "url.scheme": "http",
        "url.path": "/v1/jobs/job-1",
        "server.address": "127.0.0.1",
        "server.port": client.port,
        "network.protocol.version": "1.1",
        "user_agent.original": "tests",
    }


async def test_a_platform_error_marks_the_span_and_a_client_error_does_not(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    assert (await client.post("/v1/broken")).status == 500
    assert (await client.get("/nowhere")).status == 404
    broken_span, missing = spans.get_finished_spans()
    assert broken_span.status.status_code is StatusCode.ERROR
    assert (broken_span.attributes or {})["error.type"] == "500"
    assert missing.name == "GET"  # no route matched: no template to name it by
    assert missing.status.status_code is StatusCode.UNSET
    assert (missing.attributes or {})["http.response.status_code"] == 404
    assert "http.route" not in (missing.attributes or {})


async def test_the_span_continues_the_callers_trace(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    await client.get("/v1/jobs/job-1", headers={"traceparent": CALLER})
    span = only(spans)
    assert span.context is not None
    assert f"{span.context.trace_id:032x}" == CALLER.split("-")[1]
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CALLER.split("-")[2]


async def test_health_probes_are_not_traced(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    assert (await client.get("/healthz")).status == 200
    assert spans.get_finished_spans() == ()
