"""SSRF URL forms (issue 7): every way of writing "this machine" or "the private network" in a
webhook URL, against the real dispatcher and a real receiver listening on 127.0.0.1 (and one on
[::1]) that must never be reached.

The control shows the forms are real: with the form allow-listed, the same URL does reach the
receiver (IPv4-mapped IPv6 connects to the IPv4 listener on Linux). Forms refused when accepted
(shared.urls) are also stored directly, as a subscription made before URLs were checked would be:
they fail alone, with no request sent.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.gateway.webhooks.dispatcher import WebhookDispatcher
from services.gateway.webhooks.models import DeliveryStatus, WebhookSubscription
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.config import WebhookSettings
from shared.errors import AutoscorerError
from shared.events import ScoreCompleted
from shared.jobs import new_job
from shared.models import JobSpec, Result
from shared.store_sqlite import SqliteJobStore
from shared.supervise import Supervisor
from shared.urls import check_target_url

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")
TYPE = "score.completed"

# {port} is the IPv4 receiver's, {port6} the IPv6 loopback receiver's
FORMS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://127.0.0.2:{port}/",
    "http://0.0.0.0:{port}/",
    "http://[::1]:{port6}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/",
    "http://[::127.0.0.1]:{port}/",
    "http://[64:ff9b::7f00:1]:{port}/",
    "http://[64:ff9b::a9fe:a9fe]:{port}/",
    "http://[64:ff9b:1::a9fe:a9fe]:{port}/",
    "http://[2002:7f00:1::1]:{port}/",
    "http://[2002:a9fe:a9fe::]:{port}/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/",
    "http://169.254.169.254:{port}/latest/meta-data/",
    "http://10.0.0.1:{port}/",
    "http://[fd00:ec2::254]:{port}/",
    "http://[fe80::1]:{port}/",
    # refused when accepted; stored anyway to show the dispatcher copes
    "http://2130706433:{port}/",
    "http://0x7f.0.0.1:{port}/",
    "http://127.1:{port}/",
    "http://[::ffff:127.0.0.1%25lo]:{port}/",
]


class Receiver:
    def __init__(self) -> None:
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=204)


@pytest.fixture
async def receiver():
    rec = Receiver()
    servers = []
    for host in ("127.0.0.1", "::1"):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", rec.handle)
        server = TestServer(app, host=host)
        await server.start_server()
        servers.append(server)
    rec.port, rec.port6 = servers[0].port, servers[1].port
    yield rec
    for server in servers:
        await server.close()


@pytest.fixture
async def stores(tmp_path):
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    jobs = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await hooks.init()
    await jobs.init()
    yield hooks, jobs
    await hooks.close()
    await jobs.close()


async def _deliver_all(hooks, jobs, urls, allow):
    subs = [
        WebhookSubscription(
            owner="ops", owner_is_admin=True, url=u, event_types=["score.completed"]
        )
        for u in urls
    ]
    for sub in subs:
        await hooks.add_subscription(sub)
    settings = WebhookSettings(allow_private_targets=allow, timeout_s=1.0, retry_delays_s=[0.05])
    dispatcher = WebhookDispatcher(hooks, jobs, settings, jitter=lambda: 0.0)
    supervisor = Supervisor("gateway")
    dispatcher.supervise(supervisor)
    try:
        job = new_job(JobSpec(scorer="classification_f1"), workspace="/ws", submitter="x")
        await jobs.create(job)
        await dispatcher.on_event(
            ScoreCompleted(
                job_id=job.job_id,
                result=Result(summary={"f1_macro": 1.0}),
                scorer="classification_f1",
                scorer_version="1",
            )
        )
        for _ in range(300):
            found = {s.url: (await hooks.list_deliveries(s.id))[0] for s in subs}
            if all(d.status is not DeliveryStatus.PENDING for d in found.values()):
                break
            await asyncio.sleep(0.02)
        health = supervisor.health()["webhook-dispatcher"]
        assert health.healthy and health.failures == 0
        return found
    finally:
        await supervisor.close()


async def test_no_form_of_a_private_address_reaches_the_receiver(stores, receiver):
    hooks, jobs = stores
    urls = [f.format(port=receiver.port, port6=receiver.port6) for f in FORMS]
    found = await _deliver_all(hooks, jobs, urls, allow=[])
    assert receiver.hits == 0
    for url, delivery in found.items():
        assert delivery.status is DeliveryStatus.FAILED, url
        for attempt in delivery.attempts:
            assert attempt.error.startswith(("blocked", "invalid target URL")), (url, attempt)
        try:
            check_target_url(url)
        except AutoscorerError:
            assert len(delivery.attempts) == 1, url  # never valid: not retried
        else:
            assert len(delivery.attempts) == 2, url  # blocked now; DNS/policy may change


@pytest.mark.parametrize(
    ("form", "allow"),
    [
        ("http://[::ffff:127.0.0.1]:{port}/", "::ffff:127.0.0.1/128"),
        ("http://127.0.0.1:{port}/", "127.0.0.1"),
        ("http://[::1]:{port6}/", "::1"),
    ],
)
async def test_control_the_same_form_allow_listed_does_reach_it(stores, receiver, form, allow):
    hooks, jobs = stores
    url = form.format(port=receiver.port, port6=receiver.port6)
    found = await _deliver_all(hooks, jobs, [url], allow=[allow])
    assert found[url].status is DeliveryStatus.DELIVERED and receiver.hits == 1
