"""The gateway learns its scorers from the scorer service (``ScorersAnnounced``), not by loading
them: a gateway that knows no scorer itself lists the scorer service's, refuses a submission that
pins another version than the announced one, fills the expected outputs the announcement names,
and ignores an announcement older than the one it holds. Real scorer service, real gateway, one
in-memory bus."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.main import create_scorer_service
from services.scorer.registry import ScorerRegistry
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings, Settings
from shared.events import ScorersAnnounced
from shared.models import utcnow
from shared.store_sqlite import SqliteJobStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "classification"
HEADERS = {"Authorization": "Bearer alice-key"}

PLUGIN = """
from shared.models import Result
from shared.scoring import register


@register("announced_only", version="2.0.0", task_type="demo", description="the scorer's own",
          expected_files=("output/answers.csv",), primary_metric="value")
def announced_only(ws, params):
    return Result(summary={"value": 1.0})
"""

Client = TestClient[web.Request, web.Application]


async def listed(client: Client) -> dict[str, dict[str, Any]]:
    resp = await client.get("/v1/scorers", headers=HEADERS)
    return {s["name"]: s for s in (await resp.json())["data"]["scorers"]}


async def submit(client: Client, scorer: str) -> tuple[int, dict[str, Any]]:
    spec = {**json.loads((EXAMPLE / "meta.json").read_text()), "scorer": scorer}
    resp = await client.post(
        "/v1/jobs", json={"workspace": "alice/ws", "spec": spec}, headers=HEADERS
    )
    body: dict[str, Any] = await resp.json()
    return resp.status, body


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteJobStore, SqliteWebhookStore]]:
    jobs, hooks = SqliteJobStore(tmp_path / "jobs.sqlite3"), SqliteWebhookStore(tmp_path / "h.db")
    await asyncio.gather(jobs.init(), hooks.init())
    yield jobs, hooks
    await asyncio.gather(hooks.close(), jobs.close())


async def test_the_gateway_lists_and_checks_what_the_scorer_service_announced(
    tmp_path: Path, stores: tuple[SqliteJobStore, SqliteWebhookStore]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(EXAMPLE, root / "alice" / "ws", ignore=shutil.ignore_patterns("output"))
    plugin = tmp_path / "plugins" / "announced.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    registry = ScorerRegistry.with_builtins()
    registry.load_file(plugin)
    settings = GatewaySettings(data_root=root, api_keys=[ApiKey(key="alice-key", subject="alice")])
    store, hooks = stores
    async with AsyncExitStack() as stack:
        bus = MemoryBus()
        scorer = create_scorer_service(
            Settings(scorer={"pool_size": 1, "plugin_dir": tmp_path / "sp"}),
            bus,
            registry,
            instance="scorer-1",
        )
        await scorer.start()
        stack.push_async_callback(scorer.close)
        await bus.start()
        stack.push_async_callback(bus.close)
        app = create_app(settings, store, bus, (), hooks)  # knows no scorer itself
        client = await stack.enter_async_context(TestClient(TestServer(app)))

        async with asyncio.timeout(20):
            while "announced_only" not in (scorers := await listed(client)):
                await asyncio.sleep(0.05)
        info = scorers["announced_only"]
        assert info["version"] == "2.0.0" and info["expected_files"] == ["output/answers.csv"]
        assert info["source_sha256"] and info["params_schema"]["type"] == "object"
        assert "classification_f1" in scorers

        status, body = await submit(client, "announced_only@1.0.0")
        assert status == 422, body
        assert body["error"]["code"] == "SCORER_NOT_FOUND"
        assert body["error"]["details"]["loaded_version"] == "2.0.0"

        status, body = await submit(client, "announced_only@2.0.0")
        assert status == 202, body
        job = await store.get(body["data"]["job_id"])
        assert job is not None and job.spec.expected_outputs == ["answers.csv"]

        late = ScorersAnnounced(origin="old", scorers=[], occurred_at=utcnow() - timedelta(hours=1))
        await bus.publish(late)
        await asyncio.sleep(0.2)
        assert "announced_only" in await listed(client)  # the older catalogue is ignored
