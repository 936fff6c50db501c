"""A run that failed for a platform reason goes back to ``queued``, a bounded number of times.

Each try is an attempt record; a platform failure is marked ``platform_failure`` and is never
held against the participant. When ``max_attempts`` runs have been made the job fails with
``EXEC_ERROR``.
"""

from __future__ import annotations

from services.scheduler.context import Context, attempt_cause, end_key
from services.scheduler.intake import run_request
from shared.errors import ErrorCode, ErrorInfo, execution_error
from shared.events import JobFailed, derived_event_id
from shared.jobs import AttemptRecord, Job, JobStatus, now_ms
from shared.models import RunOutcome
from shared.store import JobUpdate, Transition


def closed_attempt(job: Job, code: str, *, platform_failure: bool = False) -> AttemptRecord:
    """The job's current attempt record, finished now with ``code``."""
    number = max(job.attempts.count, 1)
    known = job.attempts.records[number - 1] if number <= len(job.attempts.records) else None
    record = known or AttemptRecord(number=number, backend="unknown", started_at=now_ms())
    return record.model_copy(
        update={"finished_at": now_ms(), "outcome_code": code, "platform_failure": platform_failure}
    )


async def retry_or_fail(
    ctx: Context,
    job: Job,
    error: ErrorInfo,
    *,
    outcome: RunOutcome | None = None,
) -> Transition:
    """``running -> queued`` with the next ``RunRequested``, or ``running -> failed``."""
    made = job.attempts.count
    event_id = end_key(job.job_id, made)
    closed = closed_attempt(job, error.code.value, platform_failure=True)
    if made >= ctx.settings.max_attempts:
        return await _give_up(ctx, job, error, closed, event_id=event_id, outcome=outcome)
    request = run_request(ctx, job, attempt=made + 1)
    requeued = JobUpdate(lease=None, attempt=closed, backend=request.backend, queued_at=now_ms())
    update = with_outcome(requeued, outcome)
    return await ctx.move(
        job,
        JobStatus.RUNNING,
        JobStatus.QUEUED,
        update=update,
        event_id=event_id,
        reason=f"attempt {made} lost to {error.code.value}; retrying on {request.backend}",
        emit=[request],
    )


async def _give_up(
    ctx: Context,
    job: Job,
    last: ErrorInfo,
    closed: AttemptRecord,
    *,
    event_id: str,
    outcome: RunOutcome | None,
) -> Transition:
    made = job.attempts.count
    error = execution_error(
        ErrorCode.EXEC_ERROR,
        f"gave up after {made} attempt(s) failed for platform reasons; last: {last.message}",
        attempts=made,
        last_error=last.code.value,
    ).to_info()
    return await ctx.move(
        job,
        JobStatus.RUNNING,
        JobStatus.FAILED,
        update=with_outcome(JobUpdate(lease=None, attempt=closed, error=error), outcome),
        event_id=event_id,
        reason=f"{made} attempt(s) failed for platform reasons",
        emit=[attempt_failed(job, error, made)],
    )


def attempt_failed(job: Job, error: ErrorInfo, attempt: int) -> JobFailed:
    """``JobFailed`` for a job that ended with run attempt ``attempt``."""
    event_id = derived_event_id(attempt_cause(job, attempt), "job.failed")
    return JobFailed(event_id=event_id, job_id=job.job_id, error=error, attempt=attempt)


def with_outcome(update: JobUpdate, outcome: RunOutcome | None) -> JobUpdate:
    """``update`` that also stores the run's outcome, when there is one."""
    return update if outcome is None else update.model_copy(update={"run_outcome": outcome})
