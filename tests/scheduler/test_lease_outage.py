"""A broker outage longer than a lease must not cost a running job its attempt: while the
scheduler's bus is away no heartbeat can reach it, so the lease monitor waits until the bus has
been back for a whole lease length before it judges any lease (``leases.BusWatch``)."""

from __future__ import annotations

import asyncio

from services.scheduler.leases import BusWatch
from services.scheduler.main import create_scheduler
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.events import Event, RunStarted
from shared.jobs import JobStatus
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.rig import submitted


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Bus(MemoryBus):
    """A memory bus whose connection state a test sets (as a broker restart would)."""

    up = True

    def ready(self) -> bool:
        return self.up and super().ready()


async def _drop(event: Event) -> None:
    return None


async def test_bus_watch_waits_a_lease_length_after_the_bus_was_last_seen_down() -> None:
    bus, clock = _Bus(), _Clock()
    await bus.start()
    try:
        watch = BusWatch(bus, 30.0, clock)
        assert watch.settled()  # never seen down
        bus.up = False
        assert not watch.settled()
        clock.now += 100  # a long outage
        assert not watch.settled()
        bus.up = True
        clock.now += 29
        assert not watch.settled()  # back, but not yet for a whole lease
        clock.now += 1
        assert watch.settled()
    finally:
        await bus.close()


async def test_no_lease_expires_while_the_bus_is_away_or_just_back(
    store: SqliteJobStore, settings: Settings
) -> None:
    bus = _Bus(drain_timeout=2.0)
    await bus.start()
    await bus.subscribe(
        Subscription("sink", ["run.requested.*", "score.requested", "job.*"], _drop)
    )
    scheduler = create_scheduler(settings, bus, store)  # not started: the test drives the monitor
    try:
        await scheduler.handle(submitted("job-blip"))
        await scheduler.handle(
            RunStarted(job_id="job-blip", backend="local", instance="exec-1", lease_ttl_s=0.2)
        )
        await asyncio.sleep(0.3)  # the lease ran out while ...
        bus.up = False  # ... the broker was away

        assert await scheduler.expire_leases() == 0
        bus.up = True
        assert await scheduler.expire_leases() == 0  # back for less than a lease length
        job = await store.get("job-blip")
        assert job is not None and job.status is JobStatus.RUNNING and job.attempts.count == 1
    finally:
        await scheduler.close()
        await bus.close()


async def test_an_expired_lease_is_still_expired_when_the_bus_stayed_up(
    store: SqliteJobStore, settings: Settings
) -> None:
    bus = _Bus(drain_timeout=2.0)
    await bus.start()
    await bus.subscribe(
        Subscription("sink", ["run.requested.*", "score.requested", "job.*"], _drop)
    )
    scheduler = create_scheduler(settings, bus, store)
    try:
        await scheduler.handle(submitted("job-lost"))
        await scheduler.handle(
            RunStarted(job_id="job-lost", backend="local", instance="exec-1", lease_ttl_s=0.2)
        )
        await asyncio.sleep(0.3)

        assert await scheduler.expire_leases() == 1
        job = await store.get("job-lost")
        assert job is not None and job.status is JobStatus.QUEUED and job.attempts.count == 1
    finally:
        await scheduler.close()
        await bus.close()
