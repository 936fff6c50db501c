"""One job, one insert: the gateway stores its job (with ``JobSubmitted`` in its outbox) and the
scheduler, hearing that event, reads the job instead of inserting it again; a platform's
``JobSubmitted`` (no job stored yet) is inserted by the scheduler. Both build the job with
``shared.jobs.job_from_submitted``.

The store is the real SQLite store; a subclass counts ``create`` calls, since no real part
reports how often it was asked to insert."""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scheduler.main import create_scheduler
from services.scorer.registry import ScorerRegistry
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings
from shared.events import Event, JobSubmitted
from shared.jobs import Job, JobStatus
from shared.store import Created
from shared.store_sqlite import SqliteJobStore
from shared.workspace import Workspace
from tests.scheduler.rig import scheduler_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "classification"
KEY = "alice-key"


class CountingStore(SqliteJobStore):
    creates: int = 0

    async def create(self, job: Job) -> Created:
        self.creates += 1
        return await super().create(job)


async def _ignore(event: Event) -> None:
    return None


async def _status(store: SqliteJobStore, job_id: str, *, leaving: JobStatus) -> JobStatus:
    async with asyncio.timeout(10):
        while True:
            job = await store.get(job_id)
            if job is not None and job.status is not leaving:
                return job.status
            await asyncio.sleep(0.02)


async def test_a_gateway_job_is_inserted_once_and_a_platform_job_by_the_scheduler(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    shutil.copytree(EXAMPLE, root / "alice" / "ws", ignore=shutil.ignore_patterns("output"))
    shutil.copytree(EXAMPLE, tmp_path / "platform", ignore=shutil.ignore_patterns("output"))
    settings = GatewaySettings(data_root=root, api_keys=[ApiKey(key=KEY, subject="alice")])
    async with AsyncExitStack() as stack:
        store = CountingStore(tmp_path / "jobs.sqlite3")
        hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
        for part in (store, hooks):
            await part.init()
            stack.push_async_callback(part.close)
        bus = MemoryBus(drain_timeout=2.0)
        await bus.subscribe(Subscription("test.sink", ["#"], _ignore))  # runs go nowhere
        scheduler = create_scheduler(scheduler_settings(), bus, store)
        await scheduler.start()
        await bus.start()
        stack.push_async_callback(bus.close)
        stack.push_async_callback(scheduler.close)
        app = create_app(settings, store, bus, ScorerRegistry.with_builtins().infos(), hooks)
        client = await stack.enter_async_context(TestClient(TestServer(app)))

        resp = await client.post(
            "/v1/jobs", json={"workspace": "alice/ws"}, headers={"Authorization": f"Bearer {KEY}"}
        )
        body = await resp.json()
        assert resp.status == 202, body
        gateway_job = body["data"]["job_id"]
        assert await _status(store, gateway_job, leaving=JobStatus.SUBMITTED) is JobStatus.QUEUED
        assert store.creates == 1  # the gateway's; the scheduler read it

        spec = Workspace.at(tmp_path / "platform").load_spec()
        await bus.publish(
            JobSubmitted(
                job_id=spec.job_id, spec=spec, workspace=str(tmp_path / "platform"), submitter="p"
            )
        )
        async with asyncio.timeout(10):
            while await store.get(spec.job_id) is None:
                await asyncio.sleep(0.02)
        assert await _status(store, spec.job_id, leaving=JobStatus.SUBMITTED) is JobStatus.QUEUED
        assert store.creates == 2  # the platform's job, inserted by the scheduler
        stored = await store.get(gateway_job)
        assert stored is not None and stored.spec.expected_outputs == ["pred.csv"]
