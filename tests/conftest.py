"""Fixtures shared by every test folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test when it leaves tasks running after its fixtures closed."""
    before = asyncio.all_tasks()
    yield
    for _ in range(100):
        leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
        if not leaked:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"leaked tasks: {sorted(t.get_name() + ' ' + repr(t.get_coro()) for t in leaked)}")
