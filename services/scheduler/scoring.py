"""``ScoreCompleted`` finishes a job; a re-score sends a finished job back to the scorer."""

from __future__ import annotations

import logging

from services.scheduler.context import Context, scoring_cause
from shared.errors import ErrorInfo
from shared.events import JobFailed, ScoreCompleted, ScoreRequested, derived_event_id
from shared.jobs import Job, JobStatus
from shared.store import JobUpdate, Transition, TransitionOutcome

log = logging.getLogger(__name__)

RESCORABLE = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})


async def on_score_completed(ctx: Context, event: ScoreCompleted) -> None:
    """``scoring -> succeeded`` with the result (one compare-and-set, the job not read first),
    or ``-> failed`` when ``result.error``."""
    error = event.result.error
    if error is None:
        done = await ctx.move(
            event.job_id,
            JobStatus.SCORING,
            JobStatus.SUCCEEDED,
            update=JobUpdate(result=event.result, error=None, deadline_at=None),
            event_id=str(event.event_id),
            reason=f"scored by {event.scorer} {event.scorer_version}",
        )
        if done.outcome is TransitionOutcome.STATE_MISMATCH:
            _ignoring(event, done.job)
        return
    job = await ctx.known_job(event.job_id)
    if job.status is not JobStatus.SCORING:
        _ignoring(event, job)
        return
    await ctx.move(
        job,
        JobStatus.SCORING,
        JobStatus.FAILED,
        update=JobUpdate(result=event.result, error=error),
        event_id=str(event.event_id),
        reason=f"scoring failed: {error.code.value}",
        emit=[scoring_failed(job, error)],
    )


def _ignoring(event: ScoreCompleted, job: Job) -> None:
    log.info("ignoring %s of job %s in %s", event.type, job.job_id, job.status.value)


def scoring_failed(job: Job, error: ErrorInfo) -> JobFailed:
    """``JobFailed`` for a job that ended with its current scoring round."""
    event_id = derived_event_id(scoring_cause(job, job.scoring_round()), "job.failed")
    attempt = job.attempts.count or None
    return JobFailed(event_id=event_id, job_id=job.job_id, error=error, attempt=attempt)


def score_request(job: Job, scoring_round: int, workspace: str | None = None) -> ScoreRequested:
    """The request of scoring round ``scoring_round``: the same event however often derived."""
    return ScoreRequested(
        event_id=derived_event_id(scoring_cause(job, scoring_round), "score.requested"),
        job_id=job.job_id,
        spec=job.spec,
        workspace=workspace or job.workspace,
        attempt=scoring_round,
        submitter=job.submitter,
        submitted_at=job.created_at,
    )


def rescorable(job: Job) -> bool:
    """Finished, and its run produced output: a job whose run failed has nothing to score."""
    ran = job.run_outcome is not None and job.run_outcome.status == "succeeded"
    return job.status in RESCORABLE and ran


async def rescore(
    ctx: Context, job_id: str, *, event_id: str | None = None, reason: str | None = None
) -> Transition:
    """``succeeded | failed -> scoring`` with a new ``ScoreRequested``; ``STATE_MISMATCH`` for a
    job that is still active, was cancelled, never produced output, or whose workspace another
    active job holds (the job claims its workspace again first)."""
    job = await ctx.known_job(job_id)
    if not rescorable(job):
        return Transition(TransitionOutcome.STATE_MISMATCH, job)
    holder = await ctx.store.claim_workspace(job.workspace, job.job_id)
    if holder != job.job_id:  # a later job runs in the workspace: scoring now would read its output
        log.warning("re-score of job %s refused: job %s is active in its workspace", job_id, holder)
        return Transition(TransitionOutcome.STATE_MISMATCH, job)
    request = score_request(job, job.scoring_round() + 1)
    done = await ctx.move(
        job,
        RESCORABLE,
        JobStatus.SCORING,
        update=JobUpdate(error=None),
        event_id=event_id,
        reason=f"re-score: {reason}" if reason else "re-score",
        emit=[request],
    )
    if not done.job.active:  # not re-scored after all: free the workspace again
        await ctx.release_workspace(done.job)
    return done
