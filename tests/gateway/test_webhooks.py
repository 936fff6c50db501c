"""Webhooks: a real HTTP receiver on 127.0.0.1, the real dispatcher, both webhook stores."""

import asyncio
import os
import uuid
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.gateway.webhooks import signing
from services.gateway.webhooks.dispatcher import WebhookDispatcher
from services.gateway.webhooks.models import DeliveryStatus, WebhookSubscription
from services.gateway.webhooks.store_mongo import MongoWebhookStore
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.config import WebhookSettings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import JobFailed, ScoreCompleted
from shared.jobs import new_job
from shared.models import JobSpec, Result
from shared.store_sqlite import SqliteJobStore

MONGO_URL = os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")


class Receiver:
    """Records requests; answers with the scripted statuses (then 200)."""

    def __init__(self):
        self.requests = []
        self.script = []
        self.delay = 0.0

    async def handle(self, request):
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.script.pop(0) if self.script else 200
        if status == 302:
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=status)


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


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
async def hooks(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    else:
        store = MongoWebhookStore.from_url(MONGO_URL, f"test_hooks_{uuid.uuid4().hex[:12]}")
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
    base = {
        "allow_private_targets": ["127.0.0.1"],
        "timeout_s": 1.0,
        "retry_delays_s": [0.05, 0.05],
    }
    return WebhookSettings.model_validate({**base, **overrides})


async def _job(jobs, submitter="alice", callback_url=None):
    spec = JobSpec(scorer="classification_f1")
    job = new_job(spec, workspace="/tmp/ws", submitter=submitter).model_copy(
        update={"callback_url": callback_url}
    )
    await jobs.create(job)
    return job


def _score_completed(job_id):
    return ScoreCompleted(
        job_id=job_id,
        result=Result(summary={"f1_macro": 0.75}),
        scorer="classification_f1",
        scorer_version="1.0.0",
    )


async def _drain(dispatcher, rounds=20, pause=0.06):
    async with dispatcher:
        for _ in range(rounds):
            await dispatcher.deliver_due()
            await asyncio.sleep(pause)


async def _sub(hooks, receiver, owner="alice", admin=False, types=("score.completed",)):
    sub = WebhookSubscription(
        owner=owner,
        owner_is_admin=admin,
        url=f"{receiver.base}/hook/{owner}",
        event_types=list(types),
    )
    await hooks.add_subscription(sub)
    return sub


async def test_signed_delivery_with_retries_and_a_log(hooks, jobs, receiver):
    job = await _job(jobs)
    sub = await _sub(hooks, receiver)
    receiver.script = [500, 503]
    dispatcher = WebhookDispatcher(hooks, jobs, _settings(retry_delays_s=[0.05, 0.05, 0.05]))
    event = _score_completed(job.job_id)
    await dispatcher.on_event(event)
    await dispatcher.on_event(event)  # a redelivered event adds no second delivery
    await _drain(dispatcher)
    assert len(receiver.requests) == 3
    path, headers, body = receiver.requests[-1]
    assert path == "/hook/alice"
    assert signing.verify(
        sub.secret,
        headers["webhook-id"],
        int(headers["webhook-timestamp"]),
        body,
        headers["webhook-signature"],
    )
    assert len({h["webhook-id"] for _, h, _ in receiver.requests}) == 1  # same id on every retry
    assert ScoreCompleted.model_validate_json(body).result.summary == {"f1_macro": 0.75}
    [delivery] = await hooks.list_deliveries(sub.id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [a.status_code for a in delivery.attempts] == [500, 503, 200]


async def test_schedule_runs_out_and_redirects_are_not_followed(hooks, jobs, receiver):
    job = await _job(jobs)
    sub = await _sub(hooks, receiver)
    receiver.script = [302, 302, 302]
    dispatcher = WebhookDispatcher(hooks, jobs, _settings())
    await dispatcher.on_event(_score_completed(job.job_id))
    await _drain(dispatcher)
    assert [p for p, _, _ in receiver.requests] == ["/hook/alice"] * 3  # never /elsewhere
    [delivery] = await hooks.list_deliveries(sub.id)
    assert delivery.status is DeliveryStatus.FAILED
    assert [a.error for a in delivery.attempts] == ["HTTP 302"] * 3


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "10.0.0.1", "[::1]"])
async def test_ssrf_guard_refuses_non_global_targets(tmp_path, jobs, host):
    hooks = SqliteWebhookStore(tmp_path / "h.sqlite3")
    await hooks.init()
    try:
        job = await _job(jobs)
        sub = WebhookSubscription(
            owner="alice", url=f"http://{host}:9/x", event_types=["score.completed"]
        )
        await hooks.add_subscription(sub)
        dispatcher = WebhookDispatcher(
            hooks, jobs, _settings(allow_private_targets=[], timeout_s=0.5)
        )
        await dispatcher.on_event(_score_completed(job.job_id))
        await _drain(dispatcher, rounds=5)
        [delivery] = await hooks.list_deliveries(sub.id)
        assert delivery.status is DeliveryStatus.FAILED
        assert all(a.error.startswith("blocked") for a in delivery.attempts), delivery.attempts
    finally:
        await hooks.close()


async def test_subscribers_only_hear_about_their_own_jobs(hooks, jobs, receiver):
    job = await _job(jobs, submitter="alice")
    bob = await _sub(hooks, receiver, owner="bob")
    ops = await _sub(hooks, receiver, owner="ops", admin=True)
    other_type = await _sub(hooks, receiver, owner="alice", types=("job.failed",))
    dispatcher = WebhookDispatcher(hooks, jobs, _settings())
    await dispatcher.on_event(_score_completed(job.job_id))
    await _drain(dispatcher, rounds=2)
    assert [p for p, _, _ in receiver.requests] == ["/hook/ops"]
    assert await hooks.list_deliveries(bob.id) == []
    assert await hooks.list_deliveries(other_type.id) == []
    assert len(await hooks.list_deliveries(ops.id)) == 1


async def test_deliveries_survive_a_restart(tmp_path, jobs, receiver):
    path = tmp_path / "hooks.sqlite3"
    hooks = SqliteWebhookStore(path)
    await hooks.init()
    job = await _job(jobs)
    sub = await _sub(hooks, receiver)
    await WebhookDispatcher(hooks, jobs, _settings()).on_event(_score_completed(job.job_id))
    await hooks.close()  # the gateway stops before delivering
    reopened = SqliteWebhookStore(path)
    await reopened.init()
    try:
        await _drain(WebhookDispatcher(reopened, jobs, _settings()), rounds=2)
        assert len(receiver.requests) == 1
        assert (await reopened.list_deliveries(sub.id))[0].status is DeliveryStatus.DELIVERED
    finally:
        await reopened.close()


async def test_per_attempt_timeout(hooks, jobs, receiver):
    job = await _job(jobs)
    sub = await _sub(hooks, receiver)
    receiver.delay = 1.0
    dispatcher = WebhookDispatcher(hooks, jobs, _settings(timeout_s=0.2, retry_delays_s=[]))
    await dispatcher.on_event(_score_completed(job.job_id))
    await _drain(dispatcher, rounds=1)
    [delivery] = await hooks.list_deliveries(sub.id)
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.attempts[0].error == "timed out after 0.2s"


async def test_callback_url_gets_the_final_event(hooks, jobs, receiver):
    job = await _job(jobs, callback_url=None)
    job = await _job(jobs, callback_url=f"{receiver.base}/callback")
    dispatcher = WebhookDispatcher(hooks, jobs, _settings(), callback_secret="whsec_" + "QUJD" * 8)
    error = AutoscorerError(ErrorCode.TIMEOUT_ERROR, "too slow", stage=Stage.EXECUTION).to_info()
    await dispatcher.on_event(JobFailed(job_id=job.job_id, error=error))
    await _drain(dispatcher, rounds=2)
    [(path, headers, body)] = receiver.requests
    assert path == "/callback"
    assert signing.verify(
        "whsec_" + "QUJD" * 8,
        headers["webhook-id"],
        int(headers["webhook-timestamp"]),
        body,
        headers["webhook-signature"],
    )


async def test_claims_keep_two_dispatchers_from_sending_twice(hooks, jobs, receiver):
    job = await _job(jobs)
    await _sub(hooks, receiver)
    first = WebhookDispatcher(hooks, jobs, _settings())
    await first.on_event(_score_completed(job.job_id))
    claimed = await hooks.claim_due(
        __import__("shared.jobs", fromlist=["now_ms"]).now_ms(), timedelta(seconds=60), 10
    )
    assert len(claimed) == 1
    await _drain(WebhookDispatcher(hooks, jobs, _settings()), rounds=1)
    assert receiver.requests == []  # claimed by the first dispatcher


async def test_run_loop_delivers_promptly_and_stops(hooks, jobs, receiver):
    job = await _job(jobs)
    await _sub(hooks, receiver)
    dispatcher = WebhookDispatcher(hooks, jobs, _settings())
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(0.1)
    await dispatcher.on_event(_score_completed(job.job_id))
    for _ in range(50):
        if receiver.requests:
            break
        await asyncio.sleep(0.02)
    assert len(receiver.requests) == 1
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_webhook_api(tmp_path, receiver):
    from aiohttp.test_utils import TestClient

    from services.gateway.app import create_app
    from shared.bus_memory import MemoryBus
    from shared.config import ApiKey, GatewaySettings

    settings = GatewaySettings(
        data_root=tmp_path,
        api_keys=[
            ApiKey(key="a", subject="alice"),
            ApiKey(key="b", subject="bob"),
            ApiKey(key="z", subject="ops", role="admin"),
        ],
    )
    jobs, hooks, bus = (
        SqliteJobStore(tmp_path / "j.db"),
        SqliteWebhookStore(tmp_path / "h.db"),
        MemoryBus(),
    )
    await jobs.init()
    await hooks.init()
    await bus.start()
    app = create_app(settings, jobs, bus, (), hooks)
    try:
        async with TestClient(TestServer(app)) as client:

            def auth(k):
                return {"Authorization": f"Bearer {k}"}

            resp = await client.post(
                "/v1/webhooks",
                json={"url": f"{receiver.base}/x", "event_types": ["score.completed"]},
                headers=auth("a"),
            )
            created = (await resp.json())["data"]
            assert resp.status == 201 and created["secret"].startswith("whsec_")
            bad = await client.post(
                "/v1/webhooks", json={"url": "ftp://x", "event_types": ["nope"]}, headers=auth("a")
            )
            assert bad.status == 400
            listed = (await (await client.get("/v1/webhooks", headers=auth("a"))).json())["data"][
                "webhooks"
            ]
            assert [w["id"] for w in listed] == [created["id"]] and "secret" not in listed[0]
            assert (
                await client.get(f"/v1/webhooks/{created['id']}", headers=auth("b"))
            ).status == 404
            assert (
                await client.get(f"/v1/webhooks/{created['id']}", headers=auth("z"))
            ).status == 200
            log = await client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=auth("a"))
            assert (await log.json())["data"]["deliveries"] == []
            assert (
                await client.delete(f"/v1/webhooks/{created['id']}", headers=auth("a"))
            ).status == 200
            assert (await client.get("/v1/webhooks", headers=auth("a"))).status == 200
            assert (await hooks.list_subscriptions()) == []
    finally:
        await bus.close()
        await hooks.close()
        await jobs.close()
