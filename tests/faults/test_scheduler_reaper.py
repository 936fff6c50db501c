"""Each accepted job reaches exactly one terminal state with one terminal event (issue 7, classes
2 and 3), on RabbitMQ and FerretDB: jobs wedged in scoring are reaped, two schedulers share the
queue and both reap, executor and scorer deliver every event twice, and a scheduler restarted
after a crash before its pop republishes the same request.

The executor and scorer are the named fakes of ``tests/scheduler/fakes.py`` (plain bus
subscribers deriving their ids as the real services do): what is under test is the scheduler.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from services.scheduler.main import create_scheduler
from services.scheduler.service import Scheduler
from shared.bus import EventBus, RetryPolicy
from shared.errors import ErrorCode
from shared.events import Event, JobFailed, ScoreCompleted
from shared.jobs import TERMINAL_STATES, Job, JobStatus
from shared.outbox import outbox_entry
from shared.store_mongo import MongoJobStore
from tests.scheduler.fakes import FAST_RETRY, FakeExecutor, FakeScorer, Observer, eventually
from tests.scheduler.real import (
    Names,
    delete_topology,
    drop_database,
    open_bus,
    open_store,
    within,
)
from tests.scheduler.rig import eventually_async, reaper_settings, submitted

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo]

S = JobStatus


@dataclass
class Stack:
    """Schedulers (each with its own connection and client) around one queue and database."""

    names: Names
    buses: list[EventBus] = field(default_factory=list)
    stores: list[MongoJobStore] = field(default_factory=list)
    schedulers: list[Scheduler] = field(default_factory=list)

    async def scheduler(self) -> tuple[EventBus, MongoJobStore]:
        bus, store = open_bus("rabbitmq", self.names), open_store(self.names)
        self.buses.append(bus)
        self.stores.append(store)
        settings = reaper_settings(
            queue=self.names.queue("scheduler.jobs"),
            # RabbitMQ round trips: room for the normal path, not for a wedged job
            queue_wait_s=5.0,
            submitted_wait_s=5.0,
        )
        settings = settings.model_copy(
            update={"scorer": settings.scorer.model_copy(update={"time_limit": 1.5})}
        )
        scheduler = create_scheduler(settings, bus, store)
        self.schedulers.append(scheduler)
        await store.init()
        await bus.start()
        await scheduler.start()
        return bus, store

    async def stop_scheduler(self, n: int) -> None:
        await self.schedulers[n].close()

    async def close(self) -> None:
        for scheduler in self.schedulers:
            await scheduler.close()
        for bus in self.buses:
            await bus.close()
        for store in self.stores:
            await store.close()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    names = Names.fresh("reap")
    made = Stack(names)
    try:
        yield made
    finally:
        async with within("closing the schedulers"):
            await made.close()
        async with within("cleaning up"):
            await drop_database(names.database)
            queues = [(names.queue("scheduler.jobs"), RetryPolicy())]
            queues += [(names.queue(q), FAST_RETRY) for q in ("executor", "scorer", "observer")]
            await delete_topology(names, queues)


async def services(bus: EventBus, names: Names) -> tuple[FakeExecutor, FakeScorer, Observer]:
    executor, scorer, observer = FakeExecutor(bus), FakeScorer(bus), Observer(bus)
    await executor.subscribe(names.queue("executor"))
    await scorer.subscribe(names.queue("scorer"))
    await observer.subscribe(names.queue("observer"))
    return executor, scorer, observer


def terminal_ids(observer: Observer) -> dict[str, set[str]]:
    """Per job, the distinct event ids of its terminal events (duplicates are one)."""
    found: dict[str, set[str]] = defaultdict(set)
    for event in observer.seen:
        if isinstance(event, JobFailed | ScoreCompleted) and event.job_id:
            found[event.job_id].add(str(event.event_id))
    return found


async def finished(store: MongoJobStore, job_ids: list[str]) -> bool:
    for job_id in job_ids:
        job = await store.get(job_id)
        if job is None or job.status not in TERMINAL_STATES or job.outbox:
            return False
    return True


def terminal_moves(job: Job) -> list[JobStatus]:
    return [h.status for h in job.history if h.status in TERMINAL_STATES]


async def test_two_schedulers_reap_wedged_jobs_once_amid_duplicates(stack: Stack) -> None:
    bus, store = await stack.scheduler()
    await stack.scheduler()  # a second replica on the same queue and database, reaping too
    executor, scorer, observer = await services(bus, stack.names)
    executor.duplicate = scorer.duplicate = True  # every run and score event arrives twice
    wedged = [f"job-wedged-{n}" for n in range(3)]
    fine = [f"job-fine-{n}" for n in range(3)]
    scorer.ignore = set(wedged)  # their ScoreCompleted never comes
    for job_id in [*wedged, *fine]:
        event = submitted(job_id)
        await bus.publish(event)
        await bus.publish(event)  # a platform publishing twice

    async with within("every job reaching a terminal state", 60):
        await eventually_async(lambda: finished(store, [*wedged, *fine]), timeout=60)
    await asyncio.sleep(1.0)  # late duplicates, further reaper rounds

    ids = terminal_ids(observer)
    for job_id in wedged:
        job = await store.get(job_id)
        assert job is not None
        assert terminal_moves(job) == [S.FAILED], job.history
        assert job.error is not None and job.error.code is ErrorCode.DEADLINE_EXCEEDED
        assert len(ids[job_id]) == 1, job_id
    for job_id in fine:
        job = await store.get(job_id)
        assert job is not None
        assert terminal_moves(job) == [S.SUCCEEDED], job.history
        assert len(ids[job_id]) == 1, job_id
    resent = [r for r in scorer.requests if r.job_id == wedged[0]]
    assert len({r.event_id for r in resent}) == 1  # re-sent requests are the same request


async def test_a_restarted_scheduler_republishes_the_same_score_request(stack: Stack) -> None:
    """What a SIGKILL between the publish of ScoreRequested and its pop leaves: the entry in the
    outbox after the scorer answered. The restarted scheduler's first sweep republishes it; the
    scorer's answer has the same id as the first, and the job stays finished once."""
    bus, store = await stack.scheduler()
    _, scorer, observer = await services(bus, stack.names)
    await bus.publish(submitted("job-replay"))
    await eventually_async(lambda: finished(store, ["job-replay"]), timeout=30)
    [request] = scorer.requests
    await stack.stop_scheduler(0)
    await store.append_outbox("job-replay", [outbox_entry(request)])

    await stack.scheduler()  # the restart

    await eventually(lambda: len(scorer.requests) == 2, timeout=30)
    await eventually(lambda: len(observer.of_type(ScoreCompleted, "job-replay")) == 2, timeout=30)
    await eventually_async(lambda: finished(store, ["job-replay"]), timeout=30)
    assert {r.event_id for r in scorer.requests} == {request.event_id}
    assert len(terminal_ids(observer)["job-replay"]) == 1
    job = await store.get("job-replay")
    assert job is not None and terminal_moves(job) == [S.SUCCEEDED]
    seen: list[Event] = observer.of_type(JobFailed, "job-replay")
    assert seen == []
