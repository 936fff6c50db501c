"""The EventBus contract, run against the in-memory bus and a real RabbitMQ."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.bus import RetryPolicy
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import Event, JobFailed, JobSubmitted, RunRequested, ScorersChanged
from shared.models import JobSpec

if TYPE_CHECKING:  # the fixture's type, for readers; conftest is not importable at run time
    from conftest import BusHarness


def submitted(job_id: str = "job-1") -> JobSubmitted:
    spec = JobSpec(job_id=job_id, scorer="classification")
    return JobSubmitted(job_id=job_id, spec=spec, workspace="/ws/" + job_id, submitter="alice")


def run_requested(job_id: str, backend: str) -> RunRequested:
    spec = JobSpec(job_id=job_id, scorer="classification")
    return RunRequested(job_id=job_id, spec=spec, workspace="/ws", backend=backend)


class Recorder:
    """A handler that records events and signals when it has seen ``expected`` of them."""

    def __init__(self, expected: int = 1) -> None:
        self.events: list[Event] = []
        self.expected = expected
        self.done = asyncio.Event()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) >= self.expected:
            self.done.set()

    async def wait(self, timeout: float = 10.0) -> list[Event]:
        async with asyncio.timeout(timeout):
            await self.done.wait()
        return self.events


def platform_error() -> AutoscorerError:
    return AutoscorerError(ErrorCode.STORE_ERROR, "store down", stage=Stage.PLATFORM)


async def test_published_event_reaches_subscriber_unchanged(harness: BusHarness) -> None:
    seen = Recorder()
    await harness.subscribe("scheduler", ["job.submitted"], seen)
    event = submitted()

    await harness.bus.publish(event)

    assert await seen.wait() == [event]


async def test_subscribing_before_start_consumes_after_start(harness: BusHarness) -> None:
    await harness.bus.close()
    seen = Recorder()
    await harness.subscribe("late", ["job.submitted"], seen)
    await harness.bus.start()

    await harness.bus.publish(submitted())

    assert len(await seen.wait()) == 1


async def test_topic_wildcards_route_like_amqp(harness: BusHarness) -> None:
    docker, everything = Recorder(expected=1), Recorder(expected=3)
    await harness.subscribe("docker", ["run.requested.docker"], docker)
    await harness.subscribe("audit", ["#"], everything)
    await harness.subscribe("runs", ["run.requested.*"], Recorder())

    await harness.bus.publish(run_requested("job-1", "docker"))
    await harness.bus.publish(run_requested("job-2", "k8s"))
    await harness.bus.publish(submitted("job-3"))

    assert [e.job_id for e in await everything.wait()] == ["job-1", "job-2", "job-3"]
    assert [e.job_id for e in await docker.wait()] == ["job-1"]
    await asyncio.sleep(0.2)
    assert len(docker.events) == 1


async def test_every_bound_queue_gets_its_own_copy(harness: BusHarness) -> None:
    first, second = Recorder(), Recorder()
    await harness.subscribe("replica-a", ["scorers.changed", "job.failed"], first)
    await harness.subscribe("replica-b", ["job.*"], second)
    error = platform_error().to_info()

    await harness.bus.publish(JobFailed(job_id="job-1", error=error))

    assert (await first.wait())[0].event_id == (await second.wait())[0].event_id


async def test_unroutable_publish_fails_clearly(harness: BusHarness) -> None:
    await harness.subscribe("other", ["job.failed"], Recorder())

    with pytest.raises(AutoscorerError) as caught:
        await harness.bus.publish(submitted())

    assert caught.value.code is ErrorCode.BUS_ERROR
    assert caught.value.details == {"reason": "unroutable", "routing_key": "job.submitted"}


async def test_retryable_error_is_redelivered_until_it_succeeds(harness: BusHarness) -> None:
    calls: list[float] = []
    done = asyncio.Event()

    async def flaky(event: Event) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 3:
            raise platform_error()
        done.set()

    await harness.subscribe(
        "flaky", ["job.submitted"], flaky, retry=RetryPolicy(max_attempts=5, delays=(0.2,))
    )
    await harness.bus.publish(submitted())

    async with asyncio.timeout(10):
        await done.wait()
    assert len(calls) == 3
    assert min(b - a for a, b in itertools.pairwise(calls)) >= 0.15
    await asyncio.sleep(0.3)
    assert len(calls) == 3


async def test_retryable_error_dead_letters_after_max_attempts(harness: BusHarness) -> None:
    calls = 0

    async def broken(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise platform_error()

    queue = await harness.subscribe("broken", ["job.submitted"], broken)
    event = submitted()
    await harness.bus.publish(event)

    [dead] = await harness.dead_letters(queue, 1)
    assert calls == 3
    assert dead.attempt == 3
    assert dead.error is not None
    assert dead.error.code is ErrorCode.STORE_ERROR
    assert json.loads(dead.body)["event_id"] == str(event.event_id)
    assert dead.routing_key == "job.submitted"


async def test_permanent_error_dead_letters_at_once(harness: BusHarness) -> None:
    calls = 0

    async def refuse(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise AutoscorerError(ErrorCode.SCORER_NOT_FOUND, "no such scorer", stage=Stage.SCORING)

    queue = await harness.subscribe("refuse", ["job.submitted"], refuse)
    await harness.bus.publish(submitted())

    [dead] = await harness.dead_letters(queue, 1)
    assert (calls, dead.attempt) == (1, 1)
    assert dead.error is not None
    assert dead.error.code is ErrorCode.SCORER_NOT_FOUND


async def test_unexpected_exception_is_an_internal_error_dead_letter(harness: BusHarness) -> None:
    async def buggy(event: Event) -> None:
        raise KeyError("oops")

    queue = await harness.subscribe("buggy", ["job.submitted"], buggy)
    await harness.bus.publish(submitted())

    [dead] = await harness.dead_letters(queue, 1)
    assert dead.error is not None
    assert dead.error.code is ErrorCode.INTERNAL_ERROR
    assert "KeyError" in dead.error.message


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"\x00not json", ErrorCode.PARSE_ERROR), (b'{"type": "job.exploded"}', ErrorCode.BAD_FORMAT)],
)
async def test_undecodable_message_goes_to_dead_letters(
    harness: BusHarness, body: bytes, code: ErrorCode
) -> None:
    seen = Recorder()
    queue = await harness.subscribe("junk", ["job.submitted"], seen)

    await harness.publish_raw("job.submitted", body)

    [dead] = await harness.dead_letters(queue, 1)
    assert dead.error is not None
    assert dead.error.code is code
    assert dead.body == body
    assert seen.events == []


async def test_a_consumer_is_told_of_an_invalid_body_before_it_is_dead_lettered(
    harness: BusHarness,
) -> None:
    told: list[tuple[bytes, ErrorCode]] = []

    async def on_invalid(body: bytes, error: AutoscorerError) -> None:
        told.append((body, error.code))

    queue = await harness.subscribe("told", ["job.submitted"], Recorder(), on_invalid=on_invalid)
    body = b'{"type": "job.submitted", "job_id": "j-1"}'

    await harness.publish_raw("job.submitted", body)

    [dead] = await harness.dead_letters(queue, 1)
    assert told == [(body, ErrorCode.BAD_FORMAT)]
    assert dead.error is not None and dead.error.code is ErrorCode.BAD_FORMAT


async def test_handler_overrunning_its_budget_is_dead_lettered(harness: BusHarness) -> None:
    async def slow(event: Event) -> None:
        await asyncio.sleep(30)

    queue = await harness.subscribe("slow", ["job.submitted"], slow, handler_timeout=0.2)
    await harness.bus.publish(submitted())

    [dead] = await harness.dead_letters(queue, 1)
    assert dead.error is not None
    assert dead.error.details["reason"] == "handler_timeout"


async def test_concurrency_is_bounded_per_queue(harness: BusHarness) -> None:
    running = peak = finished = 0
    all_done = asyncio.Event()

    async def busy(event: Event) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1
        finished += 1
        if finished == 6:
            all_done.set()

    await harness.subscribe("busy", ["job.submitted"], busy, concurrency=2)
    for n in range(6):
        await harness.bus.publish(submitted(f"job-{n}"))

    async with asyncio.timeout(10):
        await all_done.wait()
    assert peak == 2


async def test_duplicates_reach_the_handler_which_dedupes_by_event_id(
    harness: BusHarness,
) -> None:
    seen = Recorder(expected=2)
    await harness.subscribe("dedupe", ["job.submitted"], seen)
    event = submitted()

    await harness.bus.publish(event)
    await harness.bus.publish(event)

    assert {e.event_id for e in await seen.wait()} == {event.event_id}


async def test_trace_context_flows_from_publisher_to_handler(
    harness: BusHarness, spans: InMemorySpanExporter
) -> None:
    handler_trace_ids: list[int] = []

    async def traced(event: Event) -> None:
        handler_trace_ids.append(trace.get_current_span().get_span_context().trace_id)

    seen = Recorder()

    async def both(event: Event) -> None:
        await traced(event)
        await seen(event)

    await harness.subscribe("traced", ["job.submitted"], both)
    await harness.bus.publish(submitted())
    await seen.wait()
    await asyncio.sleep(0.1)  # the consumer span ends just after the handler returns

    by_kind = {s.kind: s for s in spans.get_finished_spans()}
    producer, consumer = by_kind[SpanKind.PRODUCER], by_kind[SpanKind.CONSUMER]
    assert producer.context is not None
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert handler_trace_ids == [producer.context.trace_id]
    assert producer.attributes is not None
    assert producer.attributes["messaging.rabbitmq.destination.routing_key"] == "job.submitted"


async def test_close_lets_in_flight_handlers_finish(harness: BusHarness) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slowish(event: Event) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    await harness.subscribe("drain", ["job.submitted"], slowish)
    await harness.bus.publish(submitted())
    async with asyncio.timeout(10):
        await started.wait()

    await harness.bus.close()

    assert finished.is_set()


async def test_publish_on_a_closed_bus_fails_clearly(harness: BusHarness) -> None:
    await harness.bus.close()

    with pytest.raises(AutoscorerError) as caught:
        await harness.bus.publish(submitted())

    assert caught.value.code is ErrorCode.BUS_ERROR
    assert caught.value.details["reason"] == "not_started"


async def test_ready_follows_the_bus_lifecycle(harness: BusHarness) -> None:
    assert harness.bus.ready()

    await harness.bus.close()

    assert not harness.bus.ready()


async def test_an_expiring_subscription_delivers_like_any_other(harness: BusHarness) -> None:
    seen = Recorder()
    await harness.subscribe("replica-1", ["scorers.changed"], seen, expires=60.0)
    change = ScorersChanged(action="removed", scorer="f2", scorer_version="1", origin="replica-2")

    await harness.bus.publish(change)

    assert await seen.wait() == [change]
