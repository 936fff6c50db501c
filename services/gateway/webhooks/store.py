"""Where subscriptions and deliveries live: a protocol, SQLite (embedded) and MongoDB.

Deliveries are the durable queue: a delivery stays ``pending`` with a ``next_attempt_at`` until it
is delivered or its schedule runs out, so a gateway restart loses none. A dispatcher claims due
deliveries with a short claim (one atomic update each), so two gateway replicas never send the
same attempt twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from services.gateway.webhooks.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    WebhookSubscription,
)


class WebhookStore(Protocol):
    async def init(self) -> None: ...

    async def close(self) -> None: ...

    async def add_subscription(self, sub: WebhookSubscription) -> None: ...

    async def get_subscription(self, sub_id: str) -> WebhookSubscription | None: ...

    async def list_subscriptions(self, owner: str | None = None) -> list[WebhookSubscription]:
        """All subscriptions, or one owner's."""
        ...

    async def delete_subscription(self, sub_id: str) -> bool: ...

    async def add_delivery(self, delivery: Delivery) -> bool:
        """False when a delivery with this id exists already (a redelivered event)."""
        ...

    async def claim_due(
        self,
        now: datetime,
        claim: timedelta,
        limit: int,
        skip_tenants: Collection[str] = (),
        *,
        tenant_room: Mapping[str, int] | None = None,
        default_room: int | None = None,
    ) -> list[Delivery]:
        """Pending deliveries due by ``now`` and not claimed, each claimed until ``now + claim``,
        except those of ``skip_tenants`` (tenants with all their attempts in flight already),
        and at most ``tenant_room[t]`` (else ``default_room``; None: no cap) of one tenant's:
        a delivery over its tenant's room is left unclaimed, untouched, for a later round.
        A stored delivery that no longer parses is marked failed and left out, never raised."""
        ...

    async def defer(self, delivery_id: str, next_attempt_at: datetime) -> None:
        """Release a claimed delivery without an attempt; due again at ``next_attempt_at``."""
        ...

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_at: datetime,
    ) -> None: ...

    async def list_deliveries(self, subscription_id: str, limit: int = 100) -> list[Delivery]:
        """Newest first."""
        ...


class TenantRoom:
    """How many more deliveries of each tenant one claim may take (see ``claim_due``)."""

    def __init__(self, room: Mapping[str, int] | None, default: int | None) -> None:
        self._room = dict(room or {})
        self._default = default

    def take(self, tenant: str | None) -> bool:
        """True (and one less room) when a delivery of ``tenant`` may be claimed now."""
        if tenant is None:
            return True  # stored before deliveries knew their tenant: the attempt takes a share
        left = self._room.get(tenant, self._default)
        if left is None:
            return True
        if left <= 0:
            return False
        self._room[tenant] = left - 1
        return True
