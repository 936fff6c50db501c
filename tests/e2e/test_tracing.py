"""One job, one trace: the embedded platform (``autoscorer serve``'s composition) with an
in-memory exporter behind the global tracer provider, as ``setup_tracing`` would install it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.bus_memory import SYSTEM
from tests.e2e.harness import make_settings, running_platform

PUBLISHED = (
    "job.submitted",
    "run.requested.local",
    "run.started",
    "run.completed",
    "score.requested",
    "score.completed",
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the process ends while the test runs. The global provider can be set once per
    process: install an SDK one if there is none yet, else add to the one that is there."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays on the provider, but keeps nothing from now on


def attr(span: ReadableSpan, name: str) -> object:
    assert span.attributes is not None
    return span.attributes.get(name)


def trace_id_of(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


async def job_spans(
    exporter: InMemorySpanExporter, job_id: str, queues: Sequence[str]
) -> list[ReadableSpan]:
    """The job's messaging spans, once a consumer span has ended on each of ``queues`` for the
    job's ``score.completed`` (consumer spans end just after their handler)."""
    for _ in range(100):
        mine = [
            s
            for s in exporter.get_finished_spans()
            if attr(s, "messaging.message.conversation_id") == job_id
        ]
        scored = {
            s.context.span_id
            for s in mine
            if s.name == "score.completed publish" and s.context is not None
        }
        done = {
            attr(s, "messaging.destination.name")
            for s in mine
            if s.kind is SpanKind.CONSUMER and s.parent is not None and s.parent.span_id in scored
        }
        if set(queues) <= done:
            return mine
        await asyncio.sleep(0.05)
    raise AssertionError(f"no consumer span for score.completed on {queues}")


@pytest.mark.slow
async def test_one_job_is_one_trace_from_the_http_request_to_the_score(
    tmp_path, spans: InMemorySpanExporter
) -> None:
    settings = make_settings(tmp_path)
    async with running_platform(settings) as platform:
        data = await platform.call(
            "POST", "/v1/jobs", json={"workspace": platform.add_workspace("classification")}
        )
        job_id = data["job_id"]
        assert (await platform.wait(job_id))["status"] == "succeeded"
        queues = [settings.scheduler.queue, settings.gateway.webhook_queue]
        mine = await job_spans(spans, job_id, queues)
    job_trace = trace_id_of(data["job"]["trace_context"]["traceparent"])

    (http,) = [s for s in spans.get_finished_spans() if s.name == "POST /v1/jobs"]
    assert http.kind is SpanKind.SERVER
    assert http.context is not None and http.context.trace_id == job_trace
    assert http.parent is None  # the submission is the job's root
    assert attr(http, "http.request.method") == "POST"
    assert attr(http, "http.route") == "/v1/jobs"
    assert attr(http, "http.response.status_code") == 202
    assert attr(http, "url.path") == "/v1/jobs"
    assert attr(http, "server.port") == settings.gateway.port

    assert {s.context.trace_id for s in mine if s.context is not None} == {job_trace}
    assert all(attr(s, "messaging.system") == SYSTEM for s in mine)
    assert all(attr(s, "messaging.destination.name") for s in mine)
    assert all(attr(s, "messaging.message.id") for s in mine)

    producers = {s.context.span_id: s for s in mine if s.kind is SpanKind.PRODUCER and s.context}
    published = {attr(s, "messaging.rabbitmq.destination.routing_key") for s in producers.values()}
    assert set(PUBLISHED) <= published

    consumers = [s for s in mine if s.kind is SpanKind.CONSUMER]
    for consumer in consumers:  # each continues the span that published its message
        assert consumer.parent is not None
        producer = producers[consumer.parent.span_id]
        assert attr(consumer, "messaging.message.id") == attr(producer, "messaging.message.id")
    consumed = {
        (
            attr(producers[c.parent.span_id], "messaging.rabbitmq.destination.routing_key"),
            attr(c, "messaging.destination.name"),
        )
        for c in consumers
        if c.parent is not None
    }
    prefix = settings.scorer.queue_prefix
    assert {
        ("job.submitted", settings.scheduler.queue),
        ("run.requested.local", f"{settings.executor_service.queue_prefix}executor.local"),
        ("run.started", settings.scheduler.queue),
        ("run.completed", settings.scheduler.queue),
        ("score.requested", f"{prefix}scorer.requests"),
        ("score.completed", settings.scheduler.queue),
        ("score.completed", settings.gateway.webhook_queue),
    } <= consumed

    (submitted,) = [s for s in producers.values() if s.name == "job.submitted publish"]
    assert submitted.parent is not None and submitted.parent.span_id == http.context.span_id
