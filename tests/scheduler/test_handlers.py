"""Handlers called directly, without a bus pump: repeats, stale attempts, early events, junk."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.scheduler.main import create_scheduler
from services.scheduler.service import Scheduler
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import (
    CancelRequested,
    Event,
    RunCompleted,
    RunHeartbeat,
    RunStarted,
    ScoreCompleted,
)
from shared.jobs import Job, JobStatus
from shared.models import Result, RunOutcome
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.fakes import eventually
from tests.scheduler.rig import submitted

S = JobStatus


@pytest.fixture
async def scheduler(
    bus: MemoryBus, store: SqliteJobStore, settings: Settings
) -> AsyncIterator[Scheduler]:
    """A scheduler whose handlers the test calls; its queue is served, but nothing publishes
    to it. Run requests and notifications land in a sink so they are routable."""
    await bus.subscribe(
        Subscription("sink", ["run.requested.*", "score.requested", "job.*"], _drop)
    )
    made = create_scheduler(settings, bus, store)
    await made.start()
    yield made
    await made.close()


async def _drop(event: Event) -> None:
    del event


def started(job_id: str, attempt: int = 1) -> RunStarted:
    return RunStarted(job_id=job_id, backend="local", attempt=attempt, instance="exec-1")


def completed(job_id: str, attempt: int = 1, *, ok: bool = True) -> RunCompleted:
    error = AutoscorerError(ErrorCode.TIMEOUT_ERROR, "too slow", stage=Stage.EXECUTION)
    outcome = RunOutcome(
        job_id=job_id,
        backend="local",
        status="succeeded" if ok else "failed",
        error=None if ok else error.to_info(),
    )
    return RunCompleted(job_id=job_id, outcome=outcome, attempt=attempt)


async def get(store: SqliteJobStore, job_id: str) -> Job:
    job = await store.get(job_id)
    assert job is not None
    return job


async def test_each_event_handled_twice_changes_the_job_once(
    scheduler: Scheduler, store: SqliteJobStore
) -> None:
    events: list[Event] = [
        submitted("job-twice"),
        started("job-twice"),
        completed("job-twice"),
        ScoreCompleted(
            job_id="job-twice", result=Result(summary={"f1": 1.0}), scorer="f1", scorer_version="1"
        ),
    ]
    for event in events:
        await scheduler.handle(event)
        before = await get(store, "job-twice")
        await scheduler.handle(event)
        after = await get(store, "job-twice")
        assert after.history == before.history
        assert after.updated_at == before.updated_at

    assert (await get(store, "job-twice")).status is S.SUCCEEDED


async def test_a_cancel_handled_twice_cancels_once(
    scheduler: Scheduler, store: SqliteJobStore
) -> None:
    await scheduler.handle(submitted("job-c2"))
    cancel = CancelRequested(job_id="job-c2", requested_by="alice")

    await scheduler.handle(cancel)
    await scheduler.handle(cancel)

    job = await get(store, "job-c2")
    assert [h.status for h in job.history] == [S.SUBMITTED, S.QUEUED, S.CANCELLED]


async def test_events_of_a_superseded_attempt_are_ignored(
    scheduler: Scheduler, store: SqliteJobStore
) -> None:
    await scheduler.handle(submitted("job-stale"))
    await scheduler.handle(started("job-stale", attempt=1))
    await scheduler.handle(completed("job-stale", attempt=2))  # from the future: ignored
    assert (await get(store, "job-stale")).status is S.RUNNING

    await scheduler.handle(started("job-stale", attempt=1))  # a second start, new event id
    await scheduler.handle(completed("job-stale", attempt=1, ok=False))

    job = await get(store, "job-stale")
    assert job.status is S.FAILED
    assert job.error is not None and job.error.code is ErrorCode.TIMEOUT_ERROR
    assert job.attempts.count == 1


async def test_a_run_completed_for_an_unknown_job_is_a_retryable_error(
    scheduler: Scheduler,
) -> None:
    with pytest.raises(AutoscorerError) as raised:
        await scheduler.handle(completed("job-nobody"))

    assert raised.value.retryable
    assert raised.value.details["reason"] == "not_ready"


async def test_a_run_started_overtaking_its_job_submitted_is_retryable(
    scheduler: Scheduler, store: SqliteJobStore
) -> None:
    from shared.jobs import new_job

    event = submitted("job-gwonly")
    await store.create(new_job(event.spec, workspace=event.workspace))  # gateway did this

    with pytest.raises(AutoscorerError) as raised:
        await scheduler.handle(started("job-gwonly"))

    assert raised.value.retryable


async def test_a_heartbeat_renews_only_its_own_lease(
    scheduler: Scheduler, store: SqliteJobStore
) -> None:
    await scheduler.handle(submitted("job-hb"))
    await scheduler.handle(started("job-hb"))
    lease = (await get(store, "job-hb")).lease
    assert lease is not None and lease.owner == "exec-1"

    beat = RunHeartbeat(
        job_id="job-hb", backend="local", attempt=1, instance="exec-1", lease_ttl_s=600
    )
    await scheduler.handle(beat)
    renewed = (await get(store, "job-hb")).lease
    assert renewed is not None and renewed.expires_at > lease.expires_at

    other = RunHeartbeat(
        job_id="job-hb", backend="local", attempt=1, instance="exec-2", lease_ttl_s=6000
    )
    await scheduler.handle(other)
    await scheduler.handle(RunHeartbeat(job_id="job-x", backend="local", instance="exec-1"))
    assert (await get(store, "job-hb")).lease == renewed


async def test_junk_on_the_scheduler_queue_is_dead_lettered(
    scheduler: Scheduler, bus: MemoryBus
) -> None:
    await bus.publish_raw("job.submitted", b"{not json")

    queue = scheduler.settings.queue
    await eventually(lambda: [d for d in bus.dead_letters if d.queue == queue])

    letter = next(d for d in bus.dead_letters if d.queue == queue)
    assert letter.error is not None and letter.error.code is ErrorCode.PARSE_ERROR


async def test_a_decision_made_on_a_stale_read_changes_nothing(
    scheduler: Scheduler, bus: MemoryBus, store: SqliteJobStore, settings: Settings
) -> None:
    """A second ``RunCompleted`` (or the lease monitor) that read the job before the first one
    ended the attempt must not end it again once the next attempt runs."""
    from services.scheduler.context import Context
    from services.scheduler.retries import retry_or_fail
    from services.scheduler.routing import Router
    from shared.outbox import OutboxRelay

    ctx = Context(
        settings.scheduler, store, OutboxRelay(bus, store), Router.from_settings(settings.scheduler)
    )
    await scheduler.handle(submitted("job-race"))
    await scheduler.handle(started("job-race", attempt=1))
    stale = await get(store, "job-race")
    error = AutoscorerError(ErrorCode.EXEC_ERROR, "lost", stage=Stage.EXECUTION).to_info()
    assert (await retry_or_fail(ctx, stale, error)).applied
    await scheduler.handle(started("job-race", attempt=2))

    again = await retry_or_fail(ctx, stale, error)

    assert not again.applied
    job = await get(store, "job-race")
    assert job.status is S.RUNNING and job.attempts.count == 2


async def test_a_replica_running_a_handed_back_attempt_takes_the_lease_once_it_expired(
    bus: MemoryBus, store: SqliteJobStore, settings: Settings
) -> None:
    import asyncio

    await bus.subscribe(
        Subscription("sink", ["run.requested.*", "score.requested", "job.*"], _drop)
    )
    scheduler = create_scheduler(settings, bus, store)  # not started: no lease monitor
    await scheduler.handle(submitted("job-handover"))
    first = RunStarted(job_id="job-handover", backend="local", instance="exec-1", lease_ttl_s=0.3)
    await scheduler.handle(first)

    def beat(instance: str) -> RunHeartbeat:
        return RunHeartbeat(
            job_id="job-handover", backend="local", instance=instance, lease_ttl_s=60
        )

    await scheduler.handle(beat("exec-2"))
    lease = (await get(store, "job-handover")).lease
    assert lease is not None and lease.owner == "exec-1"

    await asyncio.sleep(0.4)
    await scheduler.handle(beat("exec-2"))
    await scheduler.handle(beat("exec-1"))
    lease = (await get(store, "job-handover")).lease
    assert lease is not None and lease.owner == "exec-2"

    await scheduler.handle(completed("job-handover"))
    assert (await get(store, "job-handover")).status is S.SCORING


async def test_a_run_the_executor_stopped_on_a_cancel_it_heard_first_ends_cancelled(
    bus: MemoryBus, scheduler: Scheduler, store: SqliteJobStore
) -> None:
    """Executors hear ``CancelRequested`` on their own queue: one may refuse or stop the run,
    and its ``RunCompleted`` (CANCELLED) reach this scheduler before the request does. The job
    is cancelled then, not failed, with one ``JobCancelled``; the request coming later changes
    nothing. (Seen as a ``failed`` job in the fault suite's cancel race.)"""
    from shared.events import CancelRequested, JobCancelled

    told: list[Event] = []

    async def tell(event: Event) -> None:
        told.append(event)

    await bus.subscribe(Subscription("told", ["job.cancelled", "job.failed"], tell))
    error = AutoscorerError(
        ErrorCode.CANCELLED, "the job was cancelled before it ran", stage=Stage.EXECUTION
    )
    refused = RunCompleted(
        job_id="job-raced",
        attempt=1,
        outcome=RunOutcome(
            job_id="job-raced", backend="local", status="cancelled", error=error.to_info()
        ),
    )
    await scheduler.handle(submitted("job-raced"))
    await scheduler.handle(refused)
    await scheduler.handle(CancelRequested(job_id="job-raced", requested_by="alice"))

    job = await get(store, "job-raced")
    assert job.status is S.CANCELLED
    assert [h.status for h in job.history][-1] is S.CANCELLED
    await eventually(lambda: told)
    assert [type(e) for e in told] == [JobCancelled]
