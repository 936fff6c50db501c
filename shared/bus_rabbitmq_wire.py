"""RabbitMQ's side of the event contract: queue names and arguments, message properties.

docs/EVENTS.md describes the same things for platform backends; ``shared.bus_rabbitmq`` uses
these to declare topology and to publish, retry and dead-letter messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.bus import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    QUEUE_HEADER,
    ROUTING_KEY_HEADER,
    DeadLetter,
    Subscription,
)
from shared.bus_dispatch import Verdict
from shared.errors import ErrorInfo
from shared.events import BaseEvent, encode_event

CONSUMER_TIMEOUT_MARGIN = 60.0  # seconds the broker waits beyond a handler's own budget
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def retry_queue(queue: str, delay: float) -> str:
    return f"{queue}.retry.{_millis(delay)}"


def event_message(event: BaseEvent, headers: Mapping[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        encode_event(event),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.event_id),
        correlation_id=event.job_id,
        type=event.type,
        timestamp=event.occurred_at,
        headers={**headers, ATTEMPT_HEADER: 1},
    )


def copy_message(message: AbstractIncomingMessage, headers: Mapping[str, Any]) -> aio_pika.Message:
    kept = {k: v for k, v in headers.items() if not k.startswith(_BROKER_HEADERS)}
    return aio_pika.Message(
        message.body,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        headers=kept,
    )


def dead_headers(
    sub: Subscription, message: AbstractIncomingMessage, verdict: Verdict, attempt: int
) -> dict[str, Any]:
    error = verdict.error.to_info().model_dump_json() if verdict.error else ""
    return {
        ERROR_HEADER: error,
        ATTEMPT_HEADER: attempt,
        QUEUE_HEADER: sub.queue,
        ROUTING_KEY_HEADER: _routing_key(message),
    }


def retry_headers(headers: Mapping[str, Any], message: AbstractIncomingMessage) -> dict[str, Any]:
    """Remember the original routing key: it is lost when the retry queue dead-letters back."""
    return {**headers, ROUTING_KEY_HEADER: _routing_key(message)}


def _routing_key(message: AbstractIncomingMessage) -> str:
    return _text(message.headers.get(ROUTING_KEY_HEADER)) or message.routing_key or ""


def dead_letter_from(message: AbstractIncomingMessage) -> DeadLetter:
    """Read a message taken from a ``*.dlq`` queue (for operators and tests)."""
    headers = message.headers
    raw_error = _text(headers.get(ERROR_HEADER))
    queue = _text(headers.get(QUEUE_HEADER)) or (message.routing_key or "")
    return DeadLetter(
        queue=queue,
        body=message.body,
        error=ErrorInfo.model_validate_json(raw_error) if raw_error else None,
        attempt=attempt_of(headers),
        routing_key=_text(headers.get(ROUTING_KEY_HEADER)),
    )


def attempt_of(headers: Mapping[str, Any]) -> int:
    value = headers.get(ATTEMPT_HEADER, 1)
    try:
        return max(1, int(_text(value) or 1))
    except ValueError:
        return 1


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)


def main_args(sub: Subscription, dead_letter_exchange: str, delivery_limit: int) -> dict[str, Any]:
    arguments = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-dead-letter-routing-key": sub.queue,
        "x-delivery-limit": delivery_limit,
    }
    return _with_expiry(arguments, sub)


def side_queues(sub: Subscription) -> list[tuple[str, dict[str, Any]]]:
    """The DLQ and the retry queues of ``sub``, with their arguments."""
    side = [(dead_letter_queue(sub.queue), {"x-queue-type": "quorum"})]
    side += [(retry_queue(sub.queue, d), _retry_args(sub.queue, d)) for d in set(sub.retry.delays)]
    return [(name, _with_expiry(arguments, sub)) for name, arguments in sorted(side)]


def _with_expiry(arguments: dict[str, Any], sub: Subscription) -> dict[str, Any]:
    if sub.expires is None:
        return arguments
    return {**arguments, "x-expires": _millis(sub.expires)}


def consumer_args(sub: Subscription) -> dict[str, Any]:
    """Let the broker's ack timeout follow the handler budget (RabbitMQ 3.12+; older ignore it)."""
    return {"x-consumer-timeout": _millis(sub.handler_timeout + CONSUMER_TIMEOUT_MARGIN)}


def _retry_args(queue: str, delay: float) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": _millis(delay),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }


def _millis(seconds: float) -> int:
    return round(seconds * 1000)
