"""Events as outbox entries and back: the entry's payload is the event's JSON form."""

from __future__ import annotations

from pydantic import ValidationError

from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import EVENT_ADAPTER, BaseEvent, Event
from shared.jobs import OutboxEntry


def entry_for(event: BaseEvent) -> OutboxEntry:
    return OutboxEntry(
        event_id=str(event.event_id), type=event.type, payload=event.model_dump(mode="json")
    )


def event_of(entry: OutboxEntry) -> Event:
    """The event an entry holds; a payload that is no event raises ``BAD_FORMAT``."""
    try:
        return EVENT_ADAPTER.validate_python(entry.payload)
    except ValidationError as exc:
        raise AutoscorerError(
            ErrorCode.BAD_FORMAT,
            f"outbox entry {entry.event_id} ({entry.type}) is not a valid event",
            stage=Stage.PLATFORM,
            details={"event_id": entry.event_id, "type": entry.type},
        ) from exc
