"""A server span per HTTP request, with the HTTP semantic-convention attributes.

The span continues a W3C ``traceparent`` the client sent, so a caller's trace reaches the job.
Health probes are not traced (they are polled, and say nothing about a job). It must be the
outermost middleware, so that it sees the response the error middleware made of an exception.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from services.gateway.http import Handler
from shared.telemetry import extract_trace_context

TRACER_NAME = "autoscorer.gateway"
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def tracing_middleware(tracer: Tracer | None = None) -> Middleware:
    """The middleware; ``tracer`` defaults to the global provider's (looked up when used)."""
    tracer = tracer or trace.get_tracer(TRACER_NAME)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNTRACED_PATHS:
            return await handler(request)
        route = _route(request)
        with tracer.start_as_current_span(
            f"{request.method} {route}" if route else request.method,
            context=extract_trace_context(request.headers),
            kind=SpanKind.SERVER,
            attributes=request_attributes(request, route),
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _set_status(span, exc.status)
                raise
            _set_status(span, response.status)
            return response

    return middleware


def _route(request: web.Request) -> str | None:
    """The matched route's template (``/v1/jobs/{job_id}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def request_attributes(request: web.Request, route: str | None) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.request.method": request.method,
        "url.scheme": request.scheme,
        "url.path": request.path,
        "server.address": request.url.host or "",
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    if request.url.port is not None:
        attributes["server.port"] = request.url.port
    if route:
        attributes["http.route"] = route
    if request.remote:
        attributes["client.address"] = request.remote
    if agent := request.headers.get("User-Agent"):
        attributes["user_agent.original"] = agent
    return attributes


def _set_status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:  # a server span's error is the server's, not the client's 4xx
        span.set_status(Status(StatusCode.ERROR))
        span.set_attribute("error.type", str(status))
