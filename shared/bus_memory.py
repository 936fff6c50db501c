"""In-process ``EventBus`` for the embedded mode and tests: RabbitMQ's semantics, no broker.

Topic routing with ``*``/``#``, one FIFO per queue served with bounded concurrency, the same
retry/dead-letter decisions as the RabbitMQ bus (``shared.bus_dispatch``), unroutable publishes
refused. Nothing is durable: messages still queued when the bus closes are lost, and
``expires`` has nothing to do (queues end with the process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Tracer

from shared.bus import (
    ATTEMPT_HEADER,
    DeadLetter,
    Subscription,
    bus_error,
    topic_matches,
    unroutable_error,
)
from shared.bus_dispatch import (
    Action,
    Verdict,
    default_tracer,
    dispatch,
    publish_span,
    trace_headers,
)
from shared.events import BaseEvent, encode_event

if TYPE_CHECKING:
    from shared.metrics import Metrics

log = logging.getLogger(__name__)

SYSTEM = "autoscorer-memory"


@dataclass(frozen=True, slots=True)
class _Delivery:
    body: bytes
    headers: dict[str, Any]
    routing_key: str
    attempt: int = 1


@dataclass(slots=True)
class _Queue:
    sub: Subscription
    pending: asyncio.Queue[_Delivery] = field(default_factory=asyncio.Queue)
    pump: asyncio.Task[None] | None = None


class MemoryBus:
    """An ``EventBus`` living in one event loop. ``dead_letters`` lists what queues gave up on."""

    def __init__(
        self,
        *,
        tracer: Tracer | None = None,
        drain_timeout: float = 10.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._tracer = tracer or default_tracer()
        self._drain_timeout = drain_timeout
        self._queues: dict[str, _Queue] = {}
        self._inflight: dict[asyncio.Task[None], tuple[_Queue, _Delivery]] = {}
        self._timers: set[asyncio.Task[None]] = set()
        self._started = False
        self.dead_letters: list[DeadLetter] = []

    async def start(self) -> None:
        self._started = True
        for queue in self._queues.values():
            self._start_pump(queue)

    async def close(self) -> None:
        self._started = False
        pumps = [q.pump for q in self._queues.values() if q.pump is not None]
        await _cancel_all(pumps)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=self._drain_timeout)
        await _cancel_all([*self._inflight, *self._timers])

    def ready(self) -> bool:
        return self._started

    async def publish(self, event: BaseEvent) -> None:
        if not self._started:
            raise bus_error("the bus is not started", reason="not_started")
        with publish_span(self._tracer, SYSTEM, "memory", event) as span:
            self._route(encode_event(event), trace_headers(span), event.routing_key)

    async def publish_raw(
        self, routing_key: str, body: bytes, headers: Mapping[str, Any] | None = None
    ) -> None:
        """Route bytes as they came (e.g. relayed from outside); consumers decode them."""
        if not self._started:
            raise bus_error("the bus is not started", reason="not_started")
        self._route(body, dict(headers or {}), routing_key)

    def _route(self, body: bytes, headers: Mapping[str, Any], routing_key: str) -> None:
        targets = [q for q in self._queues.values() if _routes_to(q, routing_key)]
        if not targets:
            raise unroutable_error(routing_key)
        delivery = _Delivery(body, {**headers, ATTEMPT_HEADER: 1}, routing_key)
        for queue in targets:
            queue.pending.put_nowait(delivery)

    async def subscribe(self, sub: Subscription) -> None:
        if sub.queue in self._queues:
            raise ValueError(f"queue {sub.queue!r} already has a handler on this bus")
        self._queues[sub.queue] = entry = _Queue(sub)
        if self._started:
            self._start_pump(entry)

    def _start_pump(self, queue: _Queue) -> None:
        if queue.pump is None or queue.pump.done():
            queue.pump = asyncio.create_task(self._pump(queue), name=f"bus-pump:{queue.sub.queue}")

    async def _pump(self, queue: _Queue) -> None:
        slots = asyncio.Semaphore(queue.sub.concurrency)
        while True:
            await slots.acquire()
            delivery = await queue.pending.get()
            task = asyncio.create_task(self._process(queue, delivery))
            self._inflight[task] = (queue, delivery)
            task.add_done_callback(self._forget)
            task.add_done_callback(lambda _: slots.release())

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)

    async def blip(
        self, queues: Collection[str] | None = None, *, redeliver_after: float = 0.0
    ) -> int:
        """Do to the consumers what a broker restart does: every handler in flight (on
        ``queues``, default all) is cancelled (its channel died) and its message, never settled,
        is delivered again ``redeliver_after`` seconds later (the broker is back). For tests of
        what a service keeps across a blip; returns how many deliveries were interrupted."""
        interrupted = [
            (task, (queue, delivery))
            for task, (queue, delivery) in self._inflight.items()
            if queues is None or queue.sub.queue in queues
        ]
        for task, _ in interrupted:
            task.cancel()
        await asyncio.gather(*(task for task, _ in interrupted), return_exceptions=True)
        for _, (queue, delivery) in interrupted:
            timer = asyncio.create_task(_put_later(queue.pending, delivery, redeliver_after))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        return len(interrupted)

    async def _process(self, queue: _Queue, delivery: _Delivery) -> None:
        verdict = await dispatch(
            queue.sub,
            delivery.body,
            delivery.headers,
            delivery.attempt,
            tracer=self._tracer,
            system=SYSTEM,
            metrics=self._metrics,
        )
        if verdict.action is Action.RETRY:
            self._retry_later(queue, delivery, verdict.delay)
        elif verdict.action is Action.DEAD:
            self._dead_letter(queue, delivery, verdict)

    def _retry_later(self, queue: _Queue, delivery: _Delivery, delay: float) -> None:
        attempt = delivery.attempt + 1
        again = replace(
            delivery, attempt=attempt, headers={**delivery.headers, ATTEMPT_HEADER: attempt}
        )
        timer = asyncio.create_task(_put_later(queue.pending, again, delay))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    def _dead_letter(self, queue: _Queue, delivery: _Delivery, verdict: Verdict) -> None:
        error = verdict.error.to_info() if verdict.error else None
        self.dead_letters.append(
            DeadLetter(
                queue.sub.queue, delivery.body, error, delivery.attempt, delivery.routing_key
            )
        )


def _routes_to(queue: _Queue, routing_key: str) -> bool:
    return any(topic_matches(pattern, routing_key) for pattern in queue.sub.routing_keys)


async def _put_later(pending: asyncio.Queue[_Delivery], delivery: _Delivery, delay: float) -> None:
    await asyncio.sleep(delay)
    pending.put_nowait(delivery)


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
