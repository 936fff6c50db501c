"""A scheduler on the in-memory bus and a SQLite store, with fake executor, scorer and observer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.scheduler.main import create_scheduler
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.store_sqlite import SqliteJobStore
from tests.scheduler.fakes import FakeExecutor, FakeScorer, Observer
from tests.scheduler.rig import Rig, scheduler_settings


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture
async def store(store_path: Path) -> AsyncIterator[SqliteJobStore]:
    opened = SqliteJobStore(store_path)
    await opened.init()
    yield opened
    await opened.close()


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    opened = MemoryBus(drain_timeout=2.0)
    await opened.start()
    yield opened
    await opened.close()


@pytest.fixture
def settings() -> Settings:
    return scheduler_settings()


@pytest.fixture
async def rig(bus: MemoryBus, store: SqliteJobStore, settings: Settings) -> AsyncIterator[Rig]:
    executor, scorer, observer = FakeExecutor(bus), FakeScorer(bus), Observer(bus)
    await executor.subscribe("executor.local")
    await scorer.subscribe("scorer.requests")
    await observer.subscribe("observer")
    scheduler = create_scheduler(settings, bus, store)
    await scheduler.start()
    yield Rig(bus, store, scheduler, executor, scorer, observer)
    await scheduler.close()


@pytest.fixture(autouse=True)
def _no_leaked_tasks(no_leaked_tasks: None) -> None:
    """Every scheduler test fails when it leaves a loop running (see tests/conftest.py)."""
