"""Run events: ``RunStarted`` leases the job to an executor instance, ``RunHeartbeat`` renews
the lease, ``RunCompleted`` moves the job on to scoring, back to the queue, or to ``failed``.

Events of one job may arrive in any order (one queue, many consumers, retries), so
``RunCompleted`` also accepts a ``queued`` job whose ``RunStarted`` it overtook, and a score-only
job whose inference a platform ran: it first moves it ``queued -> running`` (the attempt's start),
then ``running -> ...`` (its end), so a redelivery after a crash in between finishes the second
step only. Events of an attempt that is no longer current are ignored.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from services.scheduler.context import Context, end_key, not_ready, start_key
from services.scheduler.retries import attempt_failed, closed_attempt, retry_or_fail
from services.scheduler.scoring import score_request
from shared.errors import ErrorCode, ErrorInfo, Stage, execution_error
from shared.events import JobCancelled, RunCompleted, RunHeartbeat, RunStarted, derived_event_id
from shared.jobs import AttemptRecord, Job, JobStatus, Lease, now_ms
from shared.store import JobNotFoundError, JobUpdate, Step, Transition, TransitionOutcome

log = logging.getLogger(__name__)


def _lease(ctx: Context, owner: str, ttl_s: float | None) -> tuple[Lease, timedelta]:
    ttl = timedelta(seconds=ttl_s or ctx.settings.lease_ttl_s)
    return Lease(owner=owner, expires_at=now_ms() + ttl), ttl


def _next_attempt(job: Job) -> int:
    return job.attempts.count + 1


async def on_run_started(ctx: Context, event: RunStarted) -> None:
    """``queued -> running`` for the attempt being dispatched, leased to ``event.instance``."""
    job = await ctx.known_job(event.job_id)
    if job.status is JobStatus.SUBMITTED:
        raise not_ready(job.job_id, "it is not queued yet")
    if job.status is not JobStatus.QUEUED or event.attempt != _next_attempt(job):
        log.info("ignoring %s of job %s attempt %d", event.type, job.job_id, event.attempt)
        return
    lease, _ = _lease(ctx, event.instance, event.lease_ttl_s)
    record = AttemptRecord(number=event.attempt, backend=event.backend, started_at=now_ms())
    await ctx.move(
        job,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        update=JobUpdate(lease=lease, attempt=record),
        event_id=start_key(job.job_id, event.attempt),
        reason=f"attempt {event.attempt} started on {event.instance}",
    )


async def on_run_heartbeat(ctx: Context, event: RunHeartbeat) -> None:
    """Renew the lease if ``event.instance`` holds it, or take it over once it expired while the
    job still runs this attempt (a replica that picked up a handed-back run); else nothing.

    Heartbeats are not recorded as processed events: renewing twice is harmless, and they would
    crowd the ids that matter out of ``processed_event_ids``.
    """
    _, ttl = _lease(ctx, event.instance, event.lease_ttl_s)
    try:
        held = await ctx.store.renew_lease(event.job_id, event.instance, ttl)
        if held is None:
            held = await _take_over(ctx, event, ttl)
    except JobNotFoundError:
        held = None
    if held is None:
        log.info("heartbeat of job %s from %s renews nothing", event.job_id, event.instance)


async def _take_over(ctx: Context, event: RunHeartbeat, ttl: timedelta) -> Job | None:
    job = await ctx.store.get(event.job_id)
    if job is None or job.status is not JobStatus.RUNNING or job.attempts.count != event.attempt:
        return None
    taken = await ctx.store.acquire_lease(job.job_id, event.instance, ttl)
    if taken is not None and taken.status is not JobStatus.RUNNING:
        # the run completed between the read and the take-over (its RunCompleted moved the job
        # on and dropped the lease): a lease on a job that no longer runs must not stay
        await ctx.store.release_lease(job.job_id, event.instance)
        return None
    if taken is not None:
        log.warning(
            "job %s attempt %d: lease taken over by %s", job.job_id, event.attempt, event.instance
        )
    return taken


async def on_run_completed(ctx: Context, event: RunCompleted) -> None:
    job = await ctx.known_job(event.job_id)
    if job.status is JobStatus.SUBMITTED:
        raise not_ready(job.job_id, "it is not queued yet")
    if job.status is JobStatus.QUEUED and event.attempt == _next_attempt(job):
        if _succeeded(event):
            done = await _to_scoring(ctx, job, event, started=False)
            if done.outcome is not TransitionOutcome.STATE_MISMATCH:
                return
            job = done.job  # its RunStarted was handled meanwhile: go on from there
        else:
            job = await _start_late(ctx, job, event)
    if job.status is not JobStatus.RUNNING or job.attempts.count != event.attempt:
        log.info("ignoring %s of job %s attempt %d", event.type, job.job_id, event.attempt)
        return
    await _finish(ctx, job, event)


def _succeeded(event: RunCompleted) -> bool:
    return event.outcome.status == "succeeded" and event.outcome.error is None


def _why_unseen(job: Job) -> str:
    return "score-only: the platform ran it" if job.spec.container is None else "no RunStarted seen"


def _started_record(event: RunCompleted) -> AttemptRecord:
    outcome = event.outcome
    return AttemptRecord(
        number=event.attempt, backend=outcome.backend, started_at=outcome.started_at or now_ms()
    )


async def _start_late(ctx: Context, job: Job, event: RunCompleted) -> Job:
    """Step one for a run the scheduler has not seen start; the job as it is now (a
    ``RunStarted`` handled meanwhile has done the same step)."""
    done = await ctx.move(
        job,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        update=JobUpdate(attempt=_started_record(event)),
        event_id=start_key(job.job_id, event.attempt),
        reason=f"attempt {event.attempt} completed ({_why_unseen(job)})",
    )
    return done.job


async def _finish(ctx: Context, job: Job, event: RunCompleted) -> None:
    outcome = event.outcome
    if _succeeded(event):
        await _to_scoring(ctx, job, event)
        return
    error = run_error(event)
    if error.code is ErrorCode.CANCELLED:
        await _cancelled_by_executor(ctx, job, event, error)
        return
    if error.retryable:
        await retry_or_fail(ctx, job, error, outcome=outcome)
        return
    await ctx.move(
        job,
        JobStatus.RUNNING,
        JobStatus.FAILED,
        update=JobUpdate(
            run_outcome=outcome,
            error=error,
            lease=None,
            attempt=closed_attempt(job, error.code.value),
        ),
        event_id=end_key(job.job_id, event.attempt),
        reason=f"run failed: {error.code.value}",
        emit=[attempt_failed(job, error, event.attempt)],
    )


async def _cancelled_by_executor(
    ctx: Context, job: Job, event: RunCompleted, error: ErrorInfo
) -> None:
    """The executor heard the ``CancelRequested`` before this scheduler did (each has its own
    queue) and stopped or refused the run: the job is cancelled, not failed. The
    ``JobCancelled`` has the id ``on_cancel_requested`` gives it, so the two cannot both go out."""
    cancelled = JobCancelled(
        event_id=derived_event_id(job.key, "job.cancelled"),
        job_id=job.job_id,
        reason=error.message,
        stage=Stage.EXECUTION,
    )
    await ctx.move(
        job,
        JobStatus.RUNNING,
        JobStatus.CANCELLED,
        update=JobUpdate(
            run_outcome=event.outcome,
            lease=None,
            attempt=closed_attempt(job, error.code.value),
        ),
        event_id=end_key(job.job_id, event.attempt),
        reason=f"cancelled: {error.message}",
        emit=[cancelled],
    )


async def _to_scoring(
    ctx: Context, job: Job, event: RunCompleted, *, started: bool = True
) -> Transition:
    """``running -> scoring`` with the ``ScoreRequested``; for a run not seen to start
    (``started=False``: a score-only job's platform run, or an overtaken ``RunStarted``)
    ``queued -> running -> scoring`` in the same single update, both steps in the history."""
    request = score_request(job, job.scoring_round() + 1, event.workspace)
    through = None
    record = closed_attempt(job, "succeeded")
    if not started:
        reason = f"attempt {event.attempt} completed ({_why_unseen(job)})"
        through = Step(JobStatus.RUNNING, start_key(job.job_id, event.attempt), reason)
        record = _started_record(event).model_copy(
            update={"finished_at": now_ms(), "outcome_code": "succeeded"}
        )
    return await ctx.move(
        job,
        JobStatus.RUNNING if started else JobStatus.QUEUED,
        JobStatus.SCORING,
        update=JobUpdate(run_outcome=event.outcome, lease=None, attempt=record),
        event_id=end_key(job.job_id, event.attempt),
        reason=f"attempt {event.attempt} succeeded",
        emit=[request],
        through=through,
        if_attempts=None if started else event.attempt - 1,
    )


def run_error(event: RunCompleted) -> ErrorInfo:
    """Why the run did not succeed. A run the backend stopped on its own (no cancel asked: a
    cancelled job no longer reaches this point) or that failed without saying why is blamed on
    the platform, so it is retried."""
    outcome = event.outcome
    if outcome.error is not None:
        return outcome.error
    what = "stopped by the backend" if outcome.status == "cancelled" else "failed without an error"
    return execution_error(
        ErrorCode.EXEC_ERROR, f"the run was {what}", backend=outcome.backend
    ).to_info()
