"""What the gateway's handlers share: settings, store, bus and the scorer registry."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from services.gateway.webhooks.store import WebhookStore
from services.scorer.registry import ScorerRegistry
from shared.bus import EventBus
from shared.config import GatewaySettings
from shared.jobs import Job
from shared.outbox import publish_pending
from shared.store import JobStore


@dataclass
class Gateway:
    settings: GatewaySettings
    store: JobStore
    bus: EventBus
    registry: ScorerRegistry
    hooks: WebhookStore
    instance_id: str

    async def publish_outbox(self, job: Job) -> None:
        """Publish the job's pending events now; on a bus failure the relay publishes them."""
        await publish_pending(self.bus, self.store, job)


GATEWAY = web.AppKey("gateway", Gateway)
