"""The outbox relay isolates jobs (issue 7, class 3), on RabbitMQ and FerretDB.

A holder that died while holding a job's FerretDB write lock (``shared/store_mongo_lock.py``)
leaves a lock that blocks every write to that job until it expires (30 s). The relay's pop of
that job fails after the lock wait: the other jobs' events in the same sweep still go out and are
popped, the stuck job is backed off (not retried every sweep), and once the lock is gone its
entry is popped, republished with the same ``event_id``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pymongo import AsyncMongoClient

import shared.store_mongo_lock
from shared.bus import EventBus, Subscription
from shared.events import Event, RunRequested
from shared.jobs import JobStatus, new_job, now_ms
from shared.outbox import OutboxRelay, outbox_entry
from shared.store_mongo import MongoJobStore
from tests.scheduler.fakes import FAST_RETRY, eventually
from tests.scheduler.real import (
    MONGO_URL,
    Names,
    delete_topology,
    drop_database,
    open_bus,
    open_store,
    within,
)
from tests.scheduler.rig import eventually_async, submitted

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo]

S = JobStatus
LOCK_WAIT_S = 1.0


@pytest.fixture
def names() -> Names:
    return Names.fresh("relay")


@pytest.fixture
async def servers(
    names: Names, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[EventBus, MongoJobStore]]:
    monkeypatch.setattr(shared.store_mongo_lock, "WAIT_S", LOCK_WAIT_S)  # 15 s in production
    bus, store = open_bus("rabbitmq", names), open_store(names)
    await store.init()
    await bus.start()
    try:
        yield bus, store
    finally:
        async with within("closing the bus and store"):
            await bus.close()
            await store.close()
        async with within("cleaning up"):
            await drop_database(names.database)
            await delete_topology(names, [(names.queue("executor.local"), FAST_RETRY)])


async def pending_request(store: MongoJobStore, job_id: str) -> RunRequested:
    event = submitted(job_id)
    await store.create(new_job(event.spec, workspace=event.workspace))
    request = RunRequested(
        job_id=job_id, backend="local", attempt=1, spec=event.spec, workspace=event.workspace
    )
    await store.transition(job_id, S.SUBMITTED, S.QUEUED, outbox=[outbox_entry(request)])
    return request


async def test_a_stale_lock_on_one_job_does_not_stall_the_others(
    servers: tuple[EventBus, MongoJobStore], names: Names
) -> None:
    bus, store = servers
    seen: list[Event] = []

    async def collect(event: Event) -> None:
        seen.append(event)

    await bus.subscribe(
        Subscription(names.queue("executor.local"), ["run.requested.local"], collect)
    )
    locked = await pending_request(store, "job-locked")  # the oldest: relayed first
    others = [f"job-{n}" for n in range(8)]
    for job_id in others:
        await pending_request(store, job_id)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGO_URL, timeoutMS=10_000)
    locks = client[names.database]["jobs_locks"]
    dead = {
        "_id": "a-dead-holder",
        "job_id": "job-locked",
        "expires_at": now_ms() + timedelta(hours=1),
    }
    await locks.insert_one(dead)
    relay = OutboxRelay(bus, store, backoff=5.0)
    try:
        started = time.monotonic()
        assert await relay.sweep(everything=True) == 1 + len(others)
        took = time.monotonic() - started

        for job_id in others:
            job = await store.get(job_id)
            assert job is not None and job.outbox == [], job_id
        stuck = await store.get("job-locked")
        assert stuck is not None and len(stuck.outbox) == 1
        assert relay.waiting() == {"job-locked": 1}
        assert took < LOCK_WAIT_S + 4.0  # one lock wait, not one per sweep or per job
        assert await relay.sweep(everything=True) == 0  # backed off: not even read

        await locks.delete_one({"_id": "a-dead-holder"})
        await eventually_async(lambda: _relayed(relay, store, "job-locked"), timeout=20)
    finally:
        await client.close()

    await eventually(lambda: len(seen) >= 2 + len(others))
    again = [e.event_id for e in seen if e.job_id == "job-locked"]
    assert again == [locked.event_id] * len(again) and len(again) == 2


async def _relayed(relay: OutboxRelay, store: MongoJobStore, job_id: str) -> bool:
    await relay.sweep(everything=True)
    job = await store.get(job_id)
    return job is not None and job.outbox == []
