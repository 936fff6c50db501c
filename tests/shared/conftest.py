"""Bus fixtures: one harness per bus implementation, unique names per test, no leaked tasks.

The RabbitMQ broker comes from ``scripts/provision/rabbitmq.sh`` (or the URL in
``AUTOSCORER_TEST_RABBITMQ_URL``). When it is absent the RabbitMQ tests fail; they never skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from shared.bus import DeadLetter, EventBus, Handler, RetryPolicy, Subscription
from shared.bus_memory import MemoryBus
from shared.bus_rabbitmq import (
    RabbitBus,
    RabbitBusConfig,
    dead_letter_from,
    dead_letter_queue,
    retry_queue,
)

RABBIT_URL = os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
FAST_RETRY = RetryPolicy(max_attempts=3, delays=(0.05, 0.1))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider.get_tracer("tests")


@dataclass
class BusHarness:
    """A started bus plus what a test needs to look inside it, whichever the implementation."""

    kind: str
    bus: EventBus
    prefix: str
    queues: list[tuple[str, RetryPolicy]] = field(default_factory=list)

    def name(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    async def subscribe(
        self,
        queue: str,
        routing_keys: Sequence[str],
        handler: Handler,
        *,
        retry: RetryPolicy = FAST_RETRY,
        **options: Any,
    ) -> str:
        name = self.name(queue)
        self.queues.append((name, retry))
        await self.bus.subscribe(Subscription(name, routing_keys, handler, retry=retry, **options))
        return name

    async def publish_raw(self, routing_key: str, body: bytes) -> None:
        if isinstance(self.bus, MemoryBus):
            await self.bus.publish_raw(routing_key, body)
            return
        connection = await aio_pika.connect(RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(f"{self.prefix}.events")
            await exchange.publish(aio_pika.Message(body), routing_key)

    async def dead_letters(self, queue: str, count: int, timeout: float = 10.0) -> list[DeadLetter]:
        """Wait until ``queue`` has dead-lettered ``count`` messages and return them."""
        async with asyncio.timeout(timeout):
            if isinstance(self.bus, MemoryBus):
                return await _memory_dead_letters(self.bus, queue, count)
            return await _rabbit_dead_letters(queue, count)


async def _memory_dead_letters(bus: MemoryBus, queue: str, count: int) -> list[DeadLetter]:
    while True:
        found = [d for d in bus.dead_letters if d.queue == queue]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)


async def _rabbit_dead_letters(queue: str, count: int) -> list[DeadLetter]:
    connection = await aio_pika.connect(RABBIT_URL)
    found: list[DeadLetter] = []
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(dead_letter_queue(queue))
        while len(found) < count:
            message = await dlq.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            found.append(dead_letter_from(message))
    return found


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def bus_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def bus_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class RabbitTools:
    """Helpers for RabbitMQ-only tests (conftest itself is not importable)."""

    url: str = RABBIT_URL

    def config(self, prefix: str, **overrides: Any) -> RabbitBusConfig:
        return rabbit_config(prefix, **overrides)

    async def delete_topology(self, prefix: str, queues: Sequence[tuple[str, RetryPolicy]]) -> None:
        await delete_topology(prefix, queues)


@pytest.fixture
def rabbit_tools() -> RabbitTools:
    return RabbitTools()


def rabbit_config(prefix: str, **overrides: Any) -> RabbitBusConfig:
    settings: dict[str, Any] = {"drain_timeout": 5.0, **overrides}
    return RabbitBusConfig(
        url=RABBIT_URL,
        exchange=f"{prefix}.events",
        dead_letter_exchange=f"{prefix}.dlx",
        **settings,
    )


@pytest.fixture
async def harness(
    bus_kind: str, bus_prefix: str, tracer: Tracer, no_leaked_tasks: None
) -> AsyncIterator[BusHarness]:
    bus: MemoryBus | RabbitBus
    if bus_kind == "memory":
        bus = MemoryBus(tracer=tracer, drain_timeout=5.0)
    else:
        bus = RabbitBus(rabbit_config(bus_prefix), tracer=tracer)
    rig = BusHarness(bus_kind, bus, bus_prefix)
    await bus.start()
    try:
        yield rig
    finally:
        await bus.close()
        if bus_kind == "rabbitmq":
            await delete_topology(bus_prefix, rig.queues)


async def delete_topology(prefix: str, queues: Sequence[tuple[str, RetryPolicy]]) -> None:
    """Remove what a test declared so the broker does not fill up with test queues."""
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        for name, retry in queues:
            names = [name, dead_letter_queue(name), *(retry_queue(name, d) for d in retry.delays)]
            for queue in dict.fromkeys(names):
                await channel.queue_delete(queue)
        await channel.exchange_delete(f"{prefix}.events")
        await channel.exchange_delete(f"{prefix}.dlx")
