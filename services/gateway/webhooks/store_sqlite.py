"""The embedded ``WebhookStore``: SQLite on one worker thread (see ``shared/sqlite_worker.py``).

The file holds every subscription's signing secret, so it and its ``-wal``/``-shm`` files are
created mode 0600 (and tightened to 0600 when found looser), and a directory this store creates
is mode 0700: :func:`shared.sqlite_worker.connect` does so for every store file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from services.gateway.webhooks.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    WebhookSubscription,
    readable,
)
from services.gateway.webhooks.store import TenantRoom
from shared.sqlite_worker import SqliteWorker, connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (id TEXT PRIMARY KEY, owner TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY, subscription_id TEXT, status TEXT NOT NULL, next_attempt_at TEXT NOT NULL,
    claimed_until TEXT, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_sub ON webhook_deliveries (subscription_id, created_at);
"""


class _Db:
    """Synchronous; runs on the worker thread only."""

    def __init__(self, path: str) -> None:
        self.conn = connect(path, SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(webhook_deliveries)")}
        if "tenant" not in columns:  # a store made before deliveries knew their tenant
            self.conn.execute("ALTER TABLE webhook_deliveries ADD COLUMN tenant TEXT")

    def add_subscription(self, sub: WebhookSubscription) -> None:
        self.conn.execute(
            "INSERT INTO webhooks VALUES (?, ?, ?)", (sub.id, sub.owner, sub.model_dump_json())
        )

    def get_subscription(self, sub_id: str) -> WebhookSubscription | None:
        row = self.conn.execute("SELECT doc FROM webhooks WHERE id = ?", (sub_id,)).fetchone()
        return None if row is None else readable(WebhookSubscription, row[0], "subscription")

    def list_subscriptions(self, owner: str | None) -> list[WebhookSubscription]:
        if owner is None:
            rows = self.conn.execute("SELECT doc FROM webhooks")
        else:
            rows = self.conn.execute("SELECT doc FROM webhooks WHERE owner = ?", (owner,))
        found = (readable(WebhookSubscription, row[0], "subscription") for row in rows)
        return [sub for sub in found if sub is not None]

    def delete_subscription(self, sub_id: str) -> bool:
        return self.conn.execute("DELETE FROM webhooks WHERE id = ?", (sub_id,)).rowcount == 1

    def add_delivery(self, d: Delivery) -> bool:
        try:
            self.conn.execute(
                "INSERT INTO webhook_deliveries (id, subscription_id, status, next_attempt_at,"
                " claimed_until, created_at, doc, tenant) VALUES (?, ?, ?, ?, NULL, ?, ?, ?)",
                (
                    d.id,
                    d.subscription_id,
                    d.status.value,
                    d.next_attempt_at.isoformat(),
                    d.created_at.isoformat(),
                    d.model_dump_json(),
                    d.tenant,
                ),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def claim_due(
        self, now: datetime, claim: timedelta, limit: int, skip: Collection[str], room: TenantRoom
    ) -> list[Delivery]:
        until = (now + claim).isoformat()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            found = self.conn.execute(
                "SELECT id, doc, tenant FROM webhook_deliveries"
                " WHERE status = 'pending' AND next_attempt_at <= ?"
                " AND (claimed_until IS NULL OR claimed_until < ?)"
                " AND (tenant IS NULL OR tenant NOT IN (SELECT value FROM json_each(?)))"
                " ORDER BY next_attempt_at LIMIT ?",
                (now.isoformat(), now.isoformat(), json.dumps(sorted(skip)), limit),
            ).fetchall()
            rows = [row for row in found if room.take(row[2])]
            for row in rows:
                self.conn.execute(
                    "UPDATE webhook_deliveries SET claimed_until = ? WHERE id = ?", (until, row[0])
                )
            claimed = []
            for row in rows:
                delivery = readable(Delivery, row[1], "delivery")
                if delivery is not None:
                    claimed.append(delivery)
                else:  # marked failed, so it is not claimed again
                    self.conn.execute(
                        "UPDATE webhook_deliveries SET status = 'failed' WHERE id = ?", (row[0],)
                    )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return claimed

    def defer(self, delivery_id: str, next_at: datetime) -> None:
        doc_sql = "SELECT doc FROM webhook_deliveries WHERE id = ?"
        row = self.conn.execute(doc_sql, (delivery_id,)).fetchone()
        if row is None:
            return
        doc = Delivery.model_validate_json(row[0]).model_copy(
            update={"next_attempt_at": next_at, "claimed_until": None}
        )
        self.conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = ?, claimed_until = NULL, doc = ?"
            " WHERE id = ?",
            (next_at.isoformat(), doc.model_dump_json(), delivery_id),
        )

    def record_attempt(
        self, delivery_id: str, attempt: DeliveryAttempt, status: DeliveryStatus, next_at: datetime
    ) -> None:
        sql = "SELECT doc FROM webhook_deliveries WHERE id = ?"
        row = self.conn.execute(sql, (delivery_id,)).fetchone()
        if row is None:
            return
        doc = Delivery.model_validate_json(row[0])
        doc = doc.model_copy(
            update={
                "attempts": [*doc.attempts, attempt],
                "status": status,
                "next_attempt_at": next_at,
                "claimed_until": None,
            }
        )
        self.conn.execute(
            "UPDATE webhook_deliveries"
            " SET status = ?, next_attempt_at = ?, claimed_until = NULL, doc = ? WHERE id = ?",
            (status.value, next_at.isoformat(), doc.model_dump_json(), delivery_id),
        )

    def list_deliveries(self, subscription_id: str, limit: int) -> list[Delivery]:
        rows = self.conn.execute(
            "SELECT doc FROM webhook_deliveries WHERE subscription_id = ?"
            " ORDER BY created_at DESC LIMIT ?",
            (subscription_id, limit),
        )
        found = (readable(Delivery, row[0], "delivery") for row in rows)
        return [delivery for delivery in found if delivery is not None]


class SqliteWebhookStore:
    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._worker = SqliteWorker("autoscorer-webhooks")
        self._db: _Db | None = None

    async def init(self) -> None:
        self._worker.start()
        if self._db is None:
            self._db = await self._worker.run("init", _Db, self._path)

    async def close(self) -> None:
        if self._db is not None:
            await self._worker.run("close", self._db.conn.close)
            self._db = None
        self._worker.stop()

    @property
    def _d(self) -> _Db:
        if self._db is None:
            raise RuntimeError("SqliteWebhookStore used before init()")
        return self._db

    async def add_subscription(self, sub: WebhookSubscription) -> None:
        await self._worker.run("add_subscription", self._d.add_subscription, sub)

    async def get_subscription(self, sub_id: str) -> WebhookSubscription | None:
        return await self._worker.run("get_subscription", self._d.get_subscription, sub_id)

    async def list_subscriptions(self, owner: str | None = None) -> list[WebhookSubscription]:
        return await self._worker.run("list_subscriptions", self._d.list_subscriptions, owner)

    async def delete_subscription(self, sub_id: str) -> bool:
        return await self._worker.run("delete_subscription", self._d.delete_subscription, sub_id)

    async def add_delivery(self, delivery: Delivery) -> bool:
        return await self._worker.run("add_delivery", self._d.add_delivery, delivery)

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
        room = TenantRoom(tenant_room, default_room)
        return await self._worker.run(
            "claim_due", self._d.claim_due, now, claim, limit, skip_tenants, room
        )

    async def defer(self, delivery_id: str, next_attempt_at: datetime) -> None:
        await self._worker.run("defer", self._d.defer, delivery_id, next_attempt_at)

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_at: datetime,
    ) -> None:
        await self._worker.run(
            "record_attempt", self._d.record_attempt, delivery_id, attempt, status, next_attempt_at
        )

    async def list_deliveries(self, subscription_id: str, limit: int = 100) -> list[Delivery]:
        return await self._worker.run(
            "list_deliveries", self._d.list_deliveries, subscription_id, limit
        )
