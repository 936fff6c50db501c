"""The outbox: events written into the job document with the change that caused them.

A writer stores ``outbox_entry(event)`` in the same single-document update as its state change,
then calls :func:`publish_pending`. Whatever could not be published stays in the document for
the next ``publish_pending`` (the scheduler's relay loop runs it for every job with pending
entries), always with the same ``event_id``, so consumers can drop duplicates. An entry is
published under the current span, or (published later, outside any span) under the job's
``trace_context``, so every event of a job stays in the job's trace.
"""

from __future__ import annotations

import logging

from shared.bus import EventBus
from shared.errors import AutoscorerError
from shared.events import EVENT_ADAPTER, BaseEvent, Event
from shared.jobs import Job, OutboxEntry
from shared.store import JobStore
from shared.telemetry import continue_trace

log = logging.getLogger(__name__)


def outbox_entry(event: BaseEvent) -> OutboxEntry:
    return OutboxEntry(
        event_id=str(event.event_id), type=event.type, payload=event.model_dump(mode="json")
    )


def entry_event(entry: OutboxEntry) -> Event:
    return EVENT_ADAPTER.validate_python(entry.payload)


async def publish_pending(bus: EventBus, store: JobStore, job: Job) -> int:
    """Publish ``job``'s outbox in order and pop what went out; returns how many were published.

    Stops at the first bus failure (logged) so that order is kept; the rest waits for the relay.
    """
    published: list[str] = []
    try:
        for entry in job.outbox:
            with continue_trace(job.trace_context):
                await bus.publish(entry_event(entry))
            published.append(entry.event_id)
    except AutoscorerError as exc:
        log.warning(
            "outbox of %s: %d left for the relay: %s",
            job.job_id,
            len(job.outbox) - len(published),
            exc.message,
        )
    if published:
        await store.pop_outbox(job.job_id, published)
    return len(published)
