"""Class 1 of issue 7: one bad input must not stop a loop.

The gateway as its composition root builds it (create_gateway: app, webhook dispatcher under the
gateway's Supervisor), on the embedded parts (in-memory bus, SQLite stores), with a real HTTP
receiver on 127.0.0.1. A URL like ``http://[::1`` is refused when accepted (webhook API, job
submission, JobSubmitted); one already stored (accepted before URLs were checked) fails only its
own delivery; /readyz names a loop that died or keeps failing.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from services.cli.serve import supervisors
from services.gateway.health import report_loops
from services.gateway.main import create_gateway
from services.gateway.webhooks.models import DeliveryStatus, WebhookSubscription
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.events import JobSubmitted, ScoreCompleted
from shared.jobs import new_job
from shared.models import JobSpec, Result
from shared.store_sqlite import SqliteJobStore
from shared.supervise import Supervisor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BAD_URLS = [
    "http://[::1",
    "http://[::1]x/",
    "http://a.com:99999/",
    "http://a.com:0/",
    "http://a.com:/",
    "http://user:pw@a.com/",
    "ftp://a.com/",
    "javascript:alert(1)",
    "http://",
    "http:///path",
    "http://a..com/",
    "http://" + "a" * 64 + ".com/",
    "http://exa mple.com/",
    "http://a.com\\@b.com/",
    "http://127.1/",
    "http://2130706433/",
    "http://[fe80::1%25eth0]/",
    "https://a.com/" + "x" * 2100,
]

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class Receiver:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        await request.read()
        return web.Response(status=204)


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.base = f"http://127.0.0.1:{server.port}"
    yield rec
    await server.close()


class Gw:
    def __init__(self, service, client, bus, jobs, hooks):
        self.service, self.client, self.bus, self.jobs, self.hooks = (
            service,
            client,
            bus,
            jobs,
            hooks,
        )


@pytest.fixture
async def gw(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(EXAMPLES / "classification", root / "ws" / "classification")
    settings = Settings.model_validate(
        {
            "gateway": {
                "data_root": str(root),
                "api_keys": [
                    {"key": "alice-key", "subject": "alice"},
                    {"key": "ops-key", "subject": "ops", "role": "admin"},
                ],
                "webhooks": {
                    "allow_private_targets": ["127.0.0.1"],
                    "timeout_s": 1.0,
                    "retry_delays_s": [0.05],
                },
            },
            "scorer": {"plugin_dir": str(tmp_path / "plugins")},
        }
    )
    bus = MemoryBus()
    jobs = SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    await jobs.init()
    await hooks.init()
    service = await create_gateway(settings, jobs, bus, hooks)
    await bus.start()
    service.start()
    try:
        async with TestClient(TestServer(service.app)) as client:
            yield Gw(service, client, bus, jobs, hooks)
    finally:
        await service.close()
        await bus.close()
        await hooks.close()
        await jobs.close()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("url", BAD_URLS)
async def test_the_webhook_api_refuses_a_url_it_could_not_call(gw, url):
    resp = await gw.client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": ["score.completed"]},
        headers=_auth("ops-key"),
    )
    body = await resp.json()
    assert resp.status == 400, body
    assert body["ok"] is False and body["error"]["code"] == "CONFIG_VALIDATION_ERROR"
    assert url not in await resp.text()  # never echoed
    assert await gw.hooks.list_subscriptions() == []


@pytest.mark.parametrize("url", ["http://[::1", "http://u@a.com/", "http://a.com:70000/"])
async def test_a_job_with_a_bad_callback_url_is_refused(gw, url):
    resp = await gw.client.post(
        "/v1/jobs",
        json={"workspace": "ws/classification", "callback_url": url},
        headers=_auth("alice-key"),
    )
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "CONFIG_VALIDATION_ERROR", body
    spec = JobSpec(scorer="classification_f1")
    with pytest.raises(ValidationError, match="invalid target URL"):
        JobSubmitted(
            job_id=spec.job_id, spec=spec, workspace="/ws", submitter="alice", callback_url=url
        )


async def test_a_stored_bad_url_fails_alone_and_delivery_goes_on(gw, receiver):
    """Subscriptions and jobs accepted before URLs were checked: each bad one fails once, for
    good, and every other delivery still arrives; the dispatcher loop never fails."""
    bad_sub = WebhookSubscription(
        owner="mallory", owner_is_admin=True, url="http://[::1", event_types=["score.completed"]
    )
    good_sub = WebhookSubscription(
        owner="ops",
        owner_is_admin=True,
        url=f"{receiver.base}/ops",
        event_types=["score.completed"],
    )
    for sub in (bad_sub, good_sub):
        await gw.hooks.add_subscription(sub)
    jobs = []
    for callback in ("http://[::1", "http://a.com:99999/", f"{receiver.base}/cb"):
        job = new_job(JobSpec(scorer="classification_f1"), workspace="/ws", submitter="alice")
        job = job.model_copy(update={"callback_url": callback})
        await gw.jobs.create(job)
        jobs.append(job)
    for job in jobs:
        await gw.bus.publish(
            ScoreCompleted(
                job_id=job.job_id,
                result=Result(summary={"f1_macro": 0.5}),
                scorer="classification_f1",
                scorer_version="1",
            )
        )

    async def arrived():
        return len(receiver.paths) == 4  # 3 events to /ops, 1 callback

    await _until(arrived)
    assert sorted(receiver.paths) == ["/cb"] + ["/ops"] * 3

    async def bad_failed():
        found = await gw.hooks.list_deliveries(bad_sub.id)
        return len(found) == 3 and all(d.status is DeliveryStatus.FAILED for d in found)

    await _until(bad_failed)
    for delivery in await gw.hooks.list_deliveries(bad_sub.id):
        [attempt] = delivery.attempts  # not retried: it can never succeed
        assert attempt.error.startswith("invalid target URL")
    health = gw.service.supervisor.health()["webhook-dispatcher"]
    assert health.failures == 0 and health.healthy
    resp = await gw.client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["data"]["checks"]["loops"] == "ok"


async def test_readyz_names_a_loop_that_keeps_failing(gw):
    other = Supervisor("scheduler", backoff_s=0.01, max_backoff_s=0.01)

    async def broken():
        raise OSError("store gone")

    report_loops(gw.service.app, [other])
    other.every("relay", 0.01, broken)
    try:
        await asyncio.sleep(0.2)
        resp = await gw.client.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["ok"] is False and body["error"]["code"] == "BACKEND_UNAVAILABLE"
        assert "loop scheduler/relay" in body["error"]["message"]
        details = body["error"]["details"]
        assert details["loop scheduler/relay"].startswith("failed")
        assert details["loops"].startswith("unhealthy")
        assert "store gone" not in await resp.text()  # the loop's error stays in the logs
    finally:
        await other.close()


async def test_readyz_names_the_dispatcher_when_its_task_ended(gw):
    assert (await gw.client.get("/readyz")).status == 200
    task = gw.service.supervisor._loops["webhook-dispatcher"].task
    task.cancel()  # as if a bug ended it
    await asyncio.gather(task, return_exceptions=True)
    resp = await gw.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["error"]["details"]["loop gateway/webhook-dispatcher"] == "ended"


def test_serve_reports_the_supervisors_the_services_expose():
    class WithLoops:
        supervisor = Supervisor("scheduler")

    class Without:
        pass

    class Wrong:
        supervisor = "not one"

    assert supervisors(WithLoops(), Without(), Wrong()) == [WithLoops.supervisor]


async def test_serve_readiness_watches_the_loops_of_all_four_services(tmp_path):
    """``autoscorer serve`` (embedded: memory bus, SQLite, local backend): /readyz lists the
    gateway's loops and those of every service that exposes a ``supervisor``."""
    import aiohttp

    from services.cli.serve import serve
    from tests.e2e.harness import make_settings

    settings = make_settings(tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    url = f"http://127.0.0.1:{settings.gateway.port}/readyz"
    try:
        async with aiohttp.ClientSession() as session:
            body = None
            for _ in range(200):
                assert not task.done(), task
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            body = await resp.json()
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        assert body is not None
        loops = body["data"]["loops"]
        assert "gateway/webhook-dispatcher" in loops
        services = {name.split("/")[0] for name in loops}
        print("serve readiness watches", sorted(services))
        assert "scheduler" in services  # the other services' loops, where they have any
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
async def any_hooks(request, tmp_path):
    import os
    import uuid

    from services.gateway.webhooks.store_mongo import MongoWebhookStore

    if request.param == "sqlite":
        store = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    else:
        url = os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")
        store = MongoWebhookStore.from_url(url, f"test_hookrows_{uuid.uuid4().hex[:12]}")
    await store.init()
    yield store
    if request.param == "mongo":
        await store._client.drop_database(store._subs.database.name)
    await store.close()


async def _corrupt(hooks, sub_id: str, delivery_id: str) -> None:
    """A row written by an older or broken version: it no longer parses."""
    if isinstance(hooks, SqliteWebhookStore):
        conn = hooks._d.conn
        await hooks._worker.run(
            "corrupt", conn.execute, "UPDATE webhooks SET doc = '{}' WHERE id = ?", (sub_id,)
        )
        await hooks._worker.run(
            "corrupt",
            conn.execute,
            "UPDATE webhook_deliveries SET doc = '{\"id\": 1}' WHERE id = ?",
            (delivery_id,),
        )
    else:
        await hooks._subs.update_one({"_id": sub_id}, {"$unset": {"owner": ""}})
        await hooks._deliveries.update_one({"_id": delivery_id}, {"$unset": {"url": ""}})


async def test_an_unreadable_stored_row_is_set_aside_and_delivery_goes_on(
    any_hooks, receiver, tmp_path
):
    from services.gateway.webhooks.dispatcher import WebhookDispatcher
    from shared.config import WebhookSettings

    hooks = any_hooks
    jobs = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await jobs.init()
    try:
        settings = WebhookSettings(allow_private_targets=["127.0.0.1"], retry_delays_s=[])
        dispatcher = WebhookDispatcher(hooks, jobs, settings)
        subs = [
            WebhookSubscription(
                owner="ops",
                owner_is_admin=True,
                url=f"{receiver.base}/{n}",
                event_types=["score.completed"],
            )
            for n in ("broken", "fine")
        ]
        for sub in subs:
            await hooks.add_subscription(sub)
        job = new_job(JobSpec(scorer="classification_f1"), workspace="/ws", submitter="x")
        await jobs.create(job)
        event = ScoreCompleted(
            job_id=job.job_id,
            result=Result(summary={"f1_macro": 0.5}),
            scorer="classification_f1",
            scorer_version="1",
        )
        await dispatcher.on_event(event)
        [broken] = await hooks.list_deliveries(subs[0].id)
        await _corrupt(hooks, subs[0].id, broken.id)
        async with dispatcher:
            await dispatcher.deliver_due()  # must not raise
        assert receiver.paths == ["/fine"]
        assert [s.id for s in await hooks.list_subscriptions()] == [subs[1].id]
        assert await hooks.get_subscription(subs[0].id) is None  # the API answers 404
        assert await hooks.list_deliveries(subs[0].id) == []  # the log lists what parses
        second = event.model_copy(update={"event_id": __import__("uuid").uuid4()})
        await dispatcher.on_event(second)  # the unreadable subscription does not stop events
        async with dispatcher:
            await dispatcher.deliver_due()
        assert receiver.paths == ["/fine", "/fine"]
        async with dispatcher:
            assert await dispatcher.deliver_due() == 0  # the broken row is not claimed again
    finally:
        await jobs.close()


async def test_subscriptions_per_owner_are_bounded_and_ids_are_not_echoed(gw):
    from services.gateway.webhooks.api import MAX_PER_OWNER

    body = {"url": "https://hooks.example/x", "event_types": ["score.completed"]}
    for _ in range(MAX_PER_OWNER):
        resp = await gw.client.post("/v1/webhooks", json=body, headers=_auth("alice-key"))
        assert resp.status == 201
    resp = await gw.client.post("/v1/webhooks", json=body, headers=_auth("alice-key"))
    refused = await resp.json()
    assert resp.status == 409 and refused["error"]["code"] == "INVALID_STATE"
    resp = await gw.client.post("/v1/webhooks", json=body, headers=_auth("ops-key"))
    assert resp.status == 201  # another owner's budget is its own
    probe = "wh_" + "A" * 4000
    resp = await gw.client.get(f"/v1/webhooks/{probe}", headers=_auth("alice-key"))
    assert resp.status == 404 and probe not in await resp.text()
