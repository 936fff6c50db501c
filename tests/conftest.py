"""Fixtures shared by every test folder."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

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


# --- RabbitMQ 3.10.8 (Debian bookworm) wedge guard ---------------------------------------------
# On these machines the broker was seen to deadlock (TCP open, no AMQP greeting, log silent, 0% CPU)
# after bursts of quorum-queue creation and deletion, which this suite makes by giving every test
# its own queues. A wedged broker would fail every later test for a reason that is not ours. Before
# each `rabbitmq` test the broker must greet; if it does not, it is reset with the provisioning
# script and the run says so at the end. A wedge inside a test still fails that test.

ROOT = Path(__file__).resolve().parents[1]
_RESETS: list[str] = []


def _broker_greets(url: str, timeout: float = 5.0) -> bool:
    parsed = urlsplit(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout
        ) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _rabbitmq_greets(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("rabbitmq") is None:
        return
    url = os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    if _broker_greets(url):
        return
    _RESETS.append(request.node.nodeid)
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "provision" / "rabbitmq.sh")], check=True, timeout=300
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _RESETS:
        terminalreporter.write_sep(
            "!", f"RabbitMQ stopped answering and was reset {len(_RESETS)} time(s)"
        )
        for nodeid in _RESETS:
            terminalreporter.write_line(f"  before {nodeid}")
