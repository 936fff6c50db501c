"""Turns bus events into deliveries and works the delivery queue.

``on_event`` (a bus handler on queue ``gateway.webhooks``) writes one delivery per matching
subscription, plus one for the job's ``callback_url`` on a final event; delivery ids are derived
from (target, event id), so a redelivered event adds nothing. ``run`` claims due deliveries and
POSTs them: signed (Standard Webhooks), no redirects, a per-attempt timeout, the SSRF guard at
connect time. A failure is retried on the configured schedule with up to 20% jitter; when the
schedule runs out the delivery is marked failed. Every attempt is logged on the delivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import aiohttp

from services.gateway.webhooks import signing
from services.gateway.webhooks.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    WebhookSubscription,
    delivery_id,
)
from services.gateway.webhooks.ssrf import (
    BlockedAddressError,
    GuardedResolver,
    Policy,
    check_literal,
)
from services.gateway.webhooks.store import WebhookStore
from shared.config import WebhookSettings
from shared.events import Event
from shared.jobs import Job, now_ms
from shared.store import JobStore

log = logging.getLogger(__name__)

FINAL_EVENTS = frozenset({"score.completed", "job.failed", "job.cancelled"})
SUBSCRIBED_EVENTS = ("job.submitted", "run.completed", *sorted(FINAL_EVENTS))
POLL_S = 1.0
BATCH = 20


def _visible(sub: WebhookSubscription, job: Job | None) -> bool:
    return sub.owner_is_admin or (job is not None and job.submitter == sub.owner)


class WebhookDispatcher:
    def __init__(
        self,
        hooks: WebhookStore,
        jobs: JobStore,
        settings: WebhookSettings,
        *,
        callback_secret: str | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._hooks, self._jobs, self._settings = hooks, jobs, settings
        self._policy = Policy(settings.allow_private_targets)
        self._callback_secret = callback_secret
        self._jitter = jitter
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    async def on_event(self, event: Event) -> None:
        job = await self._jobs.get(event.job_id) if event.job_id else None
        body = event.model_dump(mode="json")
        event_id = str(event.event_id)
        for sub in await self._hooks.list_subscriptions():
            if sub.active and event.type in sub.event_types and _visible(sub, job):
                await self._hooks.add_delivery(self._delivery(sub.id, sub.url, event, body))
        callback = job.callback_url if job is not None else None
        if callback and event.type in FINAL_EVENTS:
            await self._hooks.add_delivery(self._delivery(None, callback, event, body))
        log.debug("event %s queued for webhooks", event_id)
        self._wake.set()

    def _delivery(
        self, sub_id: str | None, url: str, event: Event, body: dict[str, object]
    ) -> Delivery:
        target = sub_id or f"callback:{url}"
        return Delivery(
            id=delivery_id(target, str(event.event_id)),
            subscription_id=sub_id,
            url=url,
            event_id=str(event.event_id),
            event_type=event.type,
            job_id=event.job_id,
            body=body,
        )

    async def __aenter__(self) -> WebhookDispatcher:
        """Open the one HTTP session deliveries use: it resolves through the SSRF guard."""
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._policy), limit=BATCH)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, stop: asyncio.Event) -> None:
        async with self:
            while not stop.is_set():
                await self.deliver_due()
                self._wake.clear()
                waits = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                await asyncio.wait(waits, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waits:
                    waiter.cancel()

    async def deliver_due(self) -> int:
        """Attempt every due delivery once (inside ``async with dispatcher``)."""
        if self._session is None:
            raise RuntimeError("deliver_due() needs 'async with dispatcher'")
        claim = timedelta(seconds=self._settings.timeout_s + 30)
        due = await self._hooks.claim_due(now_ms(), claim, BATCH)
        await asyncio.gather(*(self._attempt(self._session, d) for d in due))
        return len(due)

    async def _secret(self, delivery: Delivery) -> str | None:
        if delivery.subscription_id is None:
            return self._callback_secret
        sub = await self._hooks.get_subscription(delivery.subscription_id)
        return None if sub is None else sub.secret

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        started = time.perf_counter()
        secret = await self._secret(delivery)
        if delivery.subscription_id is not None and secret is None:
            attempt = DeliveryAttempt(at=now_ms(), error="subscription deleted", duration_ms=0.0)
            await self._hooks.record_attempt(delivery.id, attempt, DeliveryStatus.FAILED, now_ms())
            return
        status_code, error = await self._post(session, delivery, secret)
        duration = (time.perf_counter() - started) * 1000
        attempt = DeliveryAttempt(
            at=now_ms(), status_code=status_code, error=error, duration_ms=duration
        )
        if error is None:
            await self._hooks.record_attempt(
                delivery.id, attempt, DeliveryStatus.DELIVERED, now_ms()
            )
            return
        status, next_at = self._next(len(delivery.attempts) + 1)
        log.info("webhook %s to %s failed (%s); %s", delivery.id, delivery.url, error, status.value)
        await self._hooks.record_attempt(delivery.id, attempt, status, next_at)

    def _next(self, attempts_made: int) -> tuple[DeliveryStatus, datetime]:
        delays = self._settings.retry_delays_s
        if attempts_made > len(delays):
            return DeliveryStatus.FAILED, now_ms()
        delay = delays[attempts_made - 1] * (1 + 0.2 * self._jitter())
        return DeliveryStatus.PENDING, now_ms() + timedelta(seconds=delay)

    async def _post(
        self, session: aiohttp.ClientSession, delivery: Delivery, secret: str | None
    ) -> tuple[int | None, str | None]:
        body = json.dumps(delivery.body, separators=(",", ":")).encode()
        timestamp = int(time.time())
        if secret is not None:
            headers = signing.headers(secret, delivery.id, timestamp, body)
        else:
            headers = {
                "webhook-id": delivery.id,
                "webhook-timestamp": str(timestamp),
                "content-type": "application/json",
            }
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
        try:
            check_literal(self._policy, urlsplit(delivery.url).hostname or "")
            async with session.post(
                delivery.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return response.status, None
                return response.status, f"HTTP {response.status}"
        except BlockedAddressError as exc:
            return None, f"blocked: {exc}"
        except TimeoutError:
            return None, f"timed out after {self._settings.timeout_s}s"
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, BlockedAddressError) else exc
            prefix = "blocked: " if isinstance(cause, BlockedAddressError) else ""
            return None, f"{prefix}{type(cause).__name__}: {cause}"
