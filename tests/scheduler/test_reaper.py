"""Every active state has an owner and a deadline (issue 7, class 2): the reaper moves a job
nobody moved on in time, so each accepted job reaches exactly one terminal state with one
terminal event. Memory bus + SQLite store, deadlines of a fraction of a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.scheduler.context import Context
from services.scheduler.deadlines import Deadlines
from services.scheduler.main import create_scheduler
from services.scheduler.reaper import reap
from services.scheduler.routing import Router
from services.scheduler.service import Scheduler
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.errors import ErrorCode, Stage
from shared.events import (
    Event,
    JobFailed,
    JobSubmitted,
    RunCompleted,
    ScoreCompleted,
    derived_event_id,
)
from shared.jobs import TERMINAL_STATES, Job, JobStatus, new_job
from shared.models import ContainerSpec, JobSpec, Result, RunOutcome
from shared.outbox import OutboxRelay
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.fakes import Observer, eventually
from tests.scheduler.rig import Rig, reaper_settings, submitted

S = JobStatus


@pytest.fixture
def settings() -> Settings:
    return reaper_settings()


def terminal_moves(job: Job) -> list[JobStatus]:
    return [h.status for h in job.history if h.status in TERMINAL_STATES]


async def settle() -> None:
    """Long enough for several reaper rounds and every delivery in flight."""
    await asyncio.sleep(0.5)


async def test_a_job_wedged_in_scoring_is_reaped_to_one_terminal_state(rig: Rig) -> None:
    rig.scorer.silent = True  # ScoreCompleted never arrives
    await rig.bus.publish(submitted("job-wedged"))

    job = await rig.wait_status("job-wedged", S.FAILED)
    await settle()

    assert job.error is not None
    assert (job.error.code, job.error.stage) == (ErrorCode.DEADLINE_EXCEEDED, Stage.SCORING)
    first, again = rig.scorer.requests  # sent once more (the same request), then given up
    assert first.event_id == again.event_id
    assert len(rig.observer.of_type(JobFailed, "job-wedged")) == 1
    late = ScoreCompleted(
        event_id=derived_event_id(first.event_id, "score.completed"),
        job_id="job-wedged",
        result=Result(summary={"accuracy": 1.0}),
        scorer="classification",
        scorer_version="1",
    )
    await rig.bus.publish(late)
    await eventually(lambda: rig.observer.of_type(ScoreCompleted, "job-wedged"))
    await settle()
    job = await rig.job("job-wedged")
    assert job.status is S.FAILED and terminal_moves(job) == [S.FAILED]
    assert len(rig.observer.of_type(JobFailed, "job-wedged")) == 1


async def test_a_dead_lettered_score_completed_leaves_the_job_to_the_reaper(
    rig: Rig, bus: MemoryBus
) -> None:
    rig.scorer.silent = True
    await rig.bus.publish(submitted("job-poison"))
    await eventually(lambda: rig.scorer.requests)
    body = b'{"type": "score.completed", "event_id": "8c4f2a1e-0d5e-4a57-9f7e-1b2c3d4e5f60", '
    body += b'"occurred_at": "2026-01-01T00:00:00Z", "job_id": "job-poison", "result": {}}'
    await bus.publish_raw("score.completed", body)  # no scorer: refused, dead-lettered

    job = await rig.wait_status("job-poison", S.FAILED)
    await settle()

    assert job.error is not None and job.error.code is ErrorCode.DEADLINE_EXCEEDED
    queue = rig.scheduler.settings.queue
    assert [d.error.code for d in bus.dead_letters if d.queue == queue and d.error] == [
        ErrorCode.BAD_FORMAT
    ]
    assert len(rig.observer.of_type(JobFailed, "job-poison")) == 1


async def test_a_lost_run_request_is_sent_again_then_the_job_fails(rig: Rig) -> None:
    rig.executor.plans = {1: "drop"}
    await rig.bus.publish(submitted("job-lost"))

    job = await rig.wait_status("job-lost", S.FAILED)
    await settle()

    assert job.error is not None
    assert (job.error.code, job.error.stage) == (ErrorCode.DEADLINE_EXCEEDED, Stage.EXECUTION)
    first, again = rig.executor.requests
    assert (first.event_id, first.attempt) == (again.event_id, again.attempt)
    assert [h.status for h in job.history] == [S.SUBMITTED, S.QUEUED, S.QUEUED, S.FAILED]
    assert len(rig.observer.of_type(JobFailed, "job-lost")) == 1


async def test_a_run_past_its_deadline_is_retried_as_the_next_attempt(rig: Rig) -> None:
    rig.executor.plans = {1: "hang"}  # keeps a 30 s lease; the deadline is 1 s + 0.2 s
    spec = JobSpec(
        job_id="job-hung", scorer="classification", time_limit=1, container=ContainerSpec(image="p")
    )
    event = JobSubmitted(job_id="job-hung", spec=spec, workspace="/ws/hung", submitter="alice")
    await rig.bus.publish(event)

    job = await rig.wait_status("job-hung", S.SUCCEEDED)

    lost, ran = job.attempts.records
    assert lost.platform_failure and lost.outcome_code == ErrorCode.DEADLINE_EXCEEDED.value
    assert ran.outcome_code == "succeeded"
    assert [r.attempt for r in rig.executor.requests] == [1, 2]


async def test_a_job_whose_job_submitted_was_lost_is_queued_by_the_reaper(rig: Rig) -> None:
    event = submitted("job-quiet")
    job = new_job(event.spec, workspace=event.workspace, submitted_wait=timedelta(seconds=0.1))
    await rig.store.create(job)  # the gateway stored it; its JobSubmitted never came

    done = await rig.wait_status("job-quiet", S.SUCCEEDED)

    assert "deadline" in (done.history[1].event_id or "")
    assert [r.attempt for r in rig.executor.requests] == [1]


# --- races: compare-and-set picks one terminal state ------------------------------------------


@pytest.fixture
async def quiet(
    bus: MemoryBus, store: SqliteJobStore
) -> AsyncIterator[tuple[Scheduler, Context, Observer]]:
    """A scheduler whose reaper does not run on its own; the test reaps with ``reap``."""
    settings = reaper_settings(reaper_interval_s=3600.0, deadline_resends=0)
    observer = Observer(bus)
    await observer.subscribe("observer")
    await bus.subscribe(Subscription("sink", ["run.requested.*", "score.requested"], _drop))
    scheduler = create_scheduler(settings, bus, store)
    await scheduler.start()
    section = settings.scheduler
    ctx = Context(
        section,
        store,
        OutboxRelay(bus, store),
        Router.from_settings(section),
        Deadlines.from_settings(settings),
    )
    yield scheduler, ctx, observer
    await scheduler.close()


async def _drop(event: Event) -> None:
    del event


async def scoring_job(scheduler: Scheduler, store: SqliteJobStore, job_id: str) -> Job:
    from tests.scheduler.test_event_ids import completed, started

    for event in (submitted(job_id), started(job_id), completed(job_id)):
        await scheduler.handle(event)
    job = await store.get(job_id)
    assert job is not None and job.status is S.SCORING
    return job


def score(job_id: str) -> ScoreCompleted:
    result = Result(summary={"accuracy": 0.5})
    return ScoreCompleted(job_id=job_id, result=result, scorer="classification", scorer_version="1")


async def test_a_late_score_after_the_reaper_failed_the_job_changes_nothing(
    quiet: tuple[Scheduler, Context, Observer], store: SqliteJobStore
) -> None:
    scheduler, ctx, observer = quiet
    stale = await scoring_job(scheduler, store, "job-reaped")

    assert (await reap(ctx, stale)).applied
    await scheduler.handle(score("job-reaped"))

    job = await store.get("job-reaped")
    assert job is not None and terminal_moves(job) == [S.FAILED]
    await eventually(lambda: observer.of_type(JobFailed, "job-reaped"))
    assert len(observer.of_type(JobFailed, "job-reaped")) == 1


async def test_the_reaper_acting_on_a_stale_read_after_the_score_changes_nothing(
    quiet: tuple[Scheduler, Context, Observer], store: SqliteJobStore
) -> None:
    scheduler, ctx, observer = quiet
    stale = await scoring_job(scheduler, store, "job-scored")

    await scheduler.handle(score("job-scored"))
    assert not (await reap(ctx, stale)).applied

    job = await store.get("job-scored")
    assert job is not None and terminal_moves(job) == [S.SUCCEEDED]
    await asyncio.sleep(0.2)
    assert observer.of_type(JobFailed, "job-scored") == []


@pytest.mark.parametrize("rounds", range(5))
async def test_reaper_completion_and_a_second_reaper_racing_end_in_one_terminal_state(
    quiet: tuple[Scheduler, Context, Observer], store: SqliteJobStore, rounds: int
) -> None:
    scheduler, ctx, observer = quiet
    job_id = f"job-race-{rounds}"
    stale = await scoring_job(scheduler, store, job_id)

    await asyncio.gather(scheduler.handle(score(job_id)), reap(ctx, stale), reap(ctx, stale))

    job = await store.get(job_id)
    assert job is not None and len(terminal_moves(job)) == 1
    await asyncio.sleep(0.2)
    failed = observer.of_type(JobFailed, job_id)
    assert len(failed) == (1 if job.status is S.FAILED else 0)


async def test_a_reaper_acting_on_an_old_read_leaves_the_next_attempt_alone(
    quiet: tuple[Scheduler, Context, Observer], store: SqliteJobStore
) -> None:
    from tests.scheduler.fakes import platform_error
    from tests.scheduler.test_event_ids import started

    scheduler, ctx, observer = quiet
    await scheduler.handle(submitted("job-cycle"))
    stale = await store.get("job-cycle")  # queued, attempt 1 pending
    assert stale is not None
    lost = RunOutcome(
        job_id="job-cycle", backend="local", status="failed", error=platform_error().to_info()
    )
    await scheduler.handle(started("job-cycle"))
    await scheduler.handle(RunCompleted(job_id="job-cycle", outcome=lost))  # retried: attempt 2

    assert not (await reap(ctx, stale)).applied

    job = await store.get("job-cycle")
    assert job is not None and job.status is S.QUEUED and job.attempts.count == 1
    assert observer.of_type(JobFailed, "job-cycle") == []


async def test_a_request_still_in_the_outbox_is_not_added_twice(
    bus: MemoryBus, store: SqliteJobStore
) -> None:
    """A request nobody can take yet (no executor bound) stays in the outbox; re-sending it only
    pushes the deadline on, without a second copy of the entry."""
    from services.scheduler.intake import run_request

    settings = reaper_settings()
    section = settings.scheduler
    ctx = Context(
        section,
        store,
        OutboxRelay(bus, store),
        Router.from_settings(section),
        Deadlines.from_settings(settings),
    )
    event = submitted("job-unbound")
    job = (await store.create(new_job(event.spec, workspace=event.workspace))).job
    request = run_request(ctx, job, attempt=1)
    queued = await ctx.move(job, S.SUBMITTED, S.QUEUED, emit=[request])  # unroutable: kept
    assert len(queued.job.outbox) == 1
    await asyncio.sleep(0.01)  # a later deadline, to the millisecond

    resent = await reap(ctx, queued.job)

    assert resent.applied and resent.job.status is S.QUEUED
    assert [e.event_id for e in resent.job.outbox] == [str(request.event_id)]
    assert resent.job.deadline_at is not None and queued.job.deadline_at is not None
    assert resent.job.deadline_at > queued.job.deadline_at
