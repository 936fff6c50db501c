"""The composition root serves on the embedded bus and store until cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.scheduler.main import run
from shared.config import SchedulerSettings, Settings, StoreSettings
from shared.errors import AutoscorerError, ErrorCode


async def test_run_serves_until_stopped(tmp_path: Path) -> None:
    settings = Settings(store=StoreSettings(sqlite_path=tmp_path / "state" / "jobs.sqlite3"))
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    await asyncio.sleep(0.5)
    assert not task.done()

    stop.set()
    await asyncio.wait_for(task, 10)
    assert (tmp_path / "state" / "jobs.sqlite3").exists()


async def test_run_refuses_a_configuration_without_backends(tmp_path: Path) -> None:
    settings = Settings(
        store=StoreSettings(sqlite_path=tmp_path / "jobs.sqlite3"),
        scheduler=SchedulerSettings(enabled_backends=["Not Valid"]),
    )

    with pytest.raises(AutoscorerError) as raised:
        await run(settings)

    assert raised.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
