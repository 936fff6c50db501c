"""shared.ops_http: the scheduler's, the executor's and the scorer's /metrics, /healthz and
/readyz, on each service's own composition root (``run``), in the embedded mode's real parts
(in-memory bus, SQLite store, local backend)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from services.executor.main import run as run_executor
from services.scheduler.main import run as run_scheduler
from services.scorer.main import run as run_scorer
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.metrics import Metrics
from shared.ops_http import Readiness, ops_app
from shared.store_sqlite import SqliteJobStore
from shared.supervise import Supervisor
from tests.e2e.harness import free_port

Run = Callable[[Settings, asyncio.Event], Awaitable[None]]


@contextlib.asynccontextmanager
async def client(readiness: Readiness, metrics: Metrics | None = None) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(ops_app(metrics or Metrics(), readiness))) as c:
        yield c


async def test_readyz_is_503_naming_a_bus_that_is_down_then_200() -> None:
    bus = MemoryBus()
    async with client(Readiness(bus)) as c:
        resp = await c.get("/readyz")
        body = await resp.json()
        assert resp.status == 503
        assert body["ok"] is False
        assert body["error"]["code"] == "BACKEND_UNAVAILABLE"
        assert body["error"]["details"]["bus"] == "not connected"
        await bus.start()
        try:
            resp = await c.get("/readyz")
            assert resp.status == 200
            assert (await resp.json())["data"]["checks"] == {"bus": "ok"}
        finally:
            await bus.close()
        assert (await c.get("/healthz")).status == 200  # the process still answers


async def test_readyz_is_503_naming_an_unhealthy_loop(tmp_path: Path) -> None:
    bus = MemoryBus()
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.init()
    await bus.start()
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01, unhealthy_after=2)

    async def fail() -> None:
        raise RuntimeError("down")

    sup.every("sweeper", 0.01, fail)
    try:
        async with client(Readiness(bus, store, [sup])) as c:
            for _ in range(200):
                resp = await c.get("/readyz")
                if resp.status == 503:
                    break
                await asyncio.sleep(0.01)
            body = await resp.json()
            assert resp.status == 503
            assert body["error"]["details"] == {
                "bus": "ok",
                "store": "ok",
                "loop svc/sweeper": "unhealthy",
            }
    finally:
        await sup.close()
        await bus.close()
        await store.close()


async def test_readyz_reports_a_store_that_does_not_answer(tmp_path: Path) -> None:
    bus = MemoryBus()
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.init()
    await store.close()  # closed: every operation fails
    await bus.start()
    try:
        async with client(Readiness(bus, store)) as c:
            resp = await c.get("/readyz")
            assert resp.status == 503
            assert (await resp.json())["error"]["details"]["store"].startswith("unavailable")
    finally:
        await bus.close()


def service_settings(tmp_path: Path, port_field: str, port: int) -> Settings:
    return Settings.model_validate(
        {
            "store": {"kind": "sqlite", "sqlite_path": str(tmp_path / "jobs.sqlite3")},
            "bus": {"kind": "memory"},
            "scorer": {"plugin_dir": str(tmp_path / "scorers"), "pool_size": 1},
            "executor_service": {"cleanup_on_start": False},
            "ops_http": {port_field: port},
        }
    )


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


async def wait_ready(session: aiohttp.ClientSession, base: str, task: asyncio.Task[Any]) -> None:
    for _ in range(400):
        if task.done():
            task.result()
        with contextlib.suppress(aiohttp.ClientError):
            if (await get(session, base + "/readyz"))[0] == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{base}/readyz never answered 200")


@pytest.mark.parametrize(
    ("run", "port_field", "loop_service"),
    [
        (run_scheduler, "scheduler_port", "scheduler"),
        (run_executor, "executor_port", "executor.local"),
        (run_scorer, "scorer_port", None),  # no loop unless it watches plugin paths
    ],
    ids=["scheduler", "executor", "scorer"],
)
async def test_each_service_serves_its_ops_port(
    tmp_path: Path, run: Run, port_field: str, loop_service: str | None
) -> None:
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run(service_settings(tmp_path, port_field, port), stop))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base, task)
            assert (await get(session, base + "/healthz"))[0] == 200
            status, text = await get(session, base + "/metrics")
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert status == 200
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"autoscorer_bus_dead_letters", "autoscorer_loop_healthy"} <= names
    if loop_service is not None:
        assert f'service="{loop_service}"' in text
    async with aiohttp.ClientSession() as session:  # the port is closed with the service
        with pytest.raises(aiohttp.ClientError):
            await get(session, base + "/healthz")


async def test_port_zero_serves_nothing(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, "scheduler_port", 0)
    assert settings.ops_http.scheduler_port == 0
    assert Settings().ops_http.executor_port == 0  # off unless the deployment turns it on
