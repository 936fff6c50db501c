"""``JobSubmitted``: record the job (idempotently), claim its workspace and queue it on a
backend, or refuse it (``refusals.py``)."""

from __future__ import annotations

from services.scheduler.context import Context, attempt_cause
from services.scheduler.refusals import refusal, refuse, workspace_taken
from shared.events import JobSubmitted, RunRequested, derived_event_id
from shared.jobs import Job, JobStatus, job_from_submitted, now_ms
from shared.store import JobUpdate, Transition
from shared.telemetry import current_trace_context


async def on_job_submitted(ctx: Context, event: JobSubmitted) -> None:
    """The gateway stored its jobs already (one insert: this only reads them); a platform's job
    is stored here."""
    stored = await ctx.store.get(event.job_id)
    if stored is None:
        job = job_from_submitted(
            event,
            trace_context=current_trace_context(),  # a platform's job: its trace goes on here
            submitted_wait=ctx.deadlines.submitted,
        )
        stored = (await ctx.store.create(job)).job
    if stored.status is not JobStatus.SUBMITTED:
        return
    await admit(ctx, stored, event_id=str(event.event_id))


async def admit(ctx: Context, job: Job, *, event_id: str) -> Transition:
    """Queue a ``submitted`` job, or refuse it: beyond what the platform runs, or its workspace
    held by another active job (the gateway claimed it for its own jobs; a platform's
    ``JobSubmitted`` is claimed here)."""
    refused = refusal(ctx, job.spec, job.callback_url) or await workspace_taken(ctx, job)
    if refused is not None:
        return await refuse(ctx, job, refused, event_id=event_id)
    return await queue_job(ctx, job, event_id=event_id)


async def queue_job(ctx: Context, job: Job, *, event_id: str) -> Transition:
    """``submitted -> queued`` with the first ``RunRequested`` in the outbox.

    A score-only job (no container) waits in ``queued`` for a platform's ``RunCompleted``.
    """
    if job.spec.container is None:
        reason = "score-only: waiting for the platform's RunCompleted"
        return await ctx.move(
            job, JobStatus.SUBMITTED, JobStatus.QUEUED, event_id=event_id, reason=reason
        )
    request = run_request(ctx, job, attempt=job.attempts.count + 1)
    return await ctx.move(
        job,
        JobStatus.SUBMITTED,
        JobStatus.QUEUED,
        update=JobUpdate(backend=request.backend, queued_at=now_ms()),
        event_id=event_id,
        reason=f"attempt {request.attempt} routed to {request.backend}",
        emit=[request],
    )


def run_request(ctx: Context, job: Job, *, attempt: int) -> RunRequested:
    """The request of run attempt ``attempt``: the same event however often it is derived."""
    return RunRequested(
        event_id=derived_event_id(attempt_cause(job, attempt), "run.requested"),
        job_id=job.job_id,
        backend=ctx.router.route(job.spec),
        attempt=attempt,
        spec=job.spec,
        workspace=job.workspace,
    )
