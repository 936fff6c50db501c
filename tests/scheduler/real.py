"""Helpers for scheduler tests on the real servers: RabbitMQ and a MongoDB-wire server (FerretDB).

The servers come from ``scripts/provision/rabbitmq.sh`` and ``scripts/provision/ferretdb.sh``
(or ``AUTOSCORER_TEST_RABBITMQ_URL`` / ``AUTOSCORER_TEST_MONGO_URL``); without them the tests
fail, never skip. Each test names its own exchange, queues and database (``Names``) and removes
them afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import pytest
from pymongo import AsyncMongoClient

from services.scheduler.main import create_scheduler
from shared.bus import EventBus, RetryPolicy
from shared.bus_memory import MemoryBus
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig, dead_letter_queue, retry_queue
from shared.config import Settings
from shared.store_mongo import MongoJobStore
from tests.scheduler.fakes import FakeExecutor, FakeScorer, Observer
from tests.scheduler.rig import Rig

RABBIT_URL = os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
MONGO_URL = os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")


@dataclass
class Names:
    prefix: str

    @classmethod
    def fresh(cls, kind: str = "sched") -> Names:
        return cls(f"{kind}-{uuid.uuid4().hex[:12]}")

    def queue(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    @property
    def database(self) -> str:
        return f"autoscorer_test_{self.prefix.replace('-', '_')}"


def open_bus(kind: str, names: Names) -> EventBus:
    if kind == "memory":
        return MemoryBus(drain_timeout=5.0)
    config = RabbitBusConfig(
        url=RABBIT_URL,
        exchange=f"{names.prefix}.events",
        dead_letter_exchange=f"{names.prefix}.dlx",
        drain_timeout=5.0,
    )
    return RabbitBus(config)


def open_store(names: Names) -> MongoJobStore:
    return MongoJobStore.from_url(MONGO_URL, names.database, timeoutMS=10_000)


@asynccontextmanager
async def within(what: str, seconds: float = 30.0) -> AsyncIterator[None]:
    """Fail with a clear message instead of waiting for the per-test timeout."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        pytest.fail(f"{what} took more than {seconds:g} s")


async def drop_database(database: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGO_URL, timeoutMS=10_000)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


async def delete_topology(
    names: Names, queues: Iterable[tuple[str, RetryPolicy]], *, own_dead_letters: bool = True
) -> None:
    """Delete the test's queues (with their DLQs and retry queues) and its exchanges (its dead
    letter exchange too, unless it used the shared one)."""
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        for name, retry in queues:
            for queue in [
                name,
                dead_letter_queue(name),
                *(retry_queue(name, d) for d in retry.delays),
            ]:
                await channel.queue_delete(queue)
        await channel.exchange_delete(f"{names.prefix}.events")
        if own_dead_letters:
            await channel.exchange_delete(f"{names.prefix}.dlx")


@asynccontextmanager
async def real_scheduler_rig(
    bus_kind: str,
    names: Names,
    settings: Settings,
    scorer: Callable[[EventBus], FakeScorer] = FakeScorer,
) -> AsyncIterator[Rig]:
    """A scheduler on ``bus_kind`` and FerretDB with fake executor, scorer and observer on the
    test's own queues; closed, its database dropped (and its queues deleted by the caller)."""
    bus, store = open_bus(bus_kind, names), open_store(names)
    scheduler = create_scheduler(settings, bus, store)
    try:
        await store.init()
        await bus.start()
        executor, fake_scorer, observer = FakeExecutor(bus), scorer(bus), Observer(bus)
        await executor.subscribe(names.queue("executor.local"))
        await fake_scorer.subscribe(names.queue("scorer.requests"))
        await observer.subscribe(names.queue("observer"))
        await scheduler.start()
        yield Rig(bus, store, scheduler, executor, fake_scorer, observer)
    finally:
        async with within("closing the scheduler, bus and store"):
            await scheduler.close()
            await bus.close()
            await store.close()
        async with within("dropping the test database"):
            await drop_database(names.database)
