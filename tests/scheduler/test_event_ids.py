"""Every event the scheduler emits has an id derived from its cause (issue 7, class 3).

A duplicate delivery of each event the scheduler consumes has one effect and emits nothing new;
deciding a step again yields the same event; and a replay after a crash between publishing an
outbox entry and popping it publishes the same event again, so the scorer's answer to it is a
duplicate too. Memory bus + SQLite store (real implementations of both seams).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.context import attempt_cause, scoring_cause
from services.scheduler.main import create_scheduler
from services.scheduler.service import Scheduler
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import (
    CancelRequested,
    Event,
    JobCancelled,
    JobFailed,
    RescoreRequested,
    RunCompleted,
    RunRequested,
    RunStarted,
    ScoreCompleted,
    ScoreRequested,
    derived_event_id,
)
from shared.jobs import Job, JobStatus
from shared.models import Result, RunOutcome
from shared.outbox import outbox_entry
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.fakes import FakeExecutor, FakeScorer, Observer, eventually
from tests.scheduler.rig import eventually_async, submitted

S = JobStatus
EMITTED = ["run.requested.*", "score.requested", "job.failed", "job.cancelled"]


@dataclass
class Tap:
    """Every event the scheduler publishes, in order."""

    seen: list[Event] = field(default_factory=list)

    async def __call__(self, event: Event) -> None:
        self.seen.append(event)

    def ids(self) -> Counter[uuid.UUID]:
        return Counter(e.event_id for e in self.seen)

    def types(self) -> Counter[str]:
        return Counter(e.type for e in self.seen)


@pytest.fixture
async def tap(bus: MemoryBus) -> Tap:
    tapped = Tap()
    await bus.subscribe(Subscription("tap", EMITTED, tapped))
    return tapped


@pytest.fixture
async def scheduler(
    bus: MemoryBus, store: SqliteJobStore, settings: Settings, tap: Tap
) -> AsyncIterator[Scheduler]:
    made = create_scheduler(settings, bus, store)
    await made.start()
    yield made
    await made.close()


def started(job_id: str, attempt: int = 1) -> RunStarted:
    return RunStarted(job_id=job_id, backend="local", attempt=attempt, instance="exec-1")


def completed(job_id: str, *, ok: bool = True) -> RunCompleted:
    error = AutoscorerError(ErrorCode.CONTAINER_OOM, "oom", stage=Stage.EXECUTION).to_info()
    outcome = RunOutcome(
        job_id=job_id,
        backend="local",
        status="succeeded" if ok else "failed",
        error=None if ok else error,
    )
    return RunCompleted(job_id=job_id, outcome=outcome)


def scored(job_id: str, *, ok: bool = True) -> ScoreCompleted:
    error = AutoscorerError(ErrorCode.MISMATCH, "ids differ", stage=Stage.SCORING).to_info()
    result = Result(summary={"f1": 0.5}) if ok else Result(error=error)
    return ScoreCompleted(job_id=job_id, result=result, scorer="f1", scorer_version="1")


def path(job_id: str, ending: str) -> list[Event]:
    """The events that take a job to ``ending``."""
    head: list[Event] = [submitted(job_id), started(job_id)]
    match ending:
        case "succeeded":
            return [*head, completed(job_id), scored(job_id)]
        case "run_failed":
            return [*head, completed(job_id, ok=False)]
        case "score_failed":
            return [*head, completed(job_id), scored(job_id, ok=False)]
        case "cancelled":
            return [*head, CancelRequested(job_id=job_id, requested_by="alice")]
        case "rescored":
            again = RescoreRequested(job_id=job_id, requested_by="admin")
            return [*head, completed(job_id), scored(job_id), again, scored(job_id)]
    raise AssertionError(ending)


EXPECTED = {
    "succeeded": {"run.requested": 1, "score.requested": 1},
    "run_failed": {"run.requested": 1, "job.failed": 1},
    "score_failed": {"run.requested": 1, "score.requested": 1, "job.failed": 1},
    "cancelled": {"run.requested": 1, "job.cancelled": 1},
    "rescored": {"run.requested": 1, "score.requested": 2},
}


@pytest.mark.parametrize("ending", sorted(EXPECTED))
async def test_every_event_delivered_twice_has_one_effect_and_emits_once(
    scheduler: Scheduler, store: SqliteJobStore, tap: Tap, ending: str
) -> None:
    job_id = f"job-{ending.replace('_', '-')}"
    for event in path(job_id, ending):
        await scheduler.handle(event)
        before = await store.get(job_id)
        await scheduler.handle(event)  # the redelivery
        assert await store.get(job_id) == before

    await eventually(lambda: sum(tap.types().values()) == sum(EXPECTED[ending].values()))
    assert dict(tap.types()) == EXPECTED[ending]
    assert set(tap.ids().values()) == {1}


async def test_each_emitted_id_is_derived_from_its_cause(
    scheduler: Scheduler, store: SqliteJobStore, tap: Tap
) -> None:
    for event in path("job-ids", "score_failed"):
        await scheduler.handle(event)
    await eventually(lambda: len(tap.seen) == 3)
    job = await store.get("job-ids")
    assert job is not None

    request, scoring, failed = tap.seen
    assert isinstance(request, RunRequested) and isinstance(scoring, ScoreRequested)
    assert isinstance(failed, JobFailed)
    assert request.event_id == derived_event_id(attempt_cause(job, 1), "run.requested")
    assert scoring.event_id == derived_event_id(scoring_cause(job, 1), "score.requested")
    assert failed.event_id == derived_event_id(scoring_cause(job, 1), "job.failed")


async def test_a_cancel_is_one_event_whoever_decides_it(
    scheduler: Scheduler, store: SqliteJobStore, tap: Tap
) -> None:
    await scheduler.handle(submitted("job-cancel"))
    job = await store.get("job-cancel")
    assert job is not None
    for requester in ("alice", "admin"):  # two different requests
        await scheduler.handle(CancelRequested(job_id="job-cancel", requested_by=requester))

    await eventually(lambda: tap.types()["job.cancelled"] == 1)
    [cancelled] = [e for e in tap.seen if isinstance(e, JobCancelled)]
    assert cancelled.event_id == derived_event_id(job.key, "job.cancelled")


async def test_a_job_id_used_again_later_gets_new_event_ids(
    scheduler: Scheduler, store: SqliteJobStore
) -> None:
    """A platform may reuse a job id once the store forgot the job: the ids root in the job's
    creation time, so its new events are not taken for duplicates of the old ones."""
    await scheduler.handle(submitted("job-reused"))
    first = await store.get("job-reused")
    assert first is not None
    other = first.model_copy(update={"created_at": first.created_at.replace(year=2030)})

    assert first.key != other.key
    assert derived_event_id(attempt_cause(first, 1), "run.requested") != derived_event_id(
        attempt_cause(other, 1), "run.requested"
    )


@given(cause=st.uuids() | st.text(max_size=200), kind=st.sampled_from(["a", "b", "job.failed"]))
def test_derived_ids_are_stable_and_differ_by_kind(cause: uuid.UUID | str, kind: str) -> None:
    again = str(cause) if isinstance(cause, uuid.UUID) else cause
    assert derived_event_id(cause, kind) == derived_event_id(again, kind)
    assert derived_event_id(cause, kind) != derived_event_id(cause, kind + ".other")
    assert derived_event_id(cause, kind).version == 5


async def test_a_replay_after_a_crash_before_the_pop_publishes_the_same_events(
    bus: MemoryBus, store: SqliteJobStore, settings: Settings
) -> None:
    """Kill the scheduler right after it published ScoreRequested and before it popped it: the
    entry is still in the job's outbox (the scorer may have answered already). The restarted
    scheduler republishes it with the same event_id, the scorer answers with the same
    ScoreCompleted id, which the platform drops as a duplicate, and the job finished once."""
    before = await _run_until_scored(bus, store, settings)
    [published] = before.scorer.requests
    await store.append_outbox("job-replay", [outbox_entry(published)])  # what the crash left

    restarted = MemoryBus(drain_timeout=2.0)  # the restarted process: a bus of its own
    await restarted.start()
    try:
        after = await _run_until_scored(restarted, store, settings, submit=False)
    finally:
        await restarted.close()

    assert [r.event_id for r in after.scorer.requests] == [published.event_id]
    [first] = before.observer.of_type(ScoreCompleted, "job-replay")
    [again] = after.observer.of_type(ScoreCompleted, "job-replay")
    assert first.event_id == again.event_id
    assert first.event_id == derived_event_id(published.event_id, "score.completed")
    job = await store.get("job-replay")
    assert job is not None and job.outbox == []
    assert [h.status for h in job.history].count(S.SUCCEEDED) == 1


@dataclass
class Services:
    scorer: FakeScorer
    observer: Observer


async def _run_until_scored(
    bus: MemoryBus, store: SqliteJobStore, settings: Settings, *, submit: bool = True
) -> Services:
    executor, scorer, observer = FakeExecutor(bus), FakeScorer(bus), Observer(bus)
    await executor.subscribe("executor.local")
    await scorer.subscribe("scorer.requests")
    await observer.subscribe("observer")
    scheduler = create_scheduler(settings, bus, store)
    await scheduler.start()  # its first sweep relays everything left in outboxes
    try:
        if submit:
            await bus.publish(submitted("job-replay"))
        await eventually(lambda: observer.of_type(ScoreCompleted, "job-replay"))
        await eventually_async(lambda: _finished(store, "job-replay"))
    finally:
        await scheduler.close()
    return Services(scorer, observer)


async def _finished(store: SqliteJobStore, job_id: str) -> bool:
    job: Job | None = await store.get(job_id)
    return job is not None and job.status is S.SUCCEEDED and not job.outbox
