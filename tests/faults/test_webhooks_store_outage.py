"""The webhook store goes away under a running dispatcher (a FerretDB of the test's own, killed
with SIGKILL and started again on the same data): the dispatcher loop is reported unhealthy while
the store is gone, is never ended, becomes healthy again once the store is back, and delivers
what was queued. Nothing is lost: the deliveries are the store's rows."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pymongo import AsyncMongoClient

from services.gateway.webhooks.dispatcher import WebhookDispatcher
from services.gateway.webhooks.models import DeliveryStatus, WebhookSubscription
from services.gateway.webhooks.store_mongo import MongoWebhookStore
from shared.config import WebhookSettings
from shared.events import ScoreCompleted
from shared.jobs import new_job
from shared.models import JobSpec, Result
from shared.store_sqlite import SqliteJobStore
from shared.supervise import Supervisor

pytestmark = [pytest.mark.mongo, pytest.mark.slow, pytest.mark.usefixtures("no_leaked_tasks")]


async def _until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)
    return time.monotonic()


async def test_the_dispatcher_outlives_a_store_outage(private_ferretdb, tmp_path):
    arrived: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        arrived.append((await request.json())["job_id"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()
    client: AsyncMongoClient = AsyncMongoClient(
        private_ferretdb.url, serverSelectionTimeoutMS=1000, timeoutMS=2000
    )
    hooks = MongoWebhookStore(client, f"hooks_{uuid.uuid4().hex[:8]}", owns_client=True)
    jobs = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await hooks.init()
    await jobs.init()
    settings = WebhookSettings(allow_private_targets=["127.0.0.1"], retry_delays_s=[0.2])
    dispatcher = WebhookDispatcher(hooks, jobs, settings)
    supervisor = Supervisor(
        "gateway", backoff_s=0.1, max_backoff_s=0.5, unhealthy_after=3, recover_after_s=1.0
    )
    try:
        sub = WebhookSubscription(
            owner="ops",
            owner_is_admin=True,
            url=f"http://127.0.0.1:{receiver.port}/hook",
            event_types=["score.completed"],
        )
        await hooks.add_subscription(sub)
        events = []
        for _ in range(2):
            job = new_job(JobSpec(scorer="classification_f1"), workspace="/ws", submitter="x")
            await jobs.create(job)
            events.append(
                ScoreCompleted(
                    job_id=job.job_id,
                    result=Result(summary={"f1_macro": 0.5}),
                    scorer="classification_f1",
                    scorer_version="1",
                )
            )
        dispatcher.supervise(supervisor)
        await dispatcher.on_event(events[0])
        await _until(lambda: len(arrived) == 1, 10, "first delivery")

        private_ferretdb.stop()
        down = time.monotonic()
        unhealthy_at = await _until(
            lambda: supervisor.unhealthy() == ["webhook-dispatcher"], 30, "reported unhealthy"
        )
        health = supervisor.health()["webhook-dispatcher"]
        assert health.last_error.startswith("STORE_ERROR") and not health.ended

        private_ferretdb.start()
        up = time.monotonic()
        for _ in range(100):  # the bus would redeliver an event its handler failed on
            try:
                await dispatcher.on_event(events[1])
                break
            except Exception:
                await asyncio.sleep(0.2)
        await _until(lambda: len(arrived) == 2, 30, "delivery after the outage")
        healthy_at = await _until(lambda: supervisor.unhealthy() == [], 30, "healthy again")
        print(
            f"store outage: unhealthy {unhealthy_at - down:.1f}s after the kill, "
            f"delivered and healthy {healthy_at - up:.1f}s after the restart"
        )
        assert arrived == [events[0].job_id, events[1].job_id]  # each exactly once
        [second, first] = await hooks.list_deliveries(sub.id)
        assert first.status is second.status is DeliveryStatus.DELIVERED
    finally:
        await supervisor.close()
        await hooks.close()
        await jobs.close()
        await receiver.close()
