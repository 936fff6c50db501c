"""Named fakes for the scheduler tests: an executor service, a scorer service and an observer,
each a plain bus subscriber that does what a real service would say on the bus."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from shared.bus import EventBus, RetryPolicy, Subscription
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import (
    BaseEvent,
    Event,
    RunCompleted,
    RunHeartbeat,
    RunRequested,
    RunStarted,
    ScoreCompleted,
    ScoreRequested,
    derived_event_id,
)
from shared.models import Result, RunOutcome

FAST_RETRY = RetryPolicy(max_attempts=5, delays=(0.2, 0.4))

Plan = Literal["succeed", "platform_error", "participant_error", "vanish", "hang", "drop"]


def platform_error() -> AutoscorerError:
    return AutoscorerError(
        ErrorCode.CONTAINER_CREATE_FAILED, "engine refused", stage=Stage.EXECUTION
    )


def participant_error() -> AutoscorerError:
    return AutoscorerError(ErrorCode.CONTAINER_OOM, "out of memory", stage=Stage.EXECUTION)


def outcome_for(request: RunRequested, plan: Plan) -> RunOutcome:
    if plan == "succeed":
        return RunOutcome(job_id=request.job_id, backend=request.backend, status="succeeded")
    error = platform_error() if plan == "platform_error" else participant_error()
    return RunOutcome(
        job_id=request.job_id, backend=request.backend, status="failed", error=error.to_info()
    )


@dataclass
class FakeExecutor:
    """Runs nothing: answers ``RunRequested`` per ``plans[attempt]`` (default: succeed).

    ``vanish`` starts the run with a short lease and then goes silent, like a crashed executor;
    ``hang`` starts it, heartbeats once and never finishes (a wedged run that keeps its lease);
    ``drop`` says nothing at all (a request lost on the way).
    ``duplicate`` publishes every event twice (the same event: a redelivery).
    """

    bus: EventBus
    backend: str = "local"
    plans: dict[int, Plan] = field(default_factory=dict)
    lease_ttl_s: float = 30.0
    vanish_ttl_s: float = 0.3
    duplicate: bool = False
    requests: list[RunRequested] = field(default_factory=list)

    async def subscribe(self, queue: str) -> None:
        await self.bus.subscribe(
            Subscription(queue, [f"run.requested.{self.backend}"], self.handle)
        )

    async def handle(self, event: Event) -> None:
        assert isinstance(event, RunRequested)
        plan = self.plans.get(event.attempt, "succeed")
        if plan != "drop" and event.event_id in {r.event_id for r in self.requests}:
            return  # as the executor service: a request it took is not run again (relay + flush)
        self.requests.append(event)
        if plan == "drop":
            return
        ttl = self.vanish_ttl_s if plan == "vanish" else self.lease_ttl_s
        common = {"job_id": event.job_id, "backend": event.backend, "attempt": event.attempt}
        started_id = derived_event_id(event.event_id, "run.started")  # as the executor service
        await self._send(
            RunStarted(**common, event_id=started_id, instance="fake-executor-1", lease_ttl_s=ttl)
        )
        if plan == "vanish":
            return
        await self._send(RunHeartbeat(**common, instance="fake-executor-1", lease_ttl_s=ttl))
        if plan == "hang":
            return
        outcome = outcome_for(event, plan)
        await self._send(
            RunCompleted(
                event_id=derived_event_id(event.event_id, "run.completed"),
                job_id=event.job_id,
                outcome=outcome,
                attempt=event.attempt,
                workspace=event.workspace,
            )
        )

    async def _send(self, event: BaseEvent) -> None:
        await self.bus.publish(event)
        if self.duplicate:
            await self.bus.publish(event)


@dataclass
class FakeScorer:
    """Answers ``ScoreRequested`` with an accuracy, or with ``result.error`` when ``fail``; with
    nothing at all when ``silent`` (a scorer whose result is lost). Its ``ScoreCompleted`` has the
    id the scorer service derives from the request's."""

    bus: EventBus
    fail: bool = False
    duplicate: bool = False
    silent: bool = False
    ignore: set[str] = field(default_factory=set)  # job ids it never answers
    requests: list[ScoreRequested] = field(default_factory=list)

    async def subscribe(self, queue: str) -> None:
        await self.bus.subscribe(Subscription(queue, ["score.requested"], self.handle))

    async def handle(self, event: Event) -> None:
        assert isinstance(event, ScoreRequested)
        self.requests.append(event)
        if self.silent or event.job_id in self.ignore:
            return
        error = AutoscorerError(ErrorCode.MISMATCH, "ids differ", stage=Stage.SCORING)
        result = Result(error=error.to_info()) if self.fail else Result(summary={"accuracy": 0.75})
        done = ScoreCompleted(
            event_id=derived_event_id(event.event_id, "score.completed"),
            job_id=event.job_id,
            result=result,
            scorer=event.spec.scorer,
            scorer_version="1",
        )
        await self.bus.publish(done)
        if self.duplicate:
            await self.bus.publish(done)


@dataclass
class Observer:
    """Records what the scheduler tells the world (so those events are routable, too)."""

    bus: EventBus
    seen: list[Event] = field(default_factory=list)

    async def subscribe(self, queue: str) -> None:
        keys = ["job.failed", "job.cancelled", "score.completed"]
        await self.bus.subscribe(Subscription(queue, keys, self.handle))

    async def handle(self, event: Event) -> None:
        self.seen.append(event)

    def of_type(self, kind: type[BaseEvent], job_id: str | None = None) -> list[Event]:
        return [
            e for e in self.seen if isinstance(e, kind) and (job_id is None or e.job_id == job_id)
        ]


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is truthy (polling)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
