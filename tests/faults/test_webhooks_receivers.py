"""Webhook receivers that fail in every way a stranger's server can (issue 7, "webhook receiver
failures"), against the real dispatcher running under the gateway's Supervisor, on both webhook
stores (SQLite, and FerretDB through the MongoDB store).

Receivers are real servers on 127.0.0.1: an aiohttp app (500, hang past the timeout, redirect,
slow huge body) and a raw asyncio TCP server for what aiohttp will not do on purpose (reset the
connection, close in the middle of the response head). For each: every attempt of the schedule is
made, on schedule, and the delivery ends ``failed``; a good tenant's deliveries keep arriving
promptly meanwhile; the dispatcher loop stays healthy throughout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
import uuid
from contextlib import suppress

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.gateway.webhooks.dispatcher import PER_TENANT, WebhookDispatcher, waves
from services.gateway.webhooks.models import DeliveryStatus, WebhookSubscription
from services.gateway.webhooks.store_mongo import MongoWebhookStore
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.config import WebhookSettings
from shared.events import ScoreCompleted
from shared.jobs import new_job
from shared.models import JobSpec, Result
from shared.store_sqlite import SqliteJobStore
from shared.supervise import Supervisor

MONGO_URL = os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")
TIMEOUT_S = 0.5
DELAYS = [0.3, 0.6]  # three attempts; no jitter, so the schedule is exact
SLACK_S = 0.6  # claim, store round trips and the attempt itself, on a shared 2-core machine

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class Receivers:
    """One aiohttp app and one raw TCP server; ``hits[path]`` counts requests per behaviour."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.good_arrivals: list[float] = []
        self.good_paths: list[str] = []
        self.release = asyncio.Event()
        self.hanging = self.hanging_max = 0  # requests held open at once, and the most seen

    def _hit(self, name: str) -> None:
        self.hits[name] = self.hits.get(name, 0) + 1

    async def good(self, request: web.Request) -> web.Response:
        await request.read()
        self.good_arrivals.append(time.monotonic())
        self.good_paths.append(request.path)
        self._hit("good")
        return web.Response(status=204)

    async def status_500(self, request: web.Request) -> web.Response:
        self._hit("500")
        return web.Response(status=500, text="broken")

    async def hang(self, request: web.Request) -> web.Response:
        self._hit("hang")
        self.hanging += 1
        self.hanging_max = max(self.hanging_max, self.hanging)
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
        finally:
            self.hanging -= 1
        return web.Response(status=204)

    async def redirect(self, request: web.Request) -> web.Response:
        self._hit("redirect")
        raise web.HTTPTemporaryRedirect("/good")  # 307 keeps the POST: must still not be followed

    async def slow_huge(self, request: web.Request) -> web.StreamResponse:
        self._hit("slow-huge")
        response = web.StreamResponse(status=503)
        response.content_length = 1 << 30  # announces 1 GiB, trickles it
        await response.prepare(request)
        chunk = b"x" * 65536
        with suppress(ConnectionError, asyncio.CancelledError):
            for _ in range(200):
                await response.write(chunk)
                await asyncio.sleep(0.05)
        return response

    async def raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``/reset``: RST instead of an answer. ``/close-mid``: half a status line, then FIN."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if path.startswith("/reset"):
                self._hit("reset")
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            self._hit("close-mid")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: appl")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def receivers():
    rec = Receivers()
    app = web.Application()
    app.router.add_post("/good/{tail:.*}", rec.good)
    app.router.add_post("/good", rec.good)
    app.router.add_post("/500", rec.status_500)
    app.router.add_post("/hang", rec.hang)
    app.router.add_post("/redirect", rec.redirect)
    app.router.add_post("/slow-huge", rec.slow_huge)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    raw = await asyncio.start_server(rec.raw, "127.0.0.1", 0)
    rec.http = f"http://127.0.0.1:{server.port}"
    rec.tcp = f"http://127.0.0.1:{raw.sockets[0].getsockname()[1]}"
    yield rec
    rec.release.set()
    raw.close()
    await raw.wait_closed()
    await server.close()


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
async def hooks(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    else:
        store = MongoWebhookStore.from_url(MONGO_URL, f"test_hookfaults_{uuid.uuid4().hex[:12]}")
    await store.init()
    yield store
    if request.param == "mongo":
        await store._client.drop_database(store._subs.database.name)
    await store.close()


@pytest.fixture
async def jobs(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.init()
    yield store
    await store.close()


def _settings(**overrides):
    return WebhookSettings.model_validate(
        {
            "allow_private_targets": ["127.0.0.1"],
            "timeout_s": TIMEOUT_S,
            "retry_delays_s": DELAYS,
            **overrides,
        }
    )


async def _job(jobs, submitter):
    job = new_job(JobSpec(scorer="classification_f1"), workspace="/tmp/ws", submitter=submitter)
    await jobs.create(job)
    return job


def _event(job_id):
    return ScoreCompleted(
        job_id=job_id,
        result=Result(summary={"f1_macro": 0.5}),
        scorer="classification_f1",
        scorer_version="1",
    )


class Running:
    """The dispatcher as the gateway runs it: ``run`` under a Supervisor; health sampled."""

    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self.dispatcher = dispatcher
        self.supervisor = Supervisor("gateway", backoff_s=0.05)
        self.unhealthy_seen: list[list[str]] = []

    async def __aenter__(self) -> Running:
        self.dispatcher.supervise(self.supervisor)
        self._sampler = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            bad = self.supervisor.unhealthy()
            health = self.supervisor.health()["webhook-dispatcher"]
            if bad or health.failures:
                self.unhealthy_seen.append(bad or [f"failures={health.failures}"])
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        self._sampler.cancel()
        await asyncio.gather(self._sampler, return_exceptions=True)
        await self.supervisor.close()


async def _settled(hooks, subs, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {s.id: await hooks.list_deliveries(s.id) for s in subs}
        if all(d and d[0].status is not DeliveryStatus.PENDING for d in found.values()):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries still pending after {timeout}s: {found}")


BAD = {
    "500": ("http", "/500", "HTTP 500"),
    "hang": ("http", "/hang", f"timed out after {TIMEOUT_S}s"),
    "redirect": ("http", "/redirect", "HTTP 307"),
    "slow-huge": ("http", "/slow-huge", "HTTP 503"),
    "reset": ("tcp", "/reset", "ClientOSError: "),
    "close-mid": ("tcp", "/close-mid", "ServerDisconnectedError: "),
}


async def test_every_failing_receiver_is_retried_on_schedule_then_failed(hooks, jobs, receivers):
    """All six at once, each its own tenant, next to a good tenant."""
    subs = {}
    for name, (kind, path, _) in BAD.items():
        base = receivers.http if kind == "http" else receivers.tcp
        subs[name] = WebhookSubscription(
            owner=f"tenant-{name}", url=base + path, event_types=["score.completed"]
        )
    good = WebhookSubscription(
        owner="alice", url=f"{receivers.http}/good/alice", event_types=["score.completed"]
    )
    for sub in [*subs.values(), good]:
        await hooks.add_subscription(sub)
    dispatcher = WebhookDispatcher(hooks, jobs, _settings(), jitter=lambda: 0.0)
    async with Running(dispatcher) as running:
        for name in BAD:
            await dispatcher.on_event(_event((await _job(jobs, f"tenant-{name}")).job_id))
        sent = time.monotonic()
        await dispatcher.on_event(_event((await _job(jobs, "alice")).job_id))
        found = await _settled(hooks, [*subs.values(), good])
        assert running.unhealthy_seen == []  # healthy, and not one failure, throughout
    [delivered] = found[good.id]
    assert delivered.status is DeliveryStatus.DELIVERED
    assert receivers.good_arrivals[0] - sent < 1.0  # not held behind the hanging receivers
    for name, (_, _, error) in BAD.items():
        [delivery] = found[subs[name].id]
        assert delivery.status is DeliveryStatus.FAILED, name
        attempts = delivery.attempts
        assert len(attempts) == len(DELAYS) + 1, (name, attempts)
        assert receivers.hits[name] == len(DELAYS) + 1, name  # each attempt reached it, once
        for attempt in attempts:
            assert attempt.error.startswith(error), (name, attempt)
            assert len(attempt.error) <= 300  # what a receiver sends back is kept bounded
            assert attempt.duration_ms < (TIMEOUT_S + SLACK_S) * 1000, (name, attempt)
        for i, delay in enumerate(DELAYS):  # `at` is when an attempt ended
            gap = (attempts[i + 1].at - attempts[i].at).total_seconds()
            took = attempts[i + 1].duration_ms / 1000
            assert delay <= gap + 0.002 <= delay + took + SLACK_S, (name, i, gap, attempts)
    assert receivers.hits.get("good", 0) == 1  # the 307 was never followed to /good


async def test_a_hanging_tenant_never_holds_the_other_tenants(hooks, jobs, receivers):
    """Mallory points 12 subscriptions at a receiver that hangs past the timeout; Alice's
    deliveries, one event every 0.1 s, still arrive within a fraction of that timeout."""
    for i in range(12):
        await hooks.add_subscription(
            WebhookSubscription(
                owner="mallory", url=f"{receivers.http}/hang", event_types=["score.completed"]
            )
        )
    alice = WebhookSubscription(
        owner="alice", url=f"{receivers.http}/good/alice", event_types=["score.completed"]
    )
    await hooks.add_subscription(alice)
    dispatcher = WebhookDispatcher(
        hooks, jobs, _settings(timeout_s=2.0, retry_delays_s=[0.2]), jitter=lambda: 0.0
    )
    latencies = []
    async with Running(dispatcher) as running:
        mallory_job = await _job(jobs, "mallory")
        await dispatcher.on_event(_event(mallory_job.job_id))  # 12 hanging deliveries
        await asyncio.sleep(0.2)  # they are all in flight or deferred now
        for _ in range(10):
            job = await _job(jobs, "alice")
            before = len(receivers.good_arrivals)
            sent = time.monotonic()
            await dispatcher.on_event(_event(job.job_id))
            for _ in range(100):
                if len(receivers.good_arrivals) > before:
                    break
                await asyncio.sleep(0.01)
            latencies.append(receivers.good_arrivals[-1] - sent if receivers.good_arrivals else 9)
            await asyncio.sleep(0.1)
        assert running.unhealthy_seen == []
    assert len(receivers.good_arrivals) == 10
    print(f"alice latency while mallory hangs: max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 1.0, latencies  # the hang lasts 2 s
    assert receivers.hanging_max <= 4  # at most PER_TENANT of Mallory's attempts at once
    delivered = await hooks.list_deliveries(alice.id)
    assert all(d.status is DeliveryStatus.DELIVERED and len(d.attempts) == 1 for d in delivered)


async def test_a_hanging_tenants_backlog_never_holds_the_other_tenants(hooks, jobs, receivers):
    """Mallory's one subscription has 200 deliveries queued to a receiver that hangs: they are
    older than Alice's, yet claims skip a tenant whose share is in use, so Alice's delivery is
    claimed and sent at once (not after Mallory's backlog, nor after a claim round over it)."""
    mallory = WebhookSubscription(
        owner="mallory", url=f"{receivers.http}/hang", event_types=["score.completed"]
    )
    alice = WebhookSubscription(
        owner="alice", url=f"{receivers.http}/good/alice", event_types=["score.completed"]
    )
    for sub in (mallory, alice):
        await hooks.add_subscription(sub)
    dispatcher = WebhookDispatcher(
        hooks, jobs, _settings(timeout_s=5.0, retry_delays_s=[1.0]), jitter=lambda: 0.0
    )
    job = await _job(jobs, "mallory")
    for _ in range(200):
        await dispatcher.on_event(_event(job.job_id).model_copy(update={"event_id": uuid.uuid4()}))
    async with Running(dispatcher) as running:
        await asyncio.sleep(0.5)  # Mallory's share is in flight, hanging
        sent = time.monotonic()
        await dispatcher.on_event(_event((await _job(jobs, "alice")).job_id))
        for _ in range(450):
            if receivers.good_arrivals:
                break
            await asyncio.sleep(0.01)
        assert receivers.good_arrivals, "Alice's delivery never arrived"
        latency = receivers.good_arrivals[0] - sent
        print(f"alice latency behind a 200-delivery hanging backlog: {latency * 1000:.0f} ms")
        # behind Mallory's backlog Alice would wait out at least one 5 s hang; the bound sits
        # under that, not at a speed (a loaded CI machine once took 2.2 s)
        assert latency < 4.0
        assert running.unhealthy_seen == []
    assert receivers.hanging_max <= 4  # Mallory's share: 4 at once


class CountingStore:
    """The webhook store under test, counting what the dispatcher asks of it."""

    def __init__(self, store) -> None:
        self._store = store
        self.defers = 0
        self.claimed_per_round: list[dict[str, int]] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def defer(self, delivery_id, next_attempt_at):
        self.defers += 1
        await self._store.defer(delivery_id, next_attempt_at)

    async def claim_due(self, *args, **kwargs):
        claimed = await self._store.claim_due(*args, **kwargs)
        tenants: dict[str, int] = {}
        for delivery in claimed:
            tenants[delivery.tenant] = tenants.get(delivery.tenant, 0) + 1
        self.claimed_per_round.append(tenants)
        return claimed


async def test_a_backlog_to_one_tenant_is_claimed_within_its_share_and_never_deferred(
    hooks, jobs, receivers
):
    """A deadline burst to one subscriber: 60 deliveries queued for Mallory, then one for Alice.
    A claim takes up to 5 shares of a tenant (20, at this test's 0.5 s timeout) and those beyond
    the 4 running wait in the dispatcher, still claimed, for the share to pass on: nothing is
    claimed only to be put back
    (before, every round claimed 20 and deferred 16, two writes each, and a 2,000-job burst on
    FerretDB reached its subscriber at ~0.5 deliveries/s), and a round, which costs a sorted
    query over the whole queue, serves 20 deliveries, not 4. Alice, queued behind all of them,
    is still served while Mallory's backlog drains."""
    counting = CountingStore(hooks)
    for owner, path in (("mallory", "good/mallory"), ("alice", "good/alice")):
        await hooks.add_subscription(
            WebhookSubscription(
                owner=owner, url=f"{receivers.http}/{path}", event_types=["score.completed"]
            )
        )
    dispatcher = WebhookDispatcher(counting, jobs, _settings(), jitter=lambda: 0.0)
    mallory = await _job(jobs, "mallory")
    for _ in range(60):
        await dispatcher.on_event(
            _event(mallory.job_id).model_copy(update={"event_id": uuid.uuid4()})
        )
    await dispatcher.on_event(_event((await _job(jobs, "alice")).job_id))
    async with Running(dispatcher) as running:
        for _ in range(3000):
            if receivers.hits.get("good", 0) >= 61:
                break
            await asyncio.sleep(0.01)
        assert receivers.hits.get("good", 0) == 61
        assert running.unhealthy_seen == []
    assert counting.defers == 0
    # a round claims at most WAVES shares of a tenant; those beyond its 4 running wait here
    most = PER_TENANT * waves(TIMEOUT_S)
    assert most == 20
    assert all(n <= most for rnd in counting.claimed_per_round for n in rnd.values())
    first = next(rnd for rnd in counting.claimed_per_round if rnd)
    assert first == {"mallory": most}  # one round, five shares: not 4 a round
    # Alice's delivery was queued after all 60 of Mallory's, yet arrives in the first half
    assert receivers.good_paths.index("/good/alice") < 30, receivers.good_paths


@pytest.mark.parametrize(
    ("timeout_s", "expected"),
    [(0.5, 5), (5.0, 5), (10.0, 3), (15.0, 2), (20.0, 2), (30.0, 1), (60.0, 1)],
)
def test_a_claim_takes_only_the_waves_that_finish_within_it(timeout_s, expected):
    """Every wave a claim takes starts and times out inside the claim (timeout + 30 s) with 10 s
    to spare, so no delivery waiting here can be claimed and attempted by another replica."""
    assert waves(timeout_s) == expected
    assert (expected * timeout_s) <= timeout_s + 30 - 10
