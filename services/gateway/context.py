"""What the gateway's handlers share: settings, store, bus, the scorer catalogue (what the scorer
service announced), the operator's caps on what a job may ask for (``Settings.limits``) and the
supervisor of the gateway's background loops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from services.gateway.catalogue import ScorerCatalogue
from services.gateway.scorer_tests import ScorerTests
from services.gateway.webhooks.store import WebhookStore
from shared.bus import EventBus
from shared.config import GatewaySettings
from shared.jobs import Job
from shared.limits import SandboxLimits
from shared.outbox import publish_pending
from shared.store import JobStore
from shared.supervise import Supervisor


class KeyedLocks:
    """One ``asyncio.Lock`` per key while anyone holds or waits for it, then forgotten."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass
class Gateway:
    settings: GatewaySettings
    store: JobStore
    bus: EventBus
    scorers: ScorerCatalogue
    """the scorers the scorer service announced (``ScorersAnnounced``): what /v1/scorers lists
    and a submission is checked against"""
    hooks: WebhookStore
    instance_id: str
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    """the operator's caps (``Settings.limits``): a submission asking beyond them is refused"""
    scorer_time_limit: float = 600.0
    """the scorer's time limit (``Settings.scorer.time_limit``): /v1/scorers/test waits that long
    plus a margin for a scorer replica's answer"""
    supervisor: Supervisor = field(default_factory=lambda: Supervisor("gateway"))
    """runs every background loop of the gateway (``GatewayService.supervisor`` is this one)"""
    workspace_locks: KeyedLocks = field(default_factory=KeyedLocks)
    """held from "is this workspace busy?" to "job stored", so one replica never starts two"""
    scorer_tests: ScorerTests = field(init=False)
    """requests to the scorer service: /v1/scorers/test, installing a scorer file"""

    def __post_init__(self) -> None:
        self.scorer_tests = ScorerTests(self.bus, self.instance_id, self.scorer_time_limit)

    async def publish_outbox(self, job: Job) -> None:
        """Publish the job's pending events now; on a bus failure the relay publishes them."""
        await publish_pending(self.bus, self.store, job)


GATEWAY = web.AppKey("gateway", Gateway)
