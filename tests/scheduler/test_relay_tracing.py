"""Events published later from an outbox stay in the job's trace; a job the scheduler creates
from a platform's ``JobSubmitted`` takes the trace that event came in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from services.scheduler.main import create_scheduler
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.events import Event, RunRequested
from shared.jobs import JobStatus, new_job
from shared.outbox import OutboxRelay, outbox_entry, publish_pending
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.fakes import eventually
from tests.scheduler.rig import eventually_async, submitted

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
STORED = {"traceparent": f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"}


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider.get_tracer("tests")


@pytest.fixture
async def traced_bus(tracer: Tracer) -> AsyncIterator[MemoryBus]:
    opened = MemoryBus(tracer=tracer, drain_timeout=2.0)
    await opened.start()
    yield opened
    await opened.close()


async def left_in_outbox(store: SqliteJobStore, job_id: str) -> None:
    """A queued job whose ``RunRequested`` nobody published (a crash, a broker outage)."""
    event = submitted(job_id)
    job = new_job(event.spec, workspace=event.workspace, trace_context=STORED)
    await store.create(job)
    request = RunRequested(
        job_id=job_id, backend="local", attempt=1, spec=event.spec, workspace=event.workspace
    )
    await store.transition(
        job_id, JobStatus.SUBMITTED, JobStatus.QUEUED, outbox=[outbox_entry(request)]
    )


def producer(spans: InMemorySpanExporter, routing_key: str) -> ReadableSpan:
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"{routing_key} publish"]
    return span


async def received(bus: MemoryBus, routing_key: str) -> list[Event]:
    events: list[Event] = []

    async def keep(event: Event) -> None:
        events.append(event)

    await bus.subscribe(Subscription(f"q.{routing_key}", [routing_key], keep))
    return events


async def test_the_relay_sweep_publishes_under_the_jobs_stored_trace(
    traced_bus: MemoryBus, store: SqliteJobStore, spans: InMemorySpanExporter
) -> None:
    await left_in_outbox(store, "job-later")
    requests = await received(traced_bus, "run.requested.local")

    assert await OutboxRelay(traced_bus, store).sweep(everything=True) == 1

    await eventually(lambda: requests)
    span = producer(spans, "run.requested.local")
    assert span.context is not None and span.context.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == SPAN_ID


async def test_publish_pending_outside_a_span_continues_the_jobs_trace(
    traced_bus: MemoryBus, store: SqliteJobStore, spans: InMemorySpanExporter
) -> None:
    await left_in_outbox(store, "job-gateway")
    requests = await received(traced_bus, "run.requested.local")
    job = await store.get("job-gateway")
    assert job is not None

    assert await publish_pending(traced_bus, store, job) == 1

    await eventually(lambda: requests)
    span = producer(spans, "run.requested.local")
    assert span.context is not None and span.context.trace_id == TRACE_ID


async def test_a_job_the_scheduler_creates_keeps_the_trace_of_its_job_submitted(
    traced_bus: MemoryBus,
    store: SqliteJobStore,
    settings: Settings,
    spans: InMemorySpanExporter,
    tracer: Tracer,
) -> None:
    requests = await received(traced_bus, "run.requested.local")
    scheduler = create_scheduler(settings, traced_bus, store)
    await scheduler.start()
    try:
        with tracer.start_as_current_span("platform submits", kind=SpanKind.PRODUCER) as root:
            await traced_bus.publish(submitted("job-platform"))
        await eventually(lambda: requests)

        async def recorded() -> bool:
            job = await store.get("job-platform")
            return job is not None and bool(job.trace_context)

        await eventually_async(recorded)
    finally:
        await scheduler.close()
    job = await store.get("job-platform")
    assert job is not None
    assert (
        job.trace_context["traceparent"].split("-")[1] == f"{root.get_span_context().trace_id:032x}"
    )
    assert (
        producer(spans, "run.requested.local").context.trace_id == root.get_span_context().trace_id
    )
