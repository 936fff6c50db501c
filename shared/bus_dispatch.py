"""What both buses do with one delivery: decode, trace, handle, and decide its fate.

This is the one boundary where handler exceptions are caught and classified: a retryable
``AutoscorerError`` is retried (bounded, with delay), everything else is dead-lettered. The
transport (RabbitMQ or memory) only carries out the ``Verdict``. Around each handler the event's
job is the current one for logging (``shared.logctx``): every record carries its ``job_id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from shared.bus import Subscription
from shared.errors import AutoscorerError, ErrorCode, Stage, internal_error
from shared.events import BaseEvent, Event, parse_event
from shared.logctx import Bound, bind_job, unbind_job
from shared.telemetry import extract_trace_context, inject_trace_context

if TYPE_CHECKING:
    from shared.metrics import Metrics

log = logging.getLogger(__name__)

TRACER_NAME = "autoscorer.bus"


class Action(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    error: AutoscorerError | None = None
    delay: float = 0.0


ACKED = Verdict(Action.ACK)


def decide(error: AutoscorerError, attempt: int, sub: Subscription) -> Verdict:
    """Retry a retryable error while attempts remain; dead-letter everything else."""
    if error.retryable and attempt < sub.retry.max_attempts:
        return Verdict(Action.RETRY, error, sub.retry.delay_after(attempt))
    return Verdict(Action.DEAD, error)


async def dispatch(
    sub: Subscription,
    body: bytes,
    headers: Mapping[str, Any],
    attempt: int,
    *,
    tracer: Tracer,
    system: str,
    metrics: Metrics | None = None,
) -> Verdict:
    """Run ``sub.handler`` on one message body inside a consumer span; never raises but cancel.
    A dead-lettered message is counted in ``metrics``."""
    context = extract_trace_context(headers)
    with tracer.start_as_current_span(
        f"{sub.queue} process",
        context=context,
        kind=SpanKind.CONSUMER,
        attributes=_consume_attributes(system, sub.queue, attempt),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        job: Bound | None = None
        try:
            event = await _parse(sub, body, span)
            job = bind_job(event.job_id, _run_attempt(event))
            await _handle(sub, event)
        except Exception as exc:  # noqa: BLE001 - the one place handler failures are classified
            verdict = decide(_classify(exc, sub), attempt, sub)
            _record_failure(span, exc, verdict, sub.queue, attempt)
            if metrics is not None and verdict.action is Action.DEAD and verdict.error:
                metrics.dead_lettered(sub.queue, verdict.error.code.value)
            return verdict
        else:
            log.debug("%s handled on %s", event.type, sub.queue)
            return ACKED
        finally:
            unbind_job(job)


async def _parse(sub: Subscription, body: bytes, span: trace.Span) -> Event:
    try:
        event = parse_event(body)
    except AutoscorerError as invalid:
        if sub.on_invalid is not None:
            await sub.on_invalid(body, invalid)
        raise
    span.set_attribute("messaging.message.id", str(event.event_id))
    if event.job_id is not None:
        span.set_attribute("messaging.message.conversation_id", event.job_id)
    return event


def _run_attempt(event: Event) -> int | None:
    """The job's run attempt an event is about (``RunRequested``, ``RunCompleted``, ...)."""
    attempt = getattr(event, "attempt", None)
    return attempt if isinstance(attempt, int) else None


async def _handle(sub: Subscription, event: Event) -> None:
    budget = asyncio.timeout(sub.handler_timeout)
    try:
        async with budget:
            await sub.handler(event)
    except TimeoutError as exc:
        if budget.expired():
            raise _overran(sub) from exc
        raise


def _overran(sub: Subscription) -> AutoscorerError:
    return AutoscorerError(
        ErrorCode.INTERNAL_ERROR,
        f"handler for {sub.queue!r} ran past its {sub.handler_timeout:g} s budget; "
        "long work must be handed off durably and acknowledged early",
        stage=Stage.PLATFORM,
        details={"reason": "handler_timeout", "queue": sub.queue},
    )


def _classify(exc: Exception, sub: Subscription) -> AutoscorerError:
    if isinstance(exc, AutoscorerError):
        return exc
    error = internal_error(exc, stage=Stage.PLATFORM)
    error.__cause__ = exc
    log.error("unexpected error in handler for %s", sub.queue, exc_info=exc)
    return error


def _record_failure(
    span: trace.Span, exc: Exception, verdict: Verdict, queue: str, attempt: int
) -> None:
    error = verdict.error
    code = error.code.value if error else "?"
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, code))
    span.set_attribute("autoscorer.bus.verdict", verdict.action.value)
    log.warning(
        "%s on %s (attempt %d): %s -> %s",
        code,
        queue,
        attempt,
        exc,
        verdict.action.value,
        extra={"error_code": error.code.value if error else None},
    )


def _consume_attributes(system: str, queue: str, attempt: int) -> dict[str, str | int]:
    return {
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.consumer.group.name": queue,
        "autoscorer.bus.attempt": attempt,
    }


def publish_span(tracer: Tracer, system: str, exchange: str, event: BaseEvent) -> trace.Span:
    """A producer span for ``event``; use as ``with publish_span(...):``."""
    return tracer.start_span(
        f"{event.routing_key} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.destination.name": exchange,
            "messaging.rabbitmq.destination.routing_key": event.routing_key,
            "messaging.message.id": str(event.event_id),
            "messaging.message.conversation_id": event.job_id or "",
        },
    )


def trace_headers(span: trace.Span) -> MutableMapping[str, Any]:
    """Headers carrying ``span``'s W3C trace context."""
    headers: MutableMapping[str, Any] = {}
    inject_trace_context(headers, trace.set_span_in_context(span))
    return headers


def default_tracer() -> Tracer:
    return trace.get_tracer(TRACER_NAME)
