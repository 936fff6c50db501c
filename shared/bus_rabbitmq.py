"""``EventBus`` on RabbitMQ with aio-pika (``connect_robust``).

Topology (docs/EVENTS.md has the full contract):

* ``autoscorer.events`` — durable topic exchange; routing key = ``event.routing_key``.
* per subscribed queue ``Q``: a durable quorum queue bound to its routing keys, dead-lettering
  to the direct exchange ``autoscorer.dlx`` with routing key ``Q``; ``Q.dlq`` bound there;
  ``Q.retry.<ms>`` quorum queues (one per retry delay) whose messages expire back into ``Q``
  through the default exchange. ``x-delivery-limit`` dead-letters a message that keeps
  crashing its consumer (redelivered without being settled).

Messages are JSON, persistent, published with confirms and ``mandatory`` (unroutable ->
``BUS_ERROR``), and carry ``message_id`` = event_id, ``correlation_id`` = job_id, ``type`` and
W3C ``traceparent``/``tracestate`` headers. Consumers settle every message inside
``message.process(requeue=True)``: retries and dead letters are re-published (confirmed) before
the original is acknowledged; if that fails the original is requeued, never lost.

A lost connection (broker restart, network blip) closes the consumer channels: aio-pika cancels
the handlers in flight, their unsettled messages go back to the queue, and the robust connection
reconnects, re-declares and consumes again, so the broker redelivers them. The bus owns nothing
but the handler's task: work that must outlive a blip (a participant run, a scoring) is a task of
its service that a redelivered request joins (docs/SERVICES.md), and publishes wait out the
reconnect (``publish_timeout``). ``connection_name`` names the connection on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from opentelemetry.trace import Tracer

from shared.bus import (
    ATTEMPT_HEADER,
    Subscription,
    bus_error,
    unroutable_error,
)
from shared.bus_dispatch import (
    Action,
    default_tracer,
    dispatch,
    publish_span,
    trace_headers,
)
from shared.bus_rabbitmq_wire import (
    attempt_of,
    consumer_args,
    copy_message,
    dead_headers,
    dead_letter_from,
    dead_letter_queue,
    event_message,
    main_args,
    retry_headers,
    retry_queue,
    side_queues,
)
from shared.errors import AutoscorerError
from shared.events import BaseEvent

if TYPE_CHECKING:
    from shared.metrics import Metrics

__all__ = ["RabbitBus", "RabbitBusConfig", "dead_letter_from", "dead_letter_queue", "retry_queue"]

log = logging.getLogger(__name__)

SYSTEM = "rabbitmq"
_REPUBLISH_PAUSE = 0.5


@dataclass(frozen=True, slots=True)
class RabbitBusConfig:
    """Connection and topology settings; ``shared.connect.make_bus`` builds it from the
    ``bus`` settings (``BusSettings``), whose defaults are these."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "autoscorer.events"
    dead_letter_exchange: str = "autoscorer.dlx"
    publish_timeout: float = 30.0  # how long publish waits (reconnects included) for a confirm
    connect_timeout: float = 10.0
    reconnect_interval: float = 1.0
    delivery_limit: int = 20  # quorum redeliveries (crashes, consumer timeouts) before the DLQ
    drain_timeout: float = 30.0  # how long close() lets in-flight handlers finish
    connection_name: str | None = None  # shown by the broker (management UI, rabbitmqctl)


@dataclass(slots=True)
class _Consumer:
    sub: Subscription
    queue: AbstractQueue | None = None
    tag: str | None = None


@dataclass(slots=True)
class _Links:
    connection: AbstractRobustConnection
    channel: AbstractChannel
    exchange: AbstractExchange
    dlx: AbstractExchange
    consumer_channels: list[AbstractChannel] = field(default_factory=list)


class RabbitBus:
    """The production ``EventBus``. One instance per process; safe to share between tasks."""

    def __init__(
        self,
        config: RabbitBusConfig,
        *,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._config = config
        self._tracer = tracer or default_tracer()
        self._consumers: dict[str, _Consumer] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._links: _Links | None = None

    async def start(self) -> None:
        if self._links is not None:
            return
        connection = await self._connect()
        try:
            await self._declare(connection)
        except AutoscorerError:
            self._links = None
            await connection.close()
            raise

    async def _declare(self, connection: AbstractRobustConnection) -> _Links:
        try:
            self._links = await _open_links(connection, self._config)
        except CONNECTION_EXCEPTIONS as exc:
            raise _topology_error(exc) from exc
        for consumer in self._consumers.values():
            await self._consume(consumer)
        return self._links

    async def close(self) -> None:
        links = self._links
        if links is None:
            return
        await self._cancel_consumers()
        if self._inflight:  # they still settle (retry / dead-letter) through the open links
            await asyncio.wait(self._inflight, timeout=self._config.drain_timeout)
        self._links = None
        await links.connection.close()

    def ready(self) -> bool:
        """Started and connected (a robust connection that is reconnecting is not ready)."""
        return self._links is not None and self._links.connection.connected.is_set()

    async def publish(self, event: BaseEvent) -> None:
        links = self._require_links()
        with publish_span(self._tracer, SYSTEM, self._config.exchange, event) as span:
            message = event_message(event, trace_headers(span))
            await self._send(links.exchange, message, event.routing_key)

    async def subscribe(self, sub: Subscription) -> None:
        if sub.queue in self._consumers:
            raise ValueError(f"queue {sub.queue!r} already has a handler on this bus")
        self._consumers[sub.queue] = consumer = _Consumer(sub)
        if self._links is not None:
            await self._consume(consumer)

    # -- connection and topology -------------------------------------------------------------

    async def _connect(self) -> AbstractRobustConnection:
        config = self._config
        try:
            return await aio_pika.connect_robust(
                config.url,
                timeout=config.connect_timeout,
                reconnect_interval=config.reconnect_interval,
                client_properties=(
                    {"connection_name": config.connection_name} if config.connection_name else None
                ),
            )
        except CONNECTION_EXCEPTIONS as exc:
            raise bus_error(f"cannot connect to RabbitMQ: {exc}", reason="unavailable") from exc

    async def _consume(self, consumer: _Consumer) -> None:
        try:
            await self._start_consumer(consumer)
        except CONNECTION_EXCEPTIONS as exc:
            raise _topology_error(exc) from exc

    async def _start_consumer(self, consumer: _Consumer) -> None:
        links = self._require_links()
        sub = consumer.sub
        channel = await links.connection.channel()
        links.consumer_channels.append(channel)
        await channel.set_qos(prefetch_count=sub.concurrency)
        queue = await self._declare_queues(channel, sub)
        consumer.queue = queue
        consumer.tag = await queue.consume(
            partial(self._on_message, sub), arguments=consumer_args(sub)
        )

    async def _declare_queues(self, channel: AbstractChannel, sub: Subscription) -> AbstractQueue:
        config = self._config
        for name, arguments in side_queues(sub):
            side = await channel.declare_queue(name, durable=True, arguments=arguments)
            if name == dead_letter_queue(sub.queue):
                await side.bind(config.dead_letter_exchange, routing_key=sub.queue)
        queue = await channel.declare_queue(
            sub.queue,
            durable=True,
            arguments=main_args(sub, config.dead_letter_exchange, config.delivery_limit),
        )
        for routing_key in sub.routing_keys:
            await queue.bind(config.exchange, routing_key=routing_key)
        return queue

    async def _renewside_queues(self, sub: Subscription) -> None:
        """Re-declare an expiring subscription's DLQ and retry queues before publishing to them.

        Publishing does not count as use for ``x-expires``, so they may have gone; declaring
        renews them. Uses the plain channel: the robust one would remember every declaration.
        """
        channel = await self._require_links().channel.get_underlay_channel()
        for name, arguments in side_queues(sub):
            await channel.queue_declare(name, durable=True, arguments=arguments)
        await channel.queue_bind(
            dead_letter_queue(sub.queue), self._config.dead_letter_exchange, routing_key=sub.queue
        )

    async def _cancel_consumers(self) -> None:
        for consumer in self._consumers.values():
            if consumer.queue is None or consumer.tag is None:
                continue
            queue, tag = consumer.queue, consumer.tag
            consumer.queue = consumer.tag = None
            try:
                await queue.cancel(tag)
            except CONNECTION_EXCEPTIONS as exc:  # broker gone: it requeues unsettled messages
                log.warning("could not cancel consumer on %s: %s", queue.name, exc)

    def _require_links(self) -> _Links:
        if self._links is None:
            raise bus_error("the bus is not started", reason="not_started")
        return self._links

    # -- consuming -----------------------------------------------------------------------------

    async def _on_message(self, sub: Subscription, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        try:
            async with message.process(requeue=True):
                await self._settle(sub, message)
        except AutoscorerError as exc:
            log.warning("requeued a message on %s, could not settle it: %s", sub.queue, exc)
        except CONNECTION_EXCEPTIONS as exc:  # the channel died under us: the broker redelivers
            log.warning("lost the channel of a message on %s: %s", sub.queue, exc)

    async def _settle(self, sub: Subscription, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers)
        attempt = attempt_of(headers)
        verdict = await dispatch(
            sub,
            message.body,
            headers,
            attempt,
            tracer=self._tracer,
            system=SYSTEM,
            metrics=self._metrics,
        )
        links = self._require_links()
        if verdict.action is not Action.ACK and sub.expires is not None:
            await self._renewside_queues(sub)
        if verdict.action is Action.RETRY:
            again = copy_message(
                message, {**retry_headers(headers, message), ATTEMPT_HEADER: attempt + 1}
            )
            await self._send(
                links.channel.default_exchange, again, retry_queue(sub.queue, verdict.delay)
            )
        elif verdict.action is Action.DEAD:
            dead = copy_message(
                message, {**headers, **dead_headers(sub, message, verdict, attempt)}
            )
            await self._send(links.dlx, dead, sub.queue)

    # -- publishing ----------------------------------------------------------------------------

    async def _send(
        self, exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
    ) -> None:
        timeout = self._config.publish_timeout
        try:
            async with asyncio.timeout(timeout):
                await _publish_until_confirmed(exchange, message, routing_key)
        except TimeoutError as exc:
            raise bus_error(
                f"RabbitMQ did not confirm the publish within {timeout:g} s",
                reason="unavailable",
                routing_key=routing_key,
            ) from exc


async def _open_links(connection: AbstractRobustConnection, config: RabbitBusConfig) -> _Links:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.declare_exchange(
        config.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dlx = await channel.declare_exchange(
        config.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    return _Links(connection, channel, exchange, dlx)


def _topology_error(exc: BaseException) -> AutoscorerError:
    return bus_error(f"cannot set up the RabbitMQ topology: {exc}", reason="topology")


async def _publish_until_confirmed(
    exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
) -> None:
    """Publish, waiting out reconnects; a lost confirm may duplicate (handlers dedupe)."""
    while True:
        try:
            await exchange.publish(message, routing_key, mandatory=True)
        except PublishError as exc:
            raise unroutable_error(routing_key) from exc
        except DeliveryError as exc:
            raise bus_error(
                f"RabbitMQ refused the message: {exc}", reason="nacked", routing_key=routing_key
            ) from exc
        except CONNECTION_EXCEPTIONS as exc:
            log.info("publish to %r failed (%s); retrying after reconnect", routing_key, exc)
            await asyncio.sleep(_REPUBLISH_PAUSE)
        else:
            return
