"""A ``JobSubmitted`` the scheduler refuses is answered with ``JobFailed``, never only a dead
letter (docs/EVENTS.md, "Refused submissions").

- A body that is no valid ``JobSubmitted`` (it breaks the schema, or its ``spec`` is invalid) is
  dead-lettered to ``scheduler.jobs.dlq`` by the bus; before that, :func:`on_invalid_body`
  publishes ``JobFailed`` (``BAD_FORMAT``, stage validation) for the ``job_id`` it names (or its
  ``spec.job_id``), when that is a valid job id the store does not hold already. Its id is derived
  from the body's ``event_id`` (or the body's hash), so a redelivery repeats the same event.
- A valid ``JobSubmitted`` whose ``callback_url`` the platform would not call, or whose spec asks
  for more than the operator's caps, is recorded and moved ``submitted -> failed`` with
  ``JobFailed`` (``CONFIG_VALIDATION_ERROR`` / ``RESOURCE_LIMIT_EXCEEDED``): :func:`refusal`.
- A valid ``JobSubmitted`` whose workspace another active job holds (one active job per
  workspace, claimed in the store) is refused the same way with ``INVALID_STATE``:
  :func:`workspace_taken`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from typing import Any

from services.scheduler.context import Context
from shared.bus import EventBus
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import JOB_ID_PATTERN, JobFailed, derived_event_id
from shared.jobs import Job, JobStatus
from shared.limits import check_within_caps
from shared.models import JobSpec
from shared.outbox import NOTIFICATIONS
from shared.store import JobUpdate, Transition
from shared.urls import check_target_url

log = logging.getLogger(__name__)

_JOB_ID = re.compile(JOB_ID_PATTERN)


def refusal(ctx: Context, spec: JobSpec, callback_url: str | None) -> AutoscorerError | None:
    """Why the scheduler will not run a (valid) submission of ``spec``, or ``None``."""
    try:
        if callback_url is not None:
            check_target_url(callback_url)
        check_within_caps(spec, ctx.caps)
    except AutoscorerError as refused:
        return refused
    return None


async def workspace_taken(ctx: Context, job: Job) -> AutoscorerError | None:
    """Claim the job's workspace; the refusal when another active job holds it."""
    holder = await ctx.store.claim_workspace(job.workspace, job.job_id)
    if holder == job.job_id:
        return None
    return AutoscorerError(
        ErrorCode.INVALID_STATE,
        "the workspace already has an active job; one job per workspace at a time",
        stage=Stage.VALIDATION,
    )


async def refuse(ctx: Context, job: Job, error: AutoscorerError, *, event_id: str) -> Transition:
    """``submitted -> failed`` with ``JobFailed``: the job exists, and ends here."""
    info = error.to_info()
    failed = JobFailed(
        event_id=derived_event_id(f"{job.key}/submission", "job.failed"),
        job_id=job.job_id,
        error=info,
    )
    return await ctx.move(
        job,
        JobStatus.SUBMITTED,
        JobStatus.FAILED,
        update=JobUpdate(error=info),
        event_id=event_id,
        reason=f"submission refused: {info.code.value}",
        emit=[failed],
    )


async def on_invalid_body(ctx: Context, bus: EventBus, body: bytes, error: AutoscorerError) -> None:
    """Answer a refused ``JobSubmitted`` body with ``JobFailed`` before the bus dead-letters it."""
    data = _object(body)
    if data is None or data.get("type") != "job.submitted":
        return
    job_id = _job_id(data)
    if job_id is None:
        log.warning("refused JobSubmitted names no valid job id: only dead-lettered")
        return
    if await ctx.store.get(job_id) is not None:
        log.warning("refused JobSubmitted for existing job %s: only dead-lettered", job_id)
        return
    await _tell(bus, _failed(ctx, data, body, job_id, error))


def _failed(
    ctx: Context, data: dict[str, Any], body: bytes, job_id: str, error: AutoscorerError
) -> JobFailed:
    cause = _event_id(data) or hashlib.sha256(body).hexdigest()
    refused = AutoscorerError(
        ErrorCode.BAD_FORMAT,
        f"the JobSubmitted was refused: {error.message}",
        stage=Stage.VALIDATION,
        details={
            "errors": error.details.get("errors", []),
            "dead_letter_queue": f"{ctx.settings.queue}.dlq",
        },
    )
    return JobFailed(
        event_id=derived_event_id(cause, "job.failed"), job_id=job_id, error=refused.to_info()
    )


async def _tell(bus: EventBus, failed: JobFailed) -> None:
    """Publish ``failed``; nobody listening is not an error (the relay's rule)."""
    try:
        await bus.publish(failed)
    except AutoscorerError as exc:
        unroutable = exc.details.get("reason") == "unroutable" and failed.type in NOTIFICATIONS
        if not unroutable:
            raise  # retryable: the bus delivers the body again, and this runs again
        log.info("nobody listens to %s; refused job %s not told", failed.type, failed.job_id)


def _object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _job_id(data: dict[str, Any]) -> str | None:
    spec = data.get("spec")
    for found in (data.get("job_id"), spec.get("job_id") if isinstance(spec, dict) else None):
        if isinstance(found, str) and _JOB_ID.match(found):
            return found
    return None


def _event_id(data: dict[str, Any]) -> str | None:
    raw = data.get("event_id")
    if not isinstance(raw, str):
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None
