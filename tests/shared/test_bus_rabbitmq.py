"""What only the RabbitMQ bus promises: wire format, topology, surviving a broker restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from opentelemetry.trace import Tracer

from shared.bus import ATTEMPT_HEADER, Handler, RetryPolicy, Subscription
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig, dead_letter_queue, retry_queue
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import Event, JobSubmitted, parse_event
from shared.models import JobSpec

if TYPE_CHECKING:  # fixture types, for readers; conftest is not importable at run time
    from conftest import BusHarness, RabbitTools

pytestmark = pytest.mark.rabbitmq
only_rabbitmq = pytest.mark.parametrize("bus_kind", ["rabbitmq"])


def submitted(job_id: str = "job-1") -> JobSubmitted:
    spec = JobSpec(job_id=job_id, scorer="classification")
    return JobSubmitted(job_id=job_id, spec=spec, workspace="/ws", submitter="alice")


def into(sink: asyncio.Queue[Event]) -> Handler:
    async def handler(event: Event) -> None:
        await sink.put(event)

    return handler


@pytest.fixture
async def channel(rabbit_tools: RabbitTools) -> AsyncIterator[AbstractChannel]:
    """A plain aio-pika channel, as a platform backend would have."""
    connection = await aio_pika.connect(rabbit_tools.url)
    async with connection:
        yield await connection.channel()


@only_rabbitmq
async def test_messages_carry_the_documented_properties(
    harness: BusHarness, channel: AbstractChannel
) -> None:
    tap = await channel.declare_queue(exclusive=True)
    await tap.bind(f"{harness.prefix}.events", routing_key="#")
    event = submitted()

    await harness.bus.publish(event)

    message = await _get(tap)
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == str(event.event_id)
    assert message.correlation_id == event.job_id
    assert message.type == "job.submitted"
    assert message.routing_key == "job.submitted"
    assert message.headers[ATTEMPT_HEADER] == 1
    assert str(message.headers["traceparent"]).startswith("00-")
    assert parse_event(message.body) == event


@only_rabbitmq
async def test_a_backend_can_publish_with_plain_aio_pika(
    harness: BusHarness, channel: AbstractChannel
) -> None:
    seen: asyncio.Queue[Event] = asyncio.Queue()
    await harness.subscribe("scheduler", ["job.submitted"], into(seen))
    event = submitted()

    exchange = await channel.get_exchange(f"{harness.prefix}.events")
    body = event.model_dump_json().encode()
    await exchange.publish(
        aio_pika.Message(body, message_id=str(event.event_id)), routing_key=event.routing_key
    )

    assert await asyncio.wait_for(seen.get(), 10) == event


@only_rabbitmq
async def test_queues_are_quorum_queues_with_dlq_and_retry_queues(harness: BusHarness) -> None:
    retry = RetryPolicy(delays=(1.0, 5.0))
    queue = await harness.subscribe("typed", ["job.failed"], into(asyncio.Queue()), retry=retry)

    rows = await _queue_rows()

    assert "quorum" in rows[queue]
    assert f"{harness.prefix}.dlx" in rows[queue]
    assert "x-delivery-limit" in rows[queue]
    assert "quorum" in rows[dead_letter_queue(queue)]
    assert "5000" in rows[retry_queue(queue, 5.0)]
    assert "x-message-ttl" in rows[retry_queue(queue, 1.0)]


@pytest.mark.slow
@only_rabbitmq
async def test_an_expiring_subscription_vanishes_after_its_consumer(harness: BusHarness) -> None:
    retry = RetryPolicy(delays=(1.0,))
    queue = await harness.subscribe(
        "replica-x", ["scorers.changed"], into(asyncio.Queue()), retry=retry, expires=1.0
    )
    names = {queue, dead_letter_queue(queue), retry_queue(queue, 1.0)}
    rows = await _queue_rows()
    assert all("x-expires" in rows[name] for name in names)

    await harness.bus.close()

    async with asyncio.timeout(20):
        while names & set(await _queue_rows()):
            await asyncio.sleep(0.5)


@pytest.mark.slow
@only_rabbitmq
async def test_an_expiring_subscription_renews_its_dlq_before_dead_lettering(
    harness: BusHarness,
) -> None:
    async def refuse(event: Event) -> None:
        raise AutoscorerError(ErrorCode.BAD_PARAMS, "no", stage=Stage.SCORING)

    queue = await harness.subscribe("replica-y", ["job.submitted"], refuse, expires=1.0)
    async with asyncio.timeout(20):  # the DLQ has no consumer, so it expires while we run
        while dead_letter_queue(queue) in await _queue_rows():
            await asyncio.sleep(0.5)

    await harness.bus.publish(submitted())

    [dead] = await harness.dead_letters(queue, 1)
    assert dead.error is not None
    assert dead.error.code is ErrorCode.BAD_PARAMS


async def test_connecting_to_a_missing_broker_fails_clearly(no_leaked_tasks: None) -> None:
    bus = RabbitBus(RabbitBusConfig(url="amqp://guest:guest@127.0.0.1:1/", connect_timeout=2))

    with pytest.raises(AutoscorerError) as caught:
        await bus.start()

    assert caught.value.code is ErrorCode.BUS_ERROR
    assert caught.value.details["reason"] == "unavailable"


async def test_a_conflicting_queue_fails_start_clearly(
    bus_prefix: str, rabbit_tools: RabbitTools, channel: AbstractChannel, no_leaked_tasks: None
) -> None:
    queue, retry = f"{bus_prefix}.clash", RetryPolicy(delays=(1.0,))
    await channel.declare_queue(queue, durable=True)  # a classic queue already holds the name
    bus = RabbitBus(rabbit_tools.config(bus_prefix))
    await bus.subscribe(Subscription(queue, ["job.submitted"], into(asyncio.Queue()), retry=retry))
    try:
        with pytest.raises(AutoscorerError) as caught:
            await bus.start()
    finally:
        await bus.close()
        await rabbit_tools.delete_topology(bus_prefix, [(queue, retry)])

    assert caught.value.code is ErrorCode.BUS_ERROR
    assert caught.value.details["reason"] == "topology"
    assert "PRECONDITION_FAILED" in caught.value.message


async def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered(
    bus_prefix: str, rabbit_tools: RabbitTools, channel: AbstractChannel, no_leaked_tasks: None
) -> None:
    queue, retry = f"{bus_prefix}.poison", RetryPolicy(delays=(1.0,))
    started: asyncio.Queue[Event] = asyncio.Queue()

    async def hang(event: Event) -> None:
        await started.put(event)
        await asyncio.Event().wait()  # never settles: the consumer "dies" around it

    config = rabbit_tools.config(bus_prefix, delivery_limit=1, drain_timeout=0.1)
    try:
        for life in range(2):
            bus = RabbitBus(config)
            await bus.subscribe(Subscription(queue, ["job.submitted"], hang, retry=retry))
            await bus.start()
            if life == 0:
                await bus.publish(submitted())
            await asyncio.wait_for(started.get(), 10)
            await bus.close()  # unsettled: the broker takes the delivery back
        dead = await _get(await channel.get_queue(dead_letter_queue(queue)))
    finally:
        await rabbit_tools.delete_topology(bus_prefix, [(queue, retry)])

    assert parse_event(dead.body).job_id == "job-1"
    death = dead.headers["x-death"][0]  # type: ignore[index]
    assert death["reason"] == "delivery_limit"  # type: ignore[index, call-overload]


@pytest.mark.slow
@pytest.mark.broker_restart
async def test_publish_waits_out_a_broker_restart_and_consumption_resumes(
    bus_prefix: str, tracer: Tracer, rabbit_tools: RabbitTools, no_leaked_tasks: None
) -> None:
    patient = RabbitBus(rabbit_tools.config(bus_prefix, publish_timeout=60, reconnect_interval=0.5))
    hasty = RabbitBus(rabbit_tools.config(bus_prefix, publish_timeout=1, reconnect_interval=0.5))
    queue, retry = f"{bus_prefix}.survivor", RetryPolicy(delays=(1.0,))
    seen: asyncio.Queue[Event] = asyncio.Queue()
    await patient.subscribe(Subscription(queue, ["job.submitted"], into(seen), retry=retry))
    try:
        await patient.start()
        await hasty.start()
        await patient.publish(submitted("job-before"))
        assert (await asyncio.wait_for(seen.get(), 10)).job_id == "job-before"

        await _rabbitmqctl("stop_app")
        try:
            waiting = asyncio.create_task(patient.publish(submitted("job-during")))
            with pytest.raises(AutoscorerError) as caught:
                await hasty.publish(submitted("job-hasty"))
            assert caught.value.details["reason"] == "unavailable"
            assert not waiting.done()
            assert not patient.ready()
        finally:
            await _rabbitmqctl("start_app")
            await _rabbitmqctl("await_startup")

        await asyncio.wait_for(waiting, 60)
        assert (await asyncio.wait_for(seen.get(), 30)).job_id == "job-during"
        assert patient.ready()
    finally:
        await hasty.close()
        await patient.close()
        await rabbit_tools.delete_topology(bus_prefix, [(queue, retry)])


async def _get(queue: AbstractQueue) -> AbstractIncomingMessage:
    async with asyncio.timeout(10):
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.05)


async def _queue_rows() -> dict[str, str]:
    listing = await _rabbitmqctl("list_queues", "-q", "name", "type", "arguments")
    return {line.split("\t")[0]: line for line in listing.splitlines()}


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}"
    return out.decode()


@pytest.mark.slow
async def test_a_lost_connection_cancels_only_the_handler_and_consumption_resumes(
    bus_prefix: str, rabbit_tools: RabbitTools, no_leaked_tasks: None
) -> None:
    """What services build on to keep long work across a blip: the handler is cancelled, a task
    it started is not, and the unsettled message is delivered again after the reconnect."""
    name = f"{bus_prefix}-consumer"
    bus = RabbitBus(rabbit_tools.config(bus_prefix, reconnect_interval=0.5, connection_name=name))
    queue, retry = f"{bus_prefix}.blip", RetryPolicy(delays=(1.0,))
    deliveries: list[str] = []
    cancelled: list[str] = []
    release = asyncio.Event()
    work: dict[str, asyncio.Task[bool]] = {}

    async def handler(event: Event) -> None:
        deliveries.append(event.job_id or "")
        task = work.get(event.job_id or "")
        if task is None:  # the long work, owned outside the delivery
            task = work[event.job_id or ""] = asyncio.create_task(release.wait())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled.append(event.job_id or "")
            raise

    await bus.subscribe(Subscription(queue, ["job.submitted"], handler, retry=retry))
    try:
        await bus.start()
        await bus.publish(submitted("job-long"))
        async with asyncio.timeout(10):
            while not deliveries:
                await asyncio.sleep(0.05)

        await _close_connection(name)
        async with asyncio.timeout(30):  # cancelled, reconnected, delivered again
            while len(deliveries) < 2:
                await asyncio.sleep(0.05)
        assert cancelled == ["job-long"]
        assert not work["job-long"].done(), "the bus cancelled work it does not own"
        release.set()
        async with asyncio.timeout(10):
            while bus.ready() is False or await _depth(queue) != 0:
                await asyncio.sleep(0.1)
    finally:
        release.set()
        await bus.close()
        await rabbit_tools.delete_topology(bus_prefix, [(queue, retry)])
    assert deliveries == ["job-long", "job-long"]


async def _close_connection(name: str) -> None:
    listing = await _rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    [pid] = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{name}"}}' in line
    ]
    await _rabbitmqctl("close_connection", pid, "test: a connection blip")


async def _depth(queue: str) -> int:
    """Messages in ``queue``, ready or unacknowledged."""
    listing = await _rabbitmqctl("list_queues", "-q", "name", "messages")
    for line in listing.splitlines():
        columns = line.split("\t")
        if columns[0] == queue:
            return int(columns[1])
    raise AssertionError(f"no queue {queue}")
