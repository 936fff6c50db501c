"""The scorers the gateway knows: the latest catalogue a scorer replica announced.

A scorer replica publishes ``ScorersAnnounced`` (every scorer's name, version, description,
params schema, expected outputs and source sha256, plus the files that failed to load) when it
starts, after every change of its scorers and at least every minute. Each gateway binds its own
queue ``gateway.scorers.<instance>`` (deleted by the broker a while after the gateway is gone) and
keeps the newest catalogue: ``GET /v1/scorers`` lists it, and a submission is checked against it
(a pinned version, the outputs the scorer expects). Until the first announcement the catalogue
is what the composition root seeded it with (``autoscorer serve``: its scorer's registry).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from services.gateway.scorer_tests import REPLY_QUEUE_EXPIRES_S, reply_word
from shared.bus import EventBus, Subscription
from shared.errors import AutoscorerError, ErrorInfo
from shared.events import Event, ScorersAnnounced, ScorersWanted
from shared.scoring import ScorerInfo, find_scorer

log = logging.getLogger(__name__)


class ScorerCatalogue:
    """Name -> ``ScorerInfo``, replaced as a whole by each newer announcement."""

    def __init__(
        self, infos: Iterable[ScorerInfo] = (), errors: Mapping[str, ErrorInfo] | None = None
    ) -> None:
        self._infos = {info.name: info for info in infos}
        self.errors: dict[str, ErrorInfo] = dict(errors or {})
        self._as_of: datetime | None = None

    def infos(self) -> list[ScorerInfo]:
        return [self._infos[name] for name in sorted(self._infos)]

    def get(self, ref: str) -> ScorerInfo:
        """The scorer ``ref`` names (``name`` or ``name@version``), as the scorer's registry
        answers: SCORER_NOT_FOUND for an unknown name or another version than the announced."""
        return find_scorer(self._infos, ref, lambda info: info.version)

    def replace(self, infos: Iterable[ScorerInfo], errors: Mapping[str, ErrorInfo]) -> None:
        self._infos = {info.name: info for info in infos}
        self.errors = dict(errors)

    async def subscribe(self, bus: EventBus, instance: str) -> None:
        """Bind this gateway's announcement queue, then ask the scorer replicas to announce
        (``ScorersWanted``); with the bus not started yet or no replica bound, the periodic
        announcement comes later."""
        queue = f"gateway.scorers.{reply_word(instance)}"
        await bus.subscribe(
            Subscription(
                queue, ["scorers.announced"], self._on_event, expires=REPLY_QUEUE_EXPIRES_S
            )
        )
        try:
            await bus.publish(ScorersWanted(origin=instance))
        except AutoscorerError as exc:
            log.info("scorer catalogue not asked for now (%s); it is announced periodically", exc)

    async def _on_event(self, event: Event) -> None:
        if not isinstance(event, ScorersAnnounced):
            return
        if self._as_of is not None and event.occurred_at < self._as_of:
            return  # an older announcement delivered late
        self._as_of = event.occurred_at
        self.replace(event.scorers, event.errors)
