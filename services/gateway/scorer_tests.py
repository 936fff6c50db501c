"""Requests to the scorer service, answered on the gateway's own reply queue: ``/v1/scorers/test``
(``ScorerTestRequested``) and installing a scorer file (``ScorerLoadRequested``: /v1/scorers/load,
/reload, a watched file). Organisers' code runs only in a scorer replica, never in the gateway.

The gateway publishes the request and waits for the answer routed to its own reply queue
``gateway.replies.<instance>`` (deleted by the broker a while after the gateway is gone). No
scorer replica on the bus is a ``BUS_ERROR`` (503); no answer within the scorer's time limit plus
a margin is ``BACKEND_UNAVAILABLE`` (503).
"""

from __future__ import annotations

import asyncio
import re
import uuid

from shared.bus import EventBus, Subscription
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import (
    BaseEvent,
    Event,
    ScorerLoadCompleted,
    ScorerLoadRequested,
    ScorerTestCompleted,
    ScorerTestRequested,
)
from shared.models import Result

ANSWER_MARGIN_S = 60.0
"""Beyond the scorer's time limit: waiting for a pool slot, a worker replaced."""

Answer = ScorerTestCompleted | ScorerLoadCompleted
REPLIES = ("scorer.test.completed", "scorer.load.completed")
"""the answers' event types: routed with the asker's reply word appended"""

REPLY_QUEUE_EXPIRES_S = 600.0
"""The broker deletes a gateway's reply queue this long after the gateway stopped consuming."""


def reply_word(instance: str) -> str:
    """``instance`` as one routing-key word."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", instance)[:128] or "gateway"


class ScorerTests:
    """Ask a scorer replica to test-score a workspace or install a file; one waiting future
    per request."""

    def __init__(self, bus: EventBus, instance: str, time_limit: float) -> None:
        self._bus = bus
        self._reply_to = reply_word(instance)
        self._timeout = time_limit + ANSWER_MARGIN_S
        self._waiting: dict[uuid.UUID, asyncio.Future[Answer]] = {}

    async def subscribe(self) -> None:
        """Bind this gateway's reply queue (before or after the bus starts)."""
        await self._bus.subscribe(
            Subscription(
                f"gateway.replies.{self._reply_to}",
                [f"{kind}.{self._reply_to}" for kind in REPLIES],
                self._on_reply,
                expires=REPLY_QUEUE_EXPIRES_S,
            )
        )

    async def score(self, workspace: str, scorer: str) -> Result:
        request = ScorerTestRequested(scorer=scorer, workspace=workspace, reply_to=self._reply_to)
        answer = await self._ask(request, {"scorer": scorer})
        assert isinstance(answer, ScorerTestCompleted)
        return answer.result

    async def load(self, filename: str, source: str) -> ScorerLoadCompleted:
        request = ScorerLoadRequested(filename=filename, source=source, reply_to=self._reply_to)
        answer = await self._ask(request, {"file": filename})
        assert isinstance(answer, ScorerLoadCompleted)
        return answer

    async def _ask(self, request: BaseEvent, details: dict[str, str]) -> Answer:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request.event_id] = answer
        try:
            await self._bus.publish(request)
            async with asyncio.timeout(self._timeout):
                return await answer
        except TimeoutError as exc:
            raise AutoscorerError(
                ErrorCode.BACKEND_UNAVAILABLE,
                f"no scorer replica answered within {self._timeout:g} s; try again later",
                stage=Stage.SCORING,
                details=details,
            ) from exc
        finally:
            del self._waiting[request.event_id]

    async def _on_reply(self, event: Event) -> None:
        if not isinstance(event, ScorerTestCompleted | ScorerLoadCompleted):
            return
        waiting = self._waiting.get(event.request_id)
        if waiting is not None and not waiting.done():  # else: a duplicate, or asked too late
            waiting.set_result(event)
