"""The ``WebhookStore`` in MongoDB (or FerretDB), through PyMongo's ``AsyncMongoClient``."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bson.codec_options import CodecOptions
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.gateway.webhooks.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    WebhookSubscription,
    readable,
)
from services.gateway.webhooks.store import TenantRoom
from shared.store import store_error
from shared.store_mongo_keys import ENCODING_ERRORS, restored, storable

Doc = dict[str, Any]


class MongoWebhookStore:
    def __init__(
        self, client: AsyncMongoClient[Doc], database: str, *, owns_client: bool = False
    ) -> None:
        options: CodecOptions[Doc] = CodecOptions(tz_aware=True, tzinfo=UTC)
        db = client[database]
        self._client, self._owns = client, owns_client
        self._subs = db.get_collection("webhooks", codec_options=options)
        self._deliveries = db.get_collection("webhook_deliveries", codec_options=options)

    @classmethod
    def from_url(cls, url: str, database: str) -> MongoWebhookStore:
        return cls(AsyncMongoClient(url), database, owns_client=True)

    async def _guard(self, operation: str, coro: Any) -> Any:
        try:
            return await coro
        except (PyMongoError, *ENCODING_ERRORS) as exc:
            raise store_error(exc, operation) from exc

    async def init(self) -> None:
        existing = await self._guard("init", self._deliveries.index_information())
        if "due" not in existing:
            await self._guard(
                "init",
                self._deliveries.create_index(
                    [("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"
                ),
            )
        if "by_sub" not in existing:
            await self._guard(
                "init",
                self._deliveries.create_index(
                    [("subscription_id", ASCENDING), ("created_at", ASCENDING)], name="by_sub"
                ),
            )

    async def close(self) -> None:
        if self._owns:
            await self._client.close()

    async def add_subscription(self, sub: WebhookSubscription) -> None:
        await self._guard(
            "add_subscription", self._subs.insert_one({"_id": sub.id, **sub.model_dump()})
        )

    async def get_subscription(self, sub_id: str) -> WebhookSubscription | None:
        doc = await self._guard("get_subscription", self._subs.find_one({"_id": sub_id}))
        return None if doc is None else readable(WebhookSubscription, doc, "subscription")

    async def list_subscriptions(self, owner: str | None = None) -> list[WebhookSubscription]:
        query = {} if owner is None else {"owner": owner}
        docs = await self._guard("list_subscriptions", self._subs.find(query).to_list(None))
        found = (readable(WebhookSubscription, doc, "subscription") for doc in docs)
        return [sub for sub in found if sub is not None]

    async def delete_subscription(self, sub_id: str) -> bool:
        result = await self._guard("delete_subscription", self._subs.delete_one({"_id": sub_id}))
        return bool(result.deleted_count)

    async def add_delivery(self, delivery: Delivery) -> bool:
        try:
            await self._deliveries.insert_one(_delivery_document(delivery))
        except DuplicateKeyError:
            return False
        except (PyMongoError, *ENCODING_ERRORS) as exc:  # ENCODING_ERRORS: a lone surrogate
            raise store_error(exc, "add_delivery") from exc
        return True

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
        claimed: list[Delivery] = []
        query: Doc = {
            "status": "pending",
            "next_attempt_at": {"$lte": now},
            "$or": [{"claimed_until": None}, {"claimed_until": {"$lt": now}}],
        }
        if skip_tenants:
            query["tenant"] = {"$nin": sorted(skip_tenants)}  # also matches rows without one
        # One sorted query for the candidates, then one atomic claim each by id (the filter
        # repeats the conditions, so two replicas never claim the same one): a sorted
        # find_one_and_update per row scans the whole queue each time on FerretDB.
        # A candidate over its tenant's room is not claimed at all (no write): claiming it only
        # to defer it cost two writes per delivery per round, and a burst to one tenant then
        # crawled at ~0.5 deliveries/s on FerretDB.
        candidates = (
            self._deliveries.find(query, {"_id": 1, "tenant": 1})
            .sort("next_attempt_at", ASCENDING)
            .limit(limit)
        )
        for found in await self._guard("claim_due", candidates.to_list(None)):
            if not room.take(found.get("tenant")):
                continue
            doc = await self._guard(
                "claim_due",
                self._deliveries.find_one_and_update(
                    {"_id": found["_id"], **query},
                    {"$set": {"claimed_until": now + claim}},
                    return_document=ReturnDocument.AFTER,
                ),
            )
            if doc is None:
                continue  # claimed by another replica in between
            delivery = readable(Delivery, restored(doc), "delivery")
            if delivery is not None:
                claimed.append(delivery)
            else:  # marked failed, so it is not claimed again
                await self._guard(
                    "claim_due",
                    self._deliveries.update_one(
                        {"_id": doc["_id"]}, {"$set": {"status": "failed"}}
                    ),
                )
        return claimed

    async def defer(self, delivery_id: str, next_attempt_at: datetime) -> None:
        await self._guard(
            "defer",
            self._deliveries.update_one(
                {"_id": delivery_id},
                {"$set": {"next_attempt_at": next_attempt_at, "claimed_until": None}},
            ),
        )

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_at: datetime,
    ) -> None:
        await self._guard(
            "record_attempt",
            self._deliveries.update_one(
                {"_id": delivery_id},
                {
                    "$push": {"attempts": attempt.model_dump()},
                    "$set": {
                        "status": status.value,
                        "next_attempt_at": next_attempt_at,
                        "claimed_until": None,
                    },
                },
            ),
        )

    async def list_deliveries(self, subscription_id: str, limit: int = 100) -> list[Delivery]:
        cursor = (
            self._deliveries.find({"subscription_id": subscription_id})
            .sort("created_at", -1)
            .limit(limit)
        )
        docs = await self._guard("list_deliveries", cursor.to_list(None))
        found = (readable(Delivery, restored(doc), "delivery") for doc in docs)
        return [delivery for delivery in found if delivery is not None]


def _delivery_document(delivery: Delivery) -> Doc:
    """The event body's keys (a result's per-class tables, params) escaped: FerretDB refuses
    ``.`` and a leading ``$`` in field names (:mod:`shared.store_mongo_keys`)."""
    stored: Doc = storable({"_id": delivery.id, **delivery.model_dump()})
    return stored
