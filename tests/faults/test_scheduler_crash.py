"""SIGKILL the scheduler right after it published ScoreRequested and before it popped it from the
job's outbox (issue 7, class 3), on RabbitMQ and FerretDB.

The scheduler runs as its own process (``python -m services.scheduler.main``). The test's scorer
freezes it (SIGSTOP) the moment ScoreRequested arrives, looks at the job: if the entry is still
in the outbox the crash point is hit and the process is SIGKILLed; if the pop already happened,
the process goes on (SIGCONT) and the next job tries again. After a restart the request is
republished with the same ``event_id``, the scorer's answer has the same id as the first, so the
platform sees one ScoreCompleted per job (by ``event_id``) and the job finishes once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.bus import EventBus, RetryPolicy, Subscription
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig
from shared.errors import AutoscorerError
from shared.events import BaseEvent, Event, ScoreCompleted, ScoreRequested, derived_event_id
from shared.jobs import TERMINAL_STATES, JobStatus
from shared.models import Result
from shared.store_mongo import MongoJobStore
from tests.scheduler.fakes import FAST_RETRY, FakeExecutor, Observer, eventually
from tests.scheduler.real import (
    MONGO_URL,
    RABBIT_URL,
    Names,
    delete_topology,
    drop_database,
    open_store,
    within,
)
from tests.scheduler.rig import eventually_async, submitted

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TRIES = 6


@dataclass
class SchedulerProcess:
    names: Names
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> int:
        env = {
            **os.environ,
            "AUTOSCORER__BUS__KIND": "rabbitmq",
            "AUTOSCORER__BUS__URL": RABBIT_URL,
            "AUTOSCORER__BUS__EXCHANGE": f"{self.names.prefix}.events",
            "AUTOSCORER__STORE__KIND": "mongo",
            "AUTOSCORER__STORE__URL": MONGO_URL,
            "AUTOSCORER__STORE__DATABASE": self.names.database,
            "AUTOSCORER__SCHEDULER__QUEUE": self.names.queue("scheduler.jobs"),
            "AUTOSCORER__SCHEDULER__RELAY_INTERVAL_S": "0.2",
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.scheduler.main", cwd=ROOT, env=env
        )
        return self.process.pid

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@dataclass
class FreezingScorer:
    """Answers every ScoreRequested (with the id the scorer service derives); until the crash
    point is hit, freezes the scheduler on each request first and kills it if the request is
    still in the job's outbox."""

    bus: EventBus
    store: MongoJobStore
    scheduler: SchedulerProcess
    crashed: str | None = None
    requests: list[ScoreRequested] = field(default_factory=list)

    async def handle(self, event: Event) -> None:
        assert isinstance(event, ScoreRequested)
        if self.crashed is None:
            await self._freeze(event)
        self.requests.append(event)
        await self.bus.publish(
            ScoreCompleted(
                event_id=derived_event_id(event.event_id, "score.completed"),
                job_id=event.job_id,
                result=Result(summary={"accuracy": 0.5}),
                scorer=event.spec.scorer,
                scorer_version="1",
            )
        )

    async def _freeze(self, event: ScoreRequested) -> None:
        self.scheduler.signal(signal.SIGSTOP)
        job = await self.store.get(event.job_id)
        pending = job is not None and str(event.event_id) in {e.event_id for e in job.outbox}
        if pending:
            self.crashed = event.job_id
            await self.scheduler.kill()
        else:
            self.scheduler.signal(signal.SIGCONT)


@pytest.fixture
def names() -> Names:
    return Names.fresh("crash")


@pytest.fixture
async def bus(names: Names) -> AsyncIterator[EventBus]:
    config = RabbitBusConfig(url=RABBIT_URL, exchange=f"{names.prefix}.events", drain_timeout=5.0)
    opened = RabbitBus(config)
    await opened.start()
    yield opened
    await opened.close()


async def test_a_scheduler_killed_between_publish_and_pop_republishes_the_same_request(
    names: Names, bus: EventBus
) -> None:
    store = open_store(names)
    await store.init()
    scheduler = SchedulerProcess(names)
    await scheduler.start()
    executor, observer = FakeExecutor(bus), Observer(bus)
    scorer = FreezingScorer(bus, store, scheduler)
    try:
        await executor.subscribe(names.queue("executor"))
        await observer.subscribe(names.queue("observer"))
        await bus.subscribe(Subscription(names.queue("scorer"), ["score.requested"], scorer.handle))
        job_ids = [f"job-crash-{n}" for n in range(TRIES)]
        for job_id in job_ids:
            await _publish_when_bound(bus, submitted(job_id))
            await eventually(lambda: scorer.crashed is not None or _scored(scorer, job_id), 60)
            if scorer.crashed is not None:
                break
        crashed = scorer.crashed
        assert crashed is not None, f"the crash point was not hit in {TRIES} jobs"

        await scheduler.start()  # the restart: its first sweep relays what the crash left

        await eventually_async(lambda: _finished(store, crashed), timeout=90)
        # the republish can come late: the kill may leave the job's FerretDB lock (30 s) and the
        # relay backs a failing job off (1 s doubling, at most 60 s)
        await eventually(lambda: len(observer.of_type(ScoreCompleted, crashed)) >= 2, 120)

        again = [r.event_id for r in scorer.requests if r.job_id == crashed]
        # republished at least once (more when the kill left the job's FerretDB lock behind
        # and a pop had to wait for it): always the same request
        assert len(again) >= 2 and set(again) == {again[0]}
        answers = {e.event_id for e in observer.of_type(ScoreCompleted, crashed)}
        assert len(answers) == 1  # one ScoreCompleted by event_id, however often delivered
        job = await store.get(crashed)
        assert job is not None
        assert [h.status for h in job.history].count(JobStatus.SUCCEEDED) == 1
    finally:
        async with within("stopping the scheduler and cleaning up", 60):
            await scheduler.kill()
            await store.close()
            await drop_database(names.database)
            queues = [(names.queue("scheduler.jobs"), RetryPolicy())]
            queues += [(names.queue(q), FAST_RETRY) for q in ("executor", "observer")]
            queues += [(names.queue("scorer"), RetryPolicy())]
            await delete_topology(names, queues, own_dead_letters=False)


def _scored(scorer: FreezingScorer, job_id: str) -> bool:
    return any(r.job_id == job_id for r in scorer.requests)


async def _publish_when_bound(bus: EventBus, event: BaseEvent) -> None:
    """The scheduler process declares its queue when it starts: publish once it is bound."""
    async with asyncio.timeout(60):
        while True:
            try:
                await bus.publish(event)
                return
            except AutoscorerError:
                await asyncio.sleep(0.2)


async def _finished(store: MongoJobStore, job_id: str) -> bool:
    job = await store.get(job_id)
    return job is not None and job.status in TERMINAL_STATES and not job.outbox
