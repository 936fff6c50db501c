"""The event bus seam: the ``EventBus`` protocol and the types both implementations share.

Two implementations follow the same contract (``tests/shared/test_bus_contract.py``):
``shared.bus_rabbitmq.RabbitBus`` (aio-pika, production) and ``shared.bus_memory.MemoryBus``
(embedded mode and tests). Delivery is at least once: handlers must tolerate duplicates
(dedupe on ``event_id``). A handler that raises a *retryable* ``AutoscorerError`` gets the event
again after a delay, up to ``RetryPolicy.max_attempts`` deliveries; permanent errors, unexpected
exceptions (``INTERNAL_ERROR``) and undecodable messages go straight to the dead letters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Stage
from shared.events import BaseEvent, Event

Handler = Callable[[Event], Awaitable[None]]
InvalidHandler = Callable[[bytes, AutoscorerError], Awaitable[None]]
"""Told of a body that is no valid event (with why) before it is dead-lettered."""

ATTEMPT_HEADER = "x-autoscorer-attempt"
ERROR_HEADER = "x-autoscorer-error"
QUEUE_HEADER = "x-autoscorer-queue"
ROUTING_KEY_HEADER = "x-autoscorer-routing-key"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how late a retryable failure is delivered again."""

    max_attempts: int = 5
    delays: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not self.delays or min(self.delays) < 0:
            raise ValueError("delays must be a non-empty list of non-negative seconds")

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait before delivering again after attempt ``attempt`` (1-based) failed."""
        return self.delays[min(attempt, len(self.delays)) - 1]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One durable queue bound to some routing keys (``*``/``#`` wildcards), served by one
    handler: what ``EventBus.subscribe`` takes.

    At most ``concurrency`` events of the queue are handled at once. ``expires``: delete the
    queue (and its backlog and dead letters) once it has had no consumer for that many seconds,
    for per-replica queues such as the ``scorers.changed`` broadcast; ``None`` keeps it forever.
    ``on_invalid`` is told of each body that is no valid event before it is dead-lettered (so
    the consumer can answer its sender); when it raises, that error decides the delivery's fate.
    """

    queue: str
    routing_keys: Sequence[str]
    handler: Handler
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    handler_timeout: float = 20 * 60.0
    expires: float | None = None
    on_invalid: InvalidHandler | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "routing_keys", tuple(self.routing_keys))
        if not self.queue or not self.routing_keys:
            raise ValueError("a subscription needs a queue name and at least one routing key")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.handler_timeout <= 0:
            raise ValueError("handler_timeout must be positive")
        if self.expires is not None and self.expires <= 0:
            raise ValueError("expires must be positive")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a queue gave up on, with the reason when the bus classified it."""

    queue: str
    body: bytes
    error: ErrorInfo | None
    attempt: int
    routing_key: str | None = None


class EventBus(Protocol):
    """Publish events to a topic exchange; consume them from named queues."""

    async def start(self) -> None:
        """Connect, declare topology and start consuming every subscription made so far."""

    async def close(self) -> None:
        """Stop consuming, let in-flight handlers finish (bounded), then disconnect."""

    def ready(self) -> bool:
        """True while the bus can publish and consume (for readiness probes)."""

    async def publish(self, event: BaseEvent) -> None:
        """Deliver ``event`` under ``event.routing_key``; durable once this returns.

        Raises ``AutoscorerError(BUS_ERROR)`` when no queue is bound to the routing key
        (``details.reason == "unroutable"``) or the broker stays unreachable past the timeout.
        """

    async def subscribe(self, sub: Subscription) -> None:
        """Bind ``sub.queue`` to its routing keys and serve it with its handler (allowed before
        or after ``start()``; a queue has one subscription per bus)."""


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


def bus_error(message: str, **details: Any) -> AutoscorerError:
    """A (retryable) ``BUS_ERROR``; ``details["reason"]`` says which kind."""
    return AutoscorerError(ErrorCode.BUS_ERROR, message, stage=Stage.PLATFORM, details=details)


def unroutable_error(routing_key: str) -> AutoscorerError:
    return bus_error(
        f"no queue is bound to routing key {routing_key!r}; the event was not published",
        reason="unroutable",
        routing_key=routing_key,
    )
