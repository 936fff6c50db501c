"""/v1/scorers/watch under the gateway's supervisor (issue 7 class 1, CONVENTIONS item 12).

The scorer watcher and the sender of changed files are loops of the gateway's ``Supervisor``:
no bare task, nothing left running after the app closes, and a changed file that cannot be sent
to the scorer service (``ScorerLoadRequested``) is logged, shows in /readyz while it is retried,
and is dropped (with an error in the log) after a few tries without stopping the loop. The
scorer service installs what it is sent and passes it on (``ScorersChanged``); the gateway loads
no code. Embedded parts: the in-memory bus, a real scorer service, SQLite stores, real files
watched with watchfiles. The bus's publish failures are injected (a flag on a MemoryBus
subclass): no real bus fails on demand for one event type.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import create_app
from services.gateway.context import GATEWAY
from services.gateway.main import create_gateway
from services.gateway.scorers_api import ANNOUNCE_ATTEMPTS, ANNOUNCE_LOOP, WATCH_LOOP
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.main import create_scorer_service
from services.scorer.registry import ScorerRegistry
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings, Settings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import BaseEvent, ScorerLoadRequested, ScorersChanged
from shared.store_sqlite import SqliteJobStore
from shared.supervise import Supervisor
from tests.scorer.plugin_text import plugin

ADMIN = "ops-key"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class FlakyBus(MemoryBus):
    """A MemoryBus whose publish of ScorerLoadRequested fails while ``failing`` is above zero."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = 0

    async def publish(self, event: BaseEvent) -> None:
        if isinstance(event, ScorerLoadRequested) and self.failing > 0:
            self.failing -= 1
            raise AutoscorerError(
                ErrorCode.BACKEND_UNAVAILABLE, "injected publish failure", stage=Stage.PLATFORM
            )
        await super().publish(event)


class Gw:
    def __init__(self, client: TestClient, bus: FlakyBus, supervisor: Supervisor) -> None:
        self.client, self.bus, self.supervisor = client, bus, supervisor
        self.changes: list[ScorersChanged] = []

    async def capture(self, event: Any) -> None:
        if isinstance(event, ScorersChanged):
            self.changes.append(event)

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.request(method, path, headers=HEADERS, **kw)
        return resp.status, await resp.json()

    async def load(self, version: str) -> None:
        body = {"filename": "demo.py", "source": plugin(version=version)}
        status, answer = await self.call("POST", "/v1/scorers/load", json=body)
        assert status == 200, answer

    def reloaded(self) -> list[str]:
        return [c.scorer_version for c in self.changes if c.action == "reloaded"]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gw]:
    settings = GatewaySettings(
        data_root=tmp_path / "data", api_keys=[ApiKey(key=ADMIN, subject="ops", role="admin")]
    )
    bus, store = FlakyBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    supervisor = Supervisor("gateway", backoff_s=0.05, max_backoff_s=0.2)
    await store.init()
    await hooks.init()
    app = create_app(settings, store, bus, (), hooks, supervisor=supervisor)
    gateway = Gw(None, bus, supervisor)  # type: ignore[arg-type]
    await bus.subscribe(Subscription("test.capture", ["#"], gateway.capture))
    scorer = create_scorer_service(
        Settings(scorer={"pool_size": 1, "plugin_dir": tmp_path / "scorer-plugins"}),
        bus,
        ScorerRegistry.with_builtins(),
        instance="scorer-1",
    )
    await scorer.start()
    await bus.start()
    try:
        async with TestClient(TestServer(app)) as client:
            gateway.client = client
            yield gateway
    finally:
        await scorer.close()
        await bus.close()
        await hooks.close()
        await store.close()


async def until(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def edit_until_announced(gw: Gw, version: str) -> None:
    """Write a new version of demo.py until its reload is announced (the watcher may still be
    arming itself right after it started)."""
    for _ in range(20):
        Path(gw.client.app[GATEWAY].settings.data_root, "scorers", "demo.py").write_text(
            plugin(version=version)
        )
        try:
            await until(lambda: version in gw.reloaded(), timeout=1.0)
        except AssertionError:
            continue
        return
    raise AssertionError(f"version {version} was never announced")


async def test_the_watch_loops_run_under_the_gateway_supervisor(gw: Gw) -> None:
    assert gw.client.app[GATEWAY].supervisor is gw.supervisor
    assert {WATCH_LOOP, ANNOUNCE_LOOP} <= set(gw.supervisor.health())
    status, body = await gw.call("GET", "/readyz")
    assert status == 200, body
    assert {"gateway/scorer-watch", "gateway/scorer-announce"} <= set(body["data"]["loops"])


async def test_a_watched_file_is_reloaded_and_announced_until_unwatched(gw: Gw) -> None:
    await gw.load("1.0.0")
    status, body = await gw.call("POST", "/v1/scorers/watch", json={"filename": "demo.py"})
    assert status == 200 and body["data"]["watching"] == ["demo.py"]
    await edit_until_announced(gw, "2.0.0")
    await until(lambda: gw.client.app[GATEWAY].scorers.get("demo").version == "2.0.0")

    status, body = await gw.call("DELETE", "/v1/scorers/watch", params={"filename": "demo.py"})
    assert status == 200 and body["data"]["watching"] == []
    await asyncio.sleep(0.5)  # the watcher restarts watching nothing
    Path(gw.client.app[GATEWAY].settings.data_root, "scorers", "demo.py").write_text(
        plugin(version="3.0.0")
    )
    await asyncio.sleep(0.8)
    assert "3.0.0" not in gw.reloaded()
    assert gw.client.app[GATEWAY].scorers.get("demo").version == "2.0.0"

    status, body = await gw.call("POST", "/v1/scorers/watch", json={"filename": "demo.py"})
    assert status == 200 and body["data"]["watching"] == ["demo.py"]  # watched again
    await edit_until_announced(gw, "4.0.0")
    assert gw.supervisor.unhealthy() == []


async def test_a_failing_announcement_shows_in_readyz_and_is_retried(gw: Gw) -> None:
    await gw.load("1.0.0")
    await gw.call("POST", "/v1/scorers/watch", json={"filename": "demo.py"})
    gw.bus.failing = 1_000_000  # until the test says otherwise
    data_root = gw.client.app[GATEWAY].settings.data_root
    for _ in range(20):  # until the watcher, maybe still arming, sees the file change
        (data_root / "scorers" / "demo.py").write_text(plugin(version="2.0.0"))
        await asyncio.sleep(0.5)
        if gw.supervisor.health()[ANNOUNCE_LOOP].failures:
            break
    await until(lambda: gw.supervisor.health()[ANNOUNCE_LOOP].consecutive_failures >= 3)
    status, body = await gw.call("GET", "/readyz")
    assert status == 503 and "loop gateway/scorer-announce" in body["error"]["details"]
    gw.bus.failing = 0
    await until(lambda: "2.0.0" in gw.reloaded())
    assert gw.supervisor.health()[ANNOUNCE_LOOP].healthy
    status, _ = await gw.call("GET", "/readyz")
    assert status == 200


async def test_an_announcement_that_keeps_failing_is_dropped_and_logged(
    gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    await gw.load("1.0.0")
    await gw.call("POST", "/v1/scorers/watch", json={"filename": "demo.py"})
    gw.bus.failing = ANNOUNCE_ATTEMPTS  # every try of the first reload fails
    with caplog.at_level(logging.ERROR, logger="services.gateway.scorers_api"):
        await edit_until_announced(gw, "2.0.0")  # its first reload was given up, a later one not
    assert any("gave up on demo.py" in r.getMessage() for r in caplog.records)
    # the loop beats just after its send returns; the announcement can be seen a moment before
    await until(lambda: gw.supervisor.health()[ANNOUNCE_LOOP].healthy, timeout=5.0)
    health = gw.supervisor.health()[ANNOUNCE_LOOP]
    assert health.failures >= ANNOUNCE_ATTEMPTS - 1 and health.healthy and not health.ended


async def test_the_composition_root_shares_its_supervisor_with_the_app(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "gateway": {"data_root": str(tmp_path / "data"), "insecure_no_auth": True},
            "scorer": {"plugin_dir": str(tmp_path / "plugins")},
        }
    )
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    await store.init()
    await hooks.init()
    service = await create_gateway(settings, store, bus, hooks)
    await bus.start()
    service.start()
    try:
        assert service.app[GATEWAY].supervisor is service.supervisor
        async with TestClient(TestServer(service.app)) as client:
            resp = await client.get("/readyz")
            loops = (await resp.json())["data"]["loops"]
            assert {
                "gateway/webhook-dispatcher",
                "gateway/scorer-watch",
                "gateway/scorer-announce",
            } <= set(loops)
    finally:
        await service.close()
        await bus.close()
        await hooks.close()
        await store.close()
