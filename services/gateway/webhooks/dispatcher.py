"""Turns bus events into deliveries and works the delivery queue.

``on_event`` (a bus handler on queue ``gateway.webhooks``) writes one delivery per matching
subscription, plus one for the job's ``callback_url`` on a final event; delivery ids are derived
from (target, event id), so a redelivered event adds nothing. ``run`` claims due deliveries and
POSTs them: signed (Standard Webhooks), no redirects, a per-attempt timeout, the SSRF guard at
connect time. A failure is retried on the configured schedule with up to 20% jitter; when the
schedule runs out the delivery is marked failed. Every attempt is logged on the delivery.

Each delivery is attempted in its own task, behind its own boundary: whatever one delivery does
(a URL that does not parse, a receiver that hangs, resets or answers garbage) ends as a failed
attempt on that delivery, and the loop goes on. A tenant has at most ``PER_TENANT`` attempts
running at once; its other due deliveries wait (deferred, no attempt counted), so one tenant's
hanging receiver cannot hold every other tenant's deliveries.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta

import aiohttp
from yarl import URL

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
from shared.errors import AutoscorerError
from shared.events import Event
from shared.jobs import Job, now_ms
from shared.metrics import Metrics
from shared.store import JobStore
from shared.supervise import Supervisor, guarded
from shared.urls import check_target_url

log = logging.getLogger(__name__)

FINAL_EVENTS = frozenset({"score.completed", "job.failed", "job.cancelled"})
SUBSCRIBED_EVENTS = ("job.submitted", "run.completed", *sorted(FINAL_EVENTS))
POLL_S = 1.0
BATCH = 20  # deliveries claimed at once
MAX_IN_FLIGHT = 64  # attempts running at once
PER_TENANT = 4  # attempts running at once for one tenant; more wait (deferred, not counted)
WAVES = 5  # a claim takes up to this many shares of a tenant: the rest wait here, still claimed
CLAIM_MARGIN_S = 30.0  # a claim lasts one attempt's timeout plus this


def waves(timeout_s: float) -> int:
    """Shares of one tenant a claim may take: the last wave must start and time out within the
    claim (``timeout_s`` + 30 s) with 10 s to spare, so a claim that runs out never lets another
    replica attempt a delivery still waiting here. 5 at the 5 s tests use, 3 at the default
    10 s, 1 (one share a claim, as before) above 20 s."""
    return max(1, min(WAVES, 1 + int((CLAIM_MARGIN_S - 10.0) // timeout_s)))


DEFER_S = 1.0
LOOP = "webhook-dispatcher"  # its name under the gateway's Supervisor (and in /readyz)


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
        max_in_flight: int = MAX_IN_FLIGHT,
        per_tenant: int = PER_TENANT,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics  # counts attempts by outcome, and delivery lag
        self._hooks, self._jobs, self._settings = hooks, jobs, settings
        self._policy = Policy(settings.allow_private_targets)
        self._callback_secret = callback_secret
        self._jitter = jitter
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._max_in_flight, self._per_tenant = max_in_flight, per_tenant
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._busy: Counter[str] = Counter()
        # claimed deliveries of a tenant whose share is running, started as attempts end: a
        # claim round costs a sorted query over the whole queue (seconds on FerretDB with
        # thousands pending), so one round takes several shares' worth, not one
        self._waiting: dict[str, deque[Delivery]] = {}
        self._due: list[float] = []  # loop times when a retry this dispatcher scheduled is due

    async def on_event(self, event: Event) -> None:
        job = await self._jobs.get(event.job_id) if event.job_id else None
        body = event.model_dump(mode="json")
        event_id = str(event.event_id)
        for sub in await self._hooks.list_subscriptions():
            if sub.active and event.type in sub.event_types and _visible(sub, job):
                delivery = self._delivery(sub.id, sub.url, event, body, sub.owner)
                await self._hooks.add_delivery(delivery)
        if job is not None and job.callback_url and event.type in FINAL_EVENTS:
            delivery = self._delivery(None, job.callback_url, event, body, job.submitter)
            await self._hooks.add_delivery(delivery)
        log.debug("event %s queued for webhooks", event_id)
        self._wake.set()

    def _delivery(
        self, sub_id: str | None, url: str, event: Event, body: dict[str, object], tenant: str
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
            tenant=tenant,
        )

    async def __aenter__(self) -> WebhookDispatcher:
        """Open the one HTTP session deliveries use: it resolves through the SSRF guard."""
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._policy), limit=self._max_in_flight
        )
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cancel_in_flight()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def supervise(self, supervisor: Supervisor, name: str = LOOP) -> None:
        """Run :meth:`run` under ``supervisor``, beating after each round of claims."""
        supervisor.forever(name, lambda: self.run(progress=lambda: supervisor.beat(name)))

    async def run(
        self, stop: asyncio.Event | None = None, *, progress: Callable[[], None] | None = None
    ) -> None:
        """Claim due deliveries and attempt each in its own task, until ``stop`` is set or the
        task is cancelled (the gateway runs this under its ``Supervisor``). A slow or hanging
        target holds only its own deliveries, and at most ``per_tenant`` at once per tenant;
        one delivery that fails in any way is recorded on that delivery, never ends the loop.
        ``progress`` is called after each round of claims that worked (the store answered)."""
        async with self:
            while stop is None or not stop.is_set():
                self._wake.clear()
                now = asyncio.get_running_loop().time()
                while self._due and self._due[0] <= now:
                    heapq.heappop(self._due)
                await self._claim_and_start()
                if progress is not None:
                    progress()
                await self._sleep(stop)

    async def deliver_due(self) -> int:
        """Attempt every due delivery once and wait for them (inside ``async with dispatcher``)."""
        started = await self._claim_and_start()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()))
        return started

    async def _claim_and_start(self) -> int:
        if self._session is None:
            raise RuntimeError("delivering needs 'async with dispatcher'")
        waiting = sum(len(queue) for queue in self._waiting.values())
        room = min(BATCH, self._max_in_flight - len(self._in_flight) - waiting)
        if room <= 0:
            return 0
        claim = timedelta(seconds=self._settings.timeout_s + CLAIM_MARGIN_S)
        most = self._per_tenant * waves(self._settings.timeout_s)
        held = Counter(self._busy)
        for name, queue in self._waiting.items():
            held[name] += len(queue)
        full = [name for name, n in held.items() if n >= most]
        free = {name: most - n for name, n in held.items()}
        due = await self._hooks.claim_due(
            now_ms(), claim, room, full, tenant_room=free, default_room=most
        )
        if due:
            # the claim stops at each tenant's room: another round at once finds the deliveries
            # of other tenants queued behind them (it skips the tenants now full)
            self._wake.set()
        for delivery in due:
            tenant = delivery.tenant
            if delivery.id in self._in_flight or self._is_waiting(delivery):
                continue  # its claim ran out while it was still being attempted here
            if tenant is not None and self._busy[tenant] >= self._per_tenant:
                self._waiting.setdefault(tenant, deque()).append(delivery)  # its share runs
                continue
            if tenant is not None:
                self._busy[tenant] += 1  # its share is taken from now, so claims skip it
            self._start(delivery, self._deliver(delivery, tenant), holds=tenant)
        return len(due)

    def _is_waiting(self, delivery: Delivery) -> bool:
        queue = self._waiting.get(delivery.tenant or "")
        return queue is not None and any(d.id == delivery.id for d in queue)

    def _start(
        self, delivery: Delivery, work: Coroutine[object, object, None], holds: str | None = None
    ) -> None:
        """Run ``work`` as a task; when it ends (even cancelled before it began), the share of
        tenant ``holds`` is given back."""
        task = asyncio.create_task(work, name=f"webhook:{delivery.id}")
        self._in_flight[delivery.id] = task
        task.add_done_callback(functools.partial(self._finished, delivery.id, holds))

    def _release(self, tenant: str) -> None:
        self._busy[tenant] -= 1
        if self._busy[tenant] <= 0:
            del self._busy[tenant]

    async def _defer(self, delivery: Delivery) -> None:
        """Back in the queue without an attempt (none counted): its tenant's share is in use."""
        later = now_ms() + timedelta(seconds=DEFER_S)
        if await guarded(
            f"webhook delivery {delivery.id}", lambda: self._hooks.defer(delivery.id, later)
        ):
            self._note_due(later)

    def _finished(self, delivery_id: str, holds: str | None, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        if holds is not None:
            queue = self._waiting.get(holds)
            if queue and self._session is not None:  # the share passes to its next delivery
                follower = queue.popleft()
                if not queue:
                    del self._waiting[holds]
                self._start(follower, self._deliver(follower, holds), holds=holds)
                return
            self._release(holds)
        self._wake.set()  # room for another delivery

    def _note_due(self, at: datetime) -> None:
        """Wake when ``at`` comes, so a retry runs on its schedule rather than at the next poll."""
        delay = max(0.0, (at - now_ms()).total_seconds()) + 0.005
        heapq.heappush(self._due, asyncio.get_running_loop().time() + delay)
        del self._due[256:]  # the poll catches any beyond these

    async def _sleep(self, stop: asyncio.Event | None) -> None:
        timeout = POLL_S
        if self._due:
            timeout = min(timeout, max(0.0, self._due[0] - asyncio.get_running_loop().time()))
        waiters = [asyncio.ensure_future(self._wake.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _cancel_in_flight(self) -> None:
        """Attempts cut short, and those waiting for their tenant's share, stay claimed until
        their claim runs out; then they are retried."""
        self._waiting.clear()
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, delivery: Delivery, reserved: str | None) -> None:
        """One delivery's boundary; ``reserved``: the tenant whose share it already holds."""
        assert self._session is not None
        session = self._session
        await guarded(
            f"webhook delivery {delivery.id}", lambda: self._attempt(session, delivery, reserved)
        )

    async def _target(self, delivery: Delivery) -> tuple[str, str | None] | None:
        """(tenant, signing secret) of a delivery; None when its subscription was deleted."""
        if delivery.subscription_id is None:
            job = await self._jobs.get(delivery.job_id) if delivery.job_id else None
            tenant = job.submitter if job is not None else f"callback:{delivery.url}"
            return tenant, self._callback_secret
        sub = await self._hooks.get_subscription(delivery.subscription_id)
        return None if sub is None else (sub.owner, sub.secret)

    async def _attempt(
        self, session: aiohttp.ClientSession, delivery: Delivery, reserved: str | None
    ) -> None:
        started = time.perf_counter()
        target = await self._target(delivery)
        if target is None:
            await self._record(delivery, None, "subscription deleted", started, final=True)
            return
        try:
            check_target_url(delivery.url)
        except AutoscorerError as exc:  # stored before URLs were checked when accepted
            await self._record(delivery, None, exc.message, started, final=True)
            return
        tenant, secret = target
        if reserved is None:  # stored before deliveries knew their tenant: take a share now
            if self._busy[tenant] >= self._per_tenant:
                await self._defer(delivery)
                return
            self._busy[tenant] += 1
        try:
            status_code, error = await self._post(session, delivery, secret)
        finally:
            if reserved is None:
                self._release(tenant)
        await self._record(delivery, status_code, error, started)

    async def _record(
        self,
        delivery: Delivery,
        status_code: int | None,
        error: str | None,
        started: float,
        *,
        final: bool = False,
    ) -> None:
        duration = (time.perf_counter() - started) * 1000
        attempt = DeliveryAttempt(
            at=now_ms(), status_code=status_code, error=error, duration_ms=duration
        )
        if error is None:
            status, next_at = DeliveryStatus.DELIVERED, now_ms()
        elif final:
            status, next_at = DeliveryStatus.FAILED, now_ms()
        else:
            status, next_at = self._next(len(delivery.attempts) + 1)
        if error is not None:
            log.info("webhook %s failed (%s); %s", delivery.id, error, status.value)
        await self._hooks.record_attempt(delivery.id, attempt, status, next_at)
        if self._metrics is not None:
            outcome = "retry" if status is DeliveryStatus.PENDING else status.value
            self._metrics.webhook_attempt(outcome, delivery.created_at, attempt.at)
        if status is DeliveryStatus.PENDING:
            self._note_due(next_at)

    def _next(self, attempts_made: int) -> tuple[DeliveryStatus, datetime]:
        delays = self._settings.retry_delays_s
        if attempts_made > len(delays):
            return DeliveryStatus.FAILED, now_ms()
        delay = delays[attempts_made - 1] * (1 + 0.2 * self._jitter())
        return DeliveryStatus.PENDING, now_ms() + timedelta(seconds=delay)

    async def _post(
        self, session: aiohttp.ClientSession, delivery: Delivery, secret: str | None
    ) -> tuple[int | None, str | None]:
        """(HTTP status, error or None). Never raises: every way an attempt fails is its error."""
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
            check_literal(self._policy, URL(delivery.url).raw_host or "")
            async with session.post(
                delivery.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return response.status, None
                return response.status, f"HTTP {response.status}"
        except BlockedAddressError as exc:
            return None, describe_error("blocked: ", exc)
        except TimeoutError:
            return None, f"timed out after {self._settings.timeout_s}s"
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, BlockedAddressError) else exc
            prefix = "blocked: " if isinstance(cause, BlockedAddressError) else ""
            return None, describe_error(prefix, cause)
        except (OSError, ValueError) as exc:
            return None, describe_error("", exc)
        except Exception as exc:  # the per-attempt boundary: an attempt that breaks is a failure
            log.exception("webhook %s: unexpected error", delivery.id)
            return None, describe_error("internal: ", exc)


def describe_error(prefix: str, exc: BaseException) -> str:
    """A bounded description of an attempt's failure, as kept on the delivery."""
    blocked = isinstance(exc, BlockedAddressError)
    text = prefix + (str(exc) if blocked else f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 300 else text[:297] + "..."
