"""/v1/scorers/test is a request to the scorer service, scored in its pool under its time limit:
a scorer that hangs is killed (SCORE_TIMEOUT) and one that exits the process is reported
(SCORE_ERROR), while the gateway goes on answering. Organisers' scoring code never runs in the
gateway's process, and the gateway learns these scorers from the scorer service's announcement
(``ScorersAnnounced``), not by loading them. With no scorer service on the bus the gateway
answers 503."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.main import create_scorer_service
from services.scorer.registry import ScorerRegistry
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings, Settings
from shared.store_sqlite import SqliteJobStore

PLUGIN = """
import os
import time

from shared.models import Result
from shared.scoring import register


@register("sleepy", version="1.0.0", task_type="demo", description="hangs",
          expected_files=(), primary_metric="value")
def sleepy(ws, params):
    time.sleep(120)
    return Result(summary={"value": 1.0})


@register("quitter", version="1.0.0", task_type="demo", description="exits its process",
          expected_files=(), primary_metric="value")
def quitter(ws, params):
    os._exit(3)


@register("pidder", version="1.0.0", task_type="demo", description="says where it ran",
          expected_files=(), primary_metric="value")
def pidder(ws, params):
    return Result(summary={"value": float(os.getpid())})
"""

ADMIN = {"Authorization": "Bearer admin-key"}


async def test_a_hanging_or_exiting_scorer_cannot_hold_or_stop_the_gateway(tmp_path: Path) -> None:
    plugin = tmp_path / "plugins" / "hostile.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    root = tmp_path / "data"
    (root / "ws" / "one" / "output").mkdir(parents=True)
    (root / "ws" / "one" / "meta.json").write_text(json.dumps({"scorer": "sleepy"}))
    settings = GatewaySettings(
        data_root=root, api_keys=[ApiKey(key="admin-key", subject="ops", role="admin")]
    )
    registry = ScorerRegistry.with_builtins()
    registry.load_file(plugin)  # the scorer service's scorers; the gateway has the built-ins
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    scorer = create_scorer_service(
        Settings(scorer={"pool_size": 1, "time_limit": 2.0, "plugin_dir": tmp_path / "sp"}),
        bus,
        registry,
        instance="scorer-1",
    )
    await scorer.start()
    for part in (bus, store, hooks):
        await part.start() if isinstance(part, MemoryBus) else await part.init()
    app = create_app(
        settings, store, bus, ScorerRegistry.with_builtins().infos(), hooks, scorer_time_limit=2.0
    )
    try:
        async with TestClient(TestServer(app)) as client:
            async with asyncio.timeout(30):
                while "sleepy" not in await listed(client):
                    await asyncio.sleep(0.05)

            async def test(scorer: str) -> dict[str, object]:
                resp = await client.post(
                    "/v1/scorers/test",
                    json={"scorer_name": scorer, "workspace": "ws/one"},
                    headers=ADMIN,
                )
                assert resp.status == 200
                result: dict[str, object] = (await resp.json())["data"]["result"]
                return result

            started = time.monotonic()
            hung = await test("sleepy")
            assert time.monotonic() - started < 60  # killed at 2 s (+ worker start-up)
            assert isinstance(hung["error"], dict) and hung["error"]["code"] == "SCORE_TIMEOUT"

            exited = await test("quitter")
            assert isinstance(exited["error"], dict) and exited["error"]["code"] == "SCORE_ERROR"

            elsewhere = await test("pidder")
            assert elsewhere["error"] is None
            summary = elsewhere["summary"]
            assert isinstance(summary, dict) and summary["value"] != float(os.getpid())

            health = await client.get("/healthz")
            assert health.status == 200
    finally:
        await scorer.close()
        await bus.close()
        await store.close()
        await hooks.close()


async def listed(client: TestClient[web.Request, web.Application]) -> set[str]:
    resp = await client.get("/v1/scorers", headers=ADMIN)
    return {scorer["name"] for scorer in (await resp.json())["data"]["scorers"]}


async def test_with_no_scorer_service_the_gateway_answers_503(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "ws" / "one" / "output").mkdir(parents=True)
    (root / "ws" / "one" / "meta.json").write_text(json.dumps({"scorer": "classification_f1"}))
    settings = GatewaySettings(
        data_root=root, api_keys=[ApiKey(key="admin-key", subject="ops", role="admin")]
    )
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    for part in (bus, store, hooks):
        await part.start() if isinstance(part, MemoryBus) else await part.init()
    app = create_app(settings, store, bus, ScorerRegistry.with_builtins().infos(), hooks)
    try:
        async with TestClient(TestServer(app)) as client:
            resp = await client.post(
                "/v1/scorers/test",
                json={"scorer_name": "classification_f1", "workspace": "ws/one"},
                headers=ADMIN,
            )
            body = await resp.json()
    finally:
        await bus.close()
        await store.close()
        await hooks.close()
    assert resp.status == 503, body
    assert body["error"]["code"] == "BUS_ERROR"
