"""``/v1/scorers/test`` as a request to the scorer service: organisers' code runs only in a
scorer replica's pool, under its time limit, never in the gateway.

The gateway publishes ``ScorerTestRequested`` (with the plugin files it knows) and waits for the
``ScorerTestCompleted`` routed to its own reply queue ``gateway.replies.<instance>`` (deleted by
the broker a while after the gateway is gone). No scorer replica on the bus is a
``BUS_ERROR`` (503); no answer within the scorer's time limit plus a margin is
``BACKEND_UNAVAILABLE`` (503).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence

from shared.bus import EventBus, Subscription
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import Event, ScorerTestCompleted, ScorerTestRequested
from shared.models import Result

ANSWER_MARGIN_S = 60.0
"""Beyond the scorer's time limit: waiting for a pool slot, a worker replaced."""

REPLY_QUEUE_EXPIRES_S = 600.0
"""The broker deletes a gateway's reply queue this long after the gateway stopped consuming."""


def reply_word(instance: str) -> str:
    """``instance`` as one routing-key word."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", instance)[:128] or "gateway"


class ScorerTests:
    """Ask a scorer replica to test-score a workspace; one waiting future per request."""

    def __init__(self, bus: EventBus, instance: str, time_limit: float) -> None:
        self._bus = bus
        self._reply_to = reply_word(instance)
        self._timeout = time_limit + ANSWER_MARGIN_S
        self._waiting: dict[uuid.UUID, asyncio.Future[Result]] = {}

    async def subscribe(self) -> None:
        """Bind this gateway's reply queue (before or after the bus starts)."""
        await self._bus.subscribe(
            Subscription(
                f"gateway.replies.{self._reply_to}",
                [f"scorer.test.completed.{self._reply_to}"],
                self._on_reply,
                expires=REPLY_QUEUE_EXPIRES_S,
            )
        )

    async def score(
        self, workspace: str, scorer: str, plugins: Sequence[tuple[str, str]]
    ) -> Result:
        request = ScorerTestRequested(
            scorer=scorer, workspace=workspace, plugins=list(plugins), reply_to=self._reply_to
        )
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
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
                details={"scorer": scorer},
            ) from exc
        finally:
            del self._waiting[request.event_id]

    async def _on_reply(self, event: Event) -> None:
        if not isinstance(event, ScorerTestCompleted):
            return
        waiting = self._waiting.get(event.request_id)
        if waiting is not None and not waiting.done():  # else: a duplicate, or asked too late
            waiting.set_result(event.result)
