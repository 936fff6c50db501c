"""The same job paths on a real RabbitMQ and a MongoDB-wire server (FerretDB), and on the
in-memory bus with FerretDB.

The servers come from ``scripts/provision/rabbitmq.sh`` and ``scripts/provision/ferretdb.sh``
(or ``AUTOSCORER_TEST_RABBITMQ_URL`` / ``AUTOSCORER_TEST_MONGO_URL``); without them these tests
fail, never skip. Every test has its own exchange, queues and database, removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import pytest
from pymongo import AsyncMongoClient

from services.scheduler.main import create_scheduler
from shared.bus import EventBus, RetryPolicy
from shared.bus_memory import MemoryBus
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig, dead_letter_queue, retry_queue
from shared.errors import ErrorCode
from shared.events import JobFailed, RunCompleted, ScoreCompleted
from shared.jobs import JobStatus
from shared.models import RunOutcome
from shared.store_mongo import MongoJobStore
from tests.scheduler.fakes import FAST_RETRY, FakeExecutor, FakeScorer, Observer, eventually
from tests.scheduler.rig import Rig, eventually_async, scheduler_settings, submitted

pytestmark = pytest.mark.mongo

S = JobStatus
RABBIT_URL = os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
MONGO_URL = os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")


@dataclass
class Names:
    prefix: str

    def queue(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    @property
    def database(self) -> str:
        return f"autoscorer_test_{self.prefix.replace('-', '_')}"


@pytest.fixture(params=[pytest.param("rabbitmq", marks=pytest.mark.rabbitmq), "memory"])
def bus_kind(request: pytest.FixtureRequest) -> str:
    """RabbitMQ + FerretDB is the real deployment; the memory bus on FerretDB isolates the store."""
    return str(request.param)


@pytest.fixture
def names() -> Names:
    return Names(f"sched-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def real_rig(names: Names, bus_kind: str) -> AsyncIterator[Rig]:
    bus = _open_bus(bus_kind, names)
    store = MongoJobStore.from_url(MONGO_URL, names.database, timeoutMS=10_000)
    settings = scheduler_settings(queue=names.queue("scheduler.jobs"), max_attempts=2)
    scheduler = create_scheduler(settings, bus, store)
    try:
        await store.init()
        await bus.start()
        executor, scorer, observer = FakeExecutor(bus), FakeScorer(bus), Observer(bus)
        await executor.subscribe(names.queue("executor.local"))
        await scorer.subscribe(names.queue("scorer.requests"))
        await observer.subscribe(names.queue("observer"))
        await scheduler.start()
        yield Rig(bus, store, scheduler, executor, scorer, observer)
    finally:
        async with _within("closing the scheduler, bus and store"):
            await scheduler.close()
            await bus.close()
            await store.close()
        async with _within("dropping the test database"):
            await _drop_database(names.database)
        if bus_kind == "rabbitmq":
            async with _within("deleting the test queues"):
                await _delete_topology(names)


@asynccontextmanager
async def _within(what: str, seconds: float = 30.0) -> AsyncIterator[None]:
    """Fail with a clear message instead of waiting for the per-test timeout."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        pytest.fail(f"{what} took more than {seconds:g} s")


def _open_bus(kind: str, names: Names) -> EventBus:
    if kind == "memory":
        return MemoryBus(drain_timeout=5.0)
    config = RabbitBusConfig(
        url=RABBIT_URL,
        exchange=f"{names.prefix}.events",
        dead_letter_exchange=f"{names.prefix}.dlx",
        drain_timeout=5.0,
    )
    return RabbitBus(config)


async def test_jobs_take_every_path(real_rig: Rig) -> None:
    rig = real_rig
    rig.executor.duplicate = rig.scorer.duplicate = True
    rig.executor.plans = {1: "platform_error"}
    retried, other = submitted("job-retried"), submitted("job-other")
    for event in (retried, retried, other):
        await rig.bus.publish(event)

    job = await rig.wait_status("job-retried", S.SUCCEEDED, timeout=30)
    assert [h.status for h in job.history] == [
        S.SUBMITTED, S.QUEUED, S.RUNNING, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED,
    ]  # fmt: skip
    assert [r.platform_failure for r in job.attempts.records] == [True, False]
    assert job.result is not None and job.result.summary == {"accuracy": 0.75}

    job = await rig.wait_status("job-other", S.SUCCEEDED, timeout=30)
    assert job.attempts.count == 2
    scored = {"job-retried", "job-other"}
    await eventually(lambda: {e.job_id for e in rig.observer.of_type(ScoreCompleted)} == scored)
    await eventually_async(lambda: _outbox_empty(rig, "job-retried"))
    runs = {(r.job_id, r.attempt) for r in rig.executor.requests}
    assert runs == {("job-retried", 1), ("job-retried", 2), ("job-other", 1), ("job-other", 2)}


async def test_a_lost_executor_fails_the_job_after_max_attempts(real_rig: Rig) -> None:
    rig = real_rig
    rig.executor.plans = {1: "vanish", 2: "vanish"}
    await rig.bus.publish(submitted("job-vanished"))

    job = await rig.wait_status("job-vanished", S.FAILED, timeout=30)

    assert job.error is not None and job.error.code is ErrorCode.EXEC_ERROR
    assert [r.platform_failure for r in job.attempts.records] == [True, True]
    assert job.lease is None
    await eventually(lambda: rig.observer.of_type(JobFailed, "job-vanished"), timeout=30)


async def test_a_score_only_job_is_scored_when_the_platform_reports_its_run(
    real_rig: Rig,
) -> None:
    rig = real_rig
    ran = RunCompleted(
        job_id="job-platform",
        outcome=RunOutcome(job_id="job-platform", backend="platform", status="succeeded"),
    )
    await rig.bus.publish(ran)  # before the job exists: retried by the bus
    await rig.bus.publish(submitted("job-platform", container=False))

    job = await rig.wait_status("job-platform", S.SUCCEEDED, timeout=30)

    assert [h.status for h in job.history][-3:] == [S.RUNNING, S.SCORING, S.SUCCEEDED]
    assert rig.executor.requests == []


async def _outbox_empty(rig: Rig, job_id: str) -> bool:
    return (await rig.job(job_id)).outbox == []


async def _drop_database(database: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGO_URL, timeoutMS=10_000)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


async def _delete_topology(names: Names) -> None:
    queues = [
        (names.queue("scheduler.jobs"), RetryPolicy()),
        *((names.queue(q), FAST_RETRY) for q in ("executor.local", "scorer.requests", "observer")),
    ]
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
        await channel.exchange_delete(f"{names.prefix}.dlx")
