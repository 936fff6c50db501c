"""The outbox relay: leftovers after a crash, priority order, what an unroutable entry does."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from services.scheduler.main import RELAY_HOLD_S, RELAY_SETTLE_S, create_scheduler, relay_hold
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import Event, JobFailed, RunRequested
from shared.jobs import Job, JobStatus, OutboxEntry, new_job
from shared.outbox import OutboxRelay, outbox_entry
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.fakes import FakeExecutor, FakeScorer, Observer, eventually
from tests.scheduler.rig import eventually_async, submitted

S = JobStatus


async def queued_with_pending_request(store: SqliteJobStore, job_id: str, priority: int) -> None:
    """What a scheduler that crashed right after its compare-and-set leaves behind."""
    event = submitted(job_id, priority=priority)
    job = new_job(event.spec, workspace=event.workspace, priority=priority)
    await store.create(job)
    request = RunRequested(
        job_id=job_id, backend="local", attempt=1, spec=event.spec, workspace=event.workspace
    )
    await store.transition(job_id, S.SUBMITTED, S.QUEUED, outbox=[outbox_entry(request)])


async def test_a_restarted_scheduler_republishes_what_a_crash_left_in_the_outbox(
    bus: MemoryBus, store: SqliteJobStore, settings: Settings
) -> None:
    await queued_with_pending_request(store, "job-crash", priority=5)
    executor, scorer, observer = FakeExecutor(bus), FakeScorer(bus), Observer(bus)
    await executor.subscribe("executor.local")
    await scorer.subscribe("scorer.requests")
    await observer.subscribe("observer")

    scheduler = create_scheduler(settings, bus, store)
    await scheduler.start()
    try:
        await eventually(lambda: executor.requests)

        async def done() -> bool:
            job = await store.get("job-crash")
            return job is not None and job.status is S.SUCCEEDED

        await eventually_async(done)
    finally:
        await scheduler.close()
    job = await store.get("job-crash")
    assert job is not None and job.outbox == []
    assert [r.attempt for r in executor.requests] == [1]


async def test_a_backlog_is_dispatched_highest_priority_first(
    bus: MemoryBus, store: SqliteJobStore
) -> None:
    for job_id, priority in [("job-low", 1), ("job-high", 9), ("job-mid", 5)]:
        await queued_with_pending_request(store, job_id, priority)
    order: list[str] = []

    async def record(event: Event) -> None:
        order.append(event.job_id or "")

    await bus.subscribe(
        Subscription("executor.local", ["run.requested.local"], record, concurrency=1)
    )

    published = await OutboxRelay(bus, store).sweep(everything=True)

    assert published == 3
    await eventually(lambda: len(order) == 3)
    assert order == ["job-high", "job-mid", "job-low"]


async def test_an_unroutable_run_request_waits_for_its_executor(
    bus: MemoryBus, store: SqliteJobStore
) -> None:
    await queued_with_pending_request(store, "job-wait", priority=5)
    relay = OutboxRelay(bus, store, backoff=0.0)  # no back-off: the next sweep tries it again

    assert await relay.sweep(everything=True) == 0
    job = await store.get("job-wait")
    assert job is not None and len(job.outbox) == 1

    seen: list[Event] = []

    async def collect(event: Event) -> None:
        seen.append(event)

    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], collect))
    assert await relay.sweep(everything=True) == 1
    await eventually(lambda: seen)
    job = await store.get("job-wait")
    assert job is not None and job.outbox == []


async def test_an_unroutable_notification_is_dropped(bus: MemoryBus, store: SqliteJobStore) -> None:
    event = submitted("job-note")
    await store.create(new_job(event.spec, workspace=event.workspace))
    error = AutoscorerError(ErrorCode.CONTAINER_OOM, "oom", stage=Stage.EXECUTION).to_info()
    await store.append_outbox("job-note", [outbox_entry(JobFailed(job_id="job-note", error=error))])

    published = await OutboxRelay(bus, store).sweep(everything=True)

    assert published == 0  # dropped, not published
    job = await store.get("job-note")
    assert job is not None and job.outbox == []


async def test_young_entries_are_left_to_the_handler_that_wrote_them(
    bus: MemoryBus, store: SqliteJobStore
) -> None:
    await queued_with_pending_request(store, "job-young", priority=5)
    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], _ignore))

    assert await OutboxRelay(bus, store, settle=60.0).sweep() == 0
    assert await OutboxRelay(bus, store, settle=0.0).sweep() == 1


async def _ignore(event: Event) -> None:
    del event


async def pending_request(
    store: SqliteJobStore, job_id: str, backend: str, *, priority: int = 5
) -> None:
    """A queued job whose RunRequested for ``backend`` waits in its outbox."""
    event = submitted(job_id)
    await store.create(new_job(event.spec, workspace=event.workspace, priority=priority))
    request = RunRequested(
        job_id=job_id, backend=backend, attempt=1, spec=event.spec, workspace=event.workspace
    )
    await store.transition(job_id, S.SUBMITTED, S.QUEUED, outbox=[outbox_entry(request)])


async def test_a_job_whose_entry_cannot_go_does_not_hold_up_the_others(
    bus: MemoryBus, store: SqliteJobStore
) -> None:
    await pending_request(store, "job-stuck", "gpu")  # oldest; no executor serves "gpu"
    for job_id in ("job-a", "job-b"):
        await pending_request(store, job_id, "local")
    seen: list[Event] = []

    async def collect(event: Event) -> None:
        seen.append(event)

    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], collect))
    relay = OutboxRelay(bus, store)

    assert await relay.sweep(everything=True) == 2
    await eventually(lambda: len(seen) == 2)
    assert relay.waiting() == {"job-stuck": 1}  # backed off, not retried in a tight loop
    assert await relay.sweep(everything=True) == 0
    assert relay.waiting() == {"job-stuck": 1}  # left out of the query while it waits
    stuck = await store.get("job-stuck")
    assert stuck is not None and len(stuck.outbox) == 1


async def test_backed_off_jobs_cannot_fill_every_batch(
    bus: MemoryBus, store: SqliteJobStore
) -> None:
    for job_id in ("job-stuck-1", "job-stuck-2"):  # the oldest: first in every unfiltered batch
        await pending_request(store, job_id, "gpu")
    good = ["job-g1", "job-g2", "job-g3"]
    for job_id in good:
        await pending_request(store, job_id, "local")
    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], _ignore))
    relay = OutboxRelay(bus, store, batch=2, max_backoff=60.0)

    published = [await relay.sweep(everything=True) for _ in range(3)]

    assert published == [0, 2, 1]
    for job_id in good:
        job = await store.get(job_id)
        assert job is not None and job.outbox == []
    assert relay.waiting() == {"job-stuck-1": 1, "job-stuck-2": 1}


async def test_a_bus_that_cannot_publish_ends_the_sweep_without_blaming_a_job(
    store: SqliteJobStore,
) -> None:
    for job_id in ("job-1", "job-2", "job-3"):
        await pending_request(store, job_id, "local")
    down = MemoryBus()  # never started: every publish fails as "not_started"
    relay = OutboxRelay(down, store)

    with pytest.raises(AutoscorerError) as raised:
        await relay.sweep(everything=True)

    assert raised.value.code is ErrorCode.BUS_ERROR  # the supervisor backs the loop off
    assert relay.waiting() == {}
    job = await store.get("job-1")
    assert job is not None
    assert await relay.flush(job) == 0  # a writer's flush logs it and leaves it to the sweep


async def test_an_entry_that_is_no_event_is_dropped_and_the_rest_go(
    bus: MemoryBus, store: SqliteJobStore
) -> None:
    await pending_request(store, "job-junk", "local")
    junk = OutboxEntry(event_id="junk-1", type="run.requested", payload={"type": "run.requested"})
    await store.append_outbox("job-junk", [junk])
    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], _ignore))

    assert await OutboxRelay(bus, store).sweep(everything=True) == 1

    job = await store.get("job-junk")
    assert job is not None and job.outbox == []


@examples(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    good=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    stuck=st.integers(0, 4),
    batch=st.integers(1, 5),
)
def test_stuck_jobs_never_keep_the_good_ones_waiting(
    good: list[int], stuck: int, batch: int
) -> None:
    """Whatever the mix, every job whose entries can go is relayed within the sweeps its batch
    needs plus one per batch of stuck jobs, and each stuck job is tried once, then backed off."""
    asyncio.run(_drain(good, stuck, batch))


async def _drain(good: list[int], stuck: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteJobStore(Path(folder) / "jobs.sqlite3")
        await store.init()
        bus = MemoryBus()
        await bus.start()
        try:
            for n in range(stuck):  # the oldest: an unfiltered query would return them first
                await pending_request(store, f"job-stuck-{n}", "gpu")
            for n, priority in enumerate(good):
                await pending_request(store, f"job-good-{n}", "local", priority=priority)
            await bus.subscribe(Subscription("executor.local", ["run.requested.local"], _ignore))
            relay = OutboxRelay(bus, store, batch=batch, backoff=600.0)
            rounds = -(-stuck // batch) + -(-len(good) // batch) + 1
            for _ in range(rounds):
                await relay.sweep(everything=True)
            pending = {job.job_id for job in await store.find_pending_outbox(limit=500)}
            assert pending == {f"job-stuck-{n}" for n in range(stuck)}
            assert relay.waiting() == {f"job-stuck-{n}": 1 for n in range(stuck)}
        finally:
            await bus.close()
            await store.close()


# --- the pop rides on the job's next transition -----------------------------------------------


class CountingStore(SqliteJobStore):
    """The SQLite store, counting the relay's own pops."""

    pops = 0

    async def pop_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        self.pops += 1
        return await super().pop_outbox(job_id, entries)


@pytest.fixture
async def counting(store_path: Path) -> AsyncIterator[CountingStore]:
    opened = CountingStore(store_path.with_name("counted.sqlite3"))
    await opened.init()
    yield opened
    await opened.close()


async def test_a_held_entry_is_popped_by_the_next_transition_and_never_sent_again(
    bus: MemoryBus, counting: CountingStore
) -> None:
    await pending_request(counting, "job-held", "local")
    seen: list[Event] = []

    async def collect(event: Event) -> None:
        seen.append(event)

    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], collect))
    relay = OutboxRelay(bus, counting, settle=0.0, hold=60.0)
    job = await counting.get("job-held")
    assert job is not None

    assert await relay.flush(job, hold=True) == 1
    assert await relay.sweep() == 0  # settled, but known to be out: not sent again
    held = await counting.get("job-held")
    assert held is not None and len(held.outbox) == 1
    moved = await counting.transition("job-held", S.QUEUED, S.RUNNING, pop=relay.take("job-held"))

    assert moved.applied and moved.job.outbox == []
    assert counting.pops == 0
    await eventually(lambda: len(seen) == 1)
    assert await relay.sweep(everything=True) == 0 and len(seen) == 1


async def test_a_held_entry_whose_job_does_not_move_is_popped_by_a_later_sweep(
    bus: MemoryBus, counting: CountingStore
) -> None:
    await pending_request(counting, "job-still", "local")
    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], _ignore))
    relay = OutboxRelay(bus, counting, settle=0.0, hold=0.05)
    job = await counting.get("job-still")
    assert job is not None
    await relay.flush(job, hold=True)

    await asyncio.sleep(0.06)
    assert await relay.sweep() == 0

    job = await counting.get("job-still")
    assert job is not None and job.outbox == []
    assert counting.pops == 1 and relay.take("job-still") == []


async def test_a_closing_relay_pops_what_it_holds(bus: MemoryBus, counting: CountingStore) -> None:
    await pending_request(counting, "job-closing", "local")
    await bus.subscribe(Subscription("executor.local", ["run.requested.local"], _ignore))
    relay = OutboxRelay(bus, counting, hold=60.0)
    job = await counting.get("job-closing")
    assert job is not None
    await relay.flush(job, hold=True)

    await relay.close()

    job = await counting.get("job-closing")
    assert job is not None and job.outbox == [] and counting.pops == 1


async def test_a_job_to_succeeded_costs_the_scheduler_no_pop_of_its_own(
    bus: MemoryBus, counting: CountingStore, settings: Settings
) -> None:
    """Each request the scheduler publishes is popped by the job's next transition (the
    RunStarted's, the ScoreCompleted's), not by a write of its own."""
    executor, scorer, observer = FakeExecutor(bus), FakeScorer(bus), Observer(bus)
    await executor.subscribe("executor.local")
    await scorer.subscribe("scorer.requests")
    await observer.subscribe("observer")
    scheduler = create_scheduler(settings, bus, counting)
    await scheduler.start()
    try:
        await bus.publish(submitted("job-rides"))

        async def done() -> bool:
            job = await counting.get("job-rides")
            return job is not None and job.status is S.SUCCEEDED

        await eventually_async(done)
    finally:
        await scheduler.close()
    job = await counting.get("job-rides")
    assert job is not None and job.outbox == []
    assert counting.pops == 0
    assert len(executor.requests) == 1 and len(scorer.requests) == 1


def test_a_held_entry_is_popped_before_another_replica_would_take_it_as_left_behind() -> None:
    """Held at most the hold plus one sweep interval, a second under the settle time; a sweep
    interval too long for that holds nothing."""
    assert relay_hold(0.1) == RELAY_HOLD_S
    assert relay_hold(2.0) + 2.0 <= RELAY_SETTLE_S - 1.0
    assert relay_hold(4.0) == 0.0 and relay_hold(30.0) == 0.0
