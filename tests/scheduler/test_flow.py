"""The job's path through the scheduler on the in-memory bus and SQLite, with fake services."""

from __future__ import annotations

from shared.errors import ErrorCode
from shared.events import (
    CancelRequested,
    JobCancelled,
    JobFailed,
    RescoreRequested,
    RunCompleted,
    ScoreCompleted,
)
from shared.jobs import Job, JobStatus
from shared.models import RunOutcome
from tests.scheduler.fakes import eventually
from tests.scheduler.rig import Rig, submitted

S = JobStatus


def path_of(job: Job) -> list[JobStatus]:
    return [change.status for change in job.history]


async def test_a_job_goes_from_submitted_to_succeeded(rig: Rig) -> None:
    await rig.bus.publish(submitted("job-ok"))

    job = await rig.wait_status("job-ok", S.SUCCEEDED)

    assert path_of(job) == [S.SUBMITTED, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED]
    assert job.result is not None and job.result.summary == {"accuracy": 0.75}
    assert job.run_outcome is not None and job.run_outcome.status == "succeeded"
    assert job.attempts.count == 1
    assert job.attempts.records[0].outcome_code == "succeeded"
    assert job.lease is None
    assert job.outbox == []
    assert [r.backend for r in rig.executor.requests] == ["local"]
    await eventually(lambda: rig.observer.of_type(ScoreCompleted, "job-ok"))


async def test_every_event_delivered_twice_moves_the_job_once(rig: Rig) -> None:
    rig.executor.duplicate = rig.scorer.duplicate = True
    event = submitted("job-dup")
    await rig.bus.publish(event)
    await rig.bus.publish(event)

    job = await rig.wait_status("job-dup", S.SUCCEEDED)
    await eventually(lambda: len(rig.observer.of_type(ScoreCompleted, "job-dup")) == 2)

    job = await rig.job("job-dup")
    assert path_of(job) == [S.SUBMITTED, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED]
    assert len(rig.executor.requests) == 1
    assert len(rig.scorer.requests) == 1
    assert job.attempts.count == 1


async def test_a_gateway_created_job_is_picked_up_not_duplicated(rig: Rig) -> None:
    from shared.jobs import new_job

    event = submitted("job-gw")
    await rig.store.create(new_job(event.spec, workspace=event.workspace, submitter="alice"))
    await rig.bus.publish(event)

    job = await rig.wait_status("job-gw", S.SUCCEEDED)

    assert path_of(job)[:2] == [S.SUBMITTED, S.QUEUED]


async def test_a_retryable_platform_failure_requeues_the_run(rig: Rig) -> None:
    rig.executor.plans = {1: "platform_error"}
    await rig.bus.publish(submitted("job-retry"))

    job = await rig.wait_status("job-retry", S.SUCCEEDED)

    assert path_of(job) == [
        S.SUBMITTED, S.QUEUED, S.RUNNING, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED,
    ]  # fmt: skip
    assert [r.attempt for r in rig.executor.requests] == [1, 2]
    first, second = job.attempts.records
    assert first.platform_failure and first.outcome_code == "CONTAINER_CREATE_FAILED"
    assert not second.platform_failure and second.outcome_code == "succeeded"


async def test_platform_failures_stop_after_max_attempts_with_exec_error(rig: Rig) -> None:
    rig.executor.plans = {1: "platform_error", 2: "platform_error", 3: "platform_error"}
    await rig.bus.publish(submitted("job-flaky"))

    job = await rig.wait_status("job-flaky", S.FAILED)

    assert job.error is not None and job.error.code is ErrorCode.EXEC_ERROR
    assert job.error.details["last_error"] == "CONTAINER_CREATE_FAILED"
    assert [r.attempt for r in rig.executor.requests] == [1, 2, 3]
    assert all(r.platform_failure for r in job.attempts.records)
    await eventually(lambda: rig.observer.of_type(JobFailed, "job-flaky"))


async def test_a_participant_failure_fails_the_job_at_once(rig: Rig) -> None:
    rig.executor.plans = {1: "participant_error"}
    await rig.bus.publish(submitted("job-oom"))

    job = await rig.wait_status("job-oom", S.FAILED)

    assert job.error is not None and job.error.code is ErrorCode.CONTAINER_OOM
    assert len(rig.executor.requests) == 1
    assert not job.attempts.records[0].platform_failure
    await eventually(lambda: rig.observer.of_type(JobFailed, "job-oom"))
    failed = rig.observer.of_type(JobFailed, "job-oom")[0]
    assert isinstance(failed, JobFailed) and failed.attempt == 1


async def test_an_expired_lease_requeues_then_fails_with_exec_error(rig: Rig) -> None:
    rig.executor.plans = {1: "vanish", 2: "vanish", 3: "vanish"}
    await rig.bus.publish(submitted("job-lost"))

    job = await rig.wait_status("job-lost", S.FAILED)

    assert [r.attempt for r in rig.executor.requests] == [1, 2, 3]
    assert job.error is not None and job.error.code is ErrorCode.EXEC_ERROR
    assert "lease expired" in job.error.message
    assert [r.platform_failure for r in job.attempts.records] == [True, True, True]
    assert path_of(job).count(S.RUNNING) == 3
    assert job.lease is None


async def test_a_lost_executor_is_replaced_and_the_job_still_succeeds(rig: Rig) -> None:
    rig.executor.plans = {1: "vanish"}
    await rig.bus.publish(submitted("job-revived"))

    job = await rig.wait_status("job-revived", S.SUCCEEDED)

    assert [r.platform_failure for r in job.attempts.records] == [True, False]


async def test_heartbeats_keep_a_running_job_leased(rig: Rig) -> None:
    from shared.events import RunHeartbeat

    rig.executor.plans = {1: "vanish"}
    rig.executor.vanish_ttl_s = 1.0
    await rig.bus.publish(submitted("job-beat"))
    await rig.wait_status("job-beat", S.RUNNING)
    for _ in range(15):  # 2.25 s: more than twice the lease
        beat = RunHeartbeat(
            job_id="job-beat", backend="local", attempt=1, instance="fake-executor-1",
            lease_ttl_s=1.0,
        )  # fmt: skip
        await rig.bus.publish(beat)
        await _sleep(0.15)

    job = await rig.job("job-beat")
    assert job.status is S.RUNNING and job.attempts.count == 1


async def test_cancel_stops_an_active_job_and_later_events_change_nothing(rig: Rig) -> None:
    rig.executor.plans = {1: "vanish"}
    rig.executor.vanish_ttl_s = 30.0
    await rig.bus.publish(submitted("job-cancel"))
    await rig.wait_status("job-cancel", S.RUNNING)

    cancel = CancelRequested(job_id="job-cancel", requested_by="alice", reason="wrong file")
    await rig.bus.publish(cancel)
    await rig.bus.publish(cancel)
    job = await rig.wait_status("job-cancel", S.CANCELLED)
    late = RunCompleted(
        job_id="job-cancel",
        outcome=RunOutcome(job_id="job-cancel", backend="local", status="succeeded"),
    )
    await rig.bus.publish(late)
    await eventually(lambda: rig.observer.of_type(JobCancelled, "job-cancel"))
    await _sleep(0.2)

    job = await rig.job("job-cancel")
    assert job.status is S.CANCELLED and job.lease is None
    assert path_of(job).count(S.CANCELLED) == 1
    cancelled = rig.observer.of_type(JobCancelled, "job-cancel")
    assert len(cancelled) == 1
    assert isinstance(cancelled[0], JobCancelled) and cancelled[0].stage == "execution"


async def test_rescore_sends_a_finished_job_back_to_the_scorer(rig: Rig) -> None:
    await rig.bus.publish(submitted("job-rescore"))
    await rig.wait_status("job-rescore", S.SUCCEEDED)

    rig.scorer.fail = True
    request = RescoreRequested(job_id="job-rescore", requested_by="organiser", reason="new gt")
    await rig.bus.publish(request)
    await rig.bus.publish(request)
    job = await rig.wait_status("job-rescore", S.FAILED)
    assert job.error is not None and job.error.code is ErrorCode.MISMATCH

    rig.scorer.fail = False
    done = await rig.scheduler.request_rescore("job-rescore", reason="scorer fixed")
    assert done.applied
    job = await rig.wait_status("job-rescore", S.SUCCEEDED)

    assert job.error is None
    assert [r.attempt for r in rig.scorer.requests] == [1, 2, 3]
    assert path_of(job)[-4:] == [S.SCORING, S.FAILED, S.SCORING, S.SUCCEEDED]


async def test_a_job_whose_run_failed_cannot_be_rescored(rig: Rig) -> None:
    rig.executor.plans = {1: "participant_error"}
    await rig.bus.publish(submitted("job-norescore"))
    await rig.wait_status("job-norescore", S.FAILED)

    done = await rig.scheduler.request_rescore("job-norescore")

    assert not done.applied
    assert (await rig.job("job-norescore")).status is S.FAILED


async def test_a_score_only_job_waits_for_the_platform_run(rig: Rig) -> None:
    await rig.bus.publish(submitted("job-scoreonly", container=False))
    job = await rig.wait_status("job-scoreonly", S.QUEUED)
    assert rig.executor.requests == []

    ran = RunCompleted(
        job_id="job-scoreonly",
        outcome=RunOutcome(job_id="job-scoreonly", backend="platform", status="succeeded"),
        workspace="/ws/job-scoreonly-output",
    )
    await rig.bus.publish(ran)
    await rig.bus.publish(ran)
    job = await rig.wait_status("job-scoreonly", S.SUCCEEDED)

    assert path_of(job) == [S.SUBMITTED, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED]
    assert [r.workspace for r in rig.scorer.requests] == ["/ws/job-scoreonly-output"]
    assert job.attempts.records[0].backend == "platform"
    assert job.attempts.records[0].outcome_code == "succeeded"
    running, scoring = job.history[2], job.history[3]
    assert running.at == scoring.at  # one update: queued -> running -> scoring
    assert {running.event_id, scoring.event_id} <= set(job.processed_event_ids)


async def test_a_run_completed_before_its_job_is_known_is_retried(rig: Rig) -> None:
    ran = RunCompleted(
        job_id="job-early",
        outcome=RunOutcome(job_id="job-early", backend="platform", status="succeeded"),
    )
    await rig.bus.publish(ran)
    await _sleep(0.1)
    await rig.bus.publish(submitted("job-early", container=False))

    job = await rig.wait_status("job-early", S.SUCCEEDED, timeout=15)

    assert path_of(job)[-2:] == [S.SCORING, S.SUCCEEDED]


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_a_run_executed_twice_by_two_replicas_moves_the_job_once(rig: Rig) -> None:
    from tests.scheduler.fakes import FakeExecutor

    twin = FakeExecutor(rig.bus, plans={1: "platform_error"})
    rig.executor.plans = {1: "platform_error"}
    await twin.subscribe("executor.local.twin")
    await rig.bus.publish(submitted("job-twin"))

    job = await rig.wait_status("job-twin", S.SUCCEEDED)

    assert job.attempts.count == 2
    assert path_of(job) == [
        S.SUBMITTED, S.QUEUED, S.RUNNING, S.QUEUED, S.RUNNING, S.SCORING, S.SUCCEEDED,
    ]  # fmt: skip


async def test_a_platform_jobs_callback_url_is_kept_for_the_final_event(rig: Rig) -> None:
    event = submitted("job-cb").model_copy(update={"callback_url": "https://platform.example/cb"})
    await rig.bus.publish(event)
    job = await rig.wait_status("job-cb", S.SUCCEEDED)
    assert job.callback_url == "https://platform.example/cb"
