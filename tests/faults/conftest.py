"""Fixtures for the fault and attack suite (issue 7): real RabbitMQ, FerretDB and Docker.

Any ``tests/faults/test_*.py`` may use these; none of them needs editing this file:

* ``rabbit_url`` / ``mongo_url``: the provisioned servers (``AUTOSCORER_TEST_*_URL`` override);
* ``example_image``: the classification example's participant image (built once per session);
* ``fault_stack``: the four services as separate processes on Docker, shared by a test module
  (``harness.FaultStack``: ``kill``, ``restart``, ``add_workspace``...). Every test gets it with
  all four services up (one killed by an earlier test is started again);
* ``make_stack``: a factory for a stack of a test's own (``tweak`` edits the raw settings, e.g. a
  private store URL), started and removed around the test;
* ``api``: ``harness.Api`` on the fault stack's gateway; ``tap``: a ``harness.Tap`` on its
  exchange (every event published during the test);
* ``private_ferretdb``: a FerretDB of the test's own on a free port (``.stop()`` / ``.start()``),
  so an outage never touches the shared server.

Markers: ``rabbitmq``, ``mongo``, ``docker``, ``slow``, ``broker_restart`` (pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.harness import (
    Api,
    FaultStack,
    MakeStack,
    Tap,
    build_example_image,
    run_async,
)


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    return os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def mongo_url() -> str:
    return os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")


@pytest.fixture(scope="session")
def example_image() -> str:
    return build_example_image()


@pytest.fixture(scope="module")
def _module_stack(
    tmp_path_factory: pytest.TempPathFactory, rabbit_url: str, mongo_url: str, example_image: str
) -> Iterator[FaultStack]:
    stack = FaultStack.create(tmp_path_factory.mktemp("stack"), rabbit_url, mongo_url)
    try:
        run_async(stack.start, timeout=240)
        yield stack
    finally:
        stack.close()


@pytest.fixture
async def fault_stack(_module_stack: FaultStack) -> FaultStack:
    await _module_stack.ensure_up()
    return _module_stack


@pytest.fixture
async def make_stack(
    tmp_path: Path, rabbit_url: str, mongo_url: str, example_image: str
) -> AsyncIterator[MakeStack]:
    made: list[FaultStack] = []

    async def make(**options: Any) -> FaultStack:
        stack = FaultStack.create(tmp_path / f"stack{len(made)}", rabbit_url, mongo_url, **options)
        made.append(stack)
        await stack.start()
        return stack

    yield make
    for stack in made:
        stack.stop_all()
        stack.receiver.stop()
        await stack.remove_topology()


@pytest.fixture
async def api(fault_stack: FaultStack) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, fault_stack.url)


@pytest.fixture
async def tap(fault_stack: FaultStack) -> AsyncIterator[Tap]:
    async with Tap(
        fault_stack.settings.bus.url.get_secret_value(), fault_stack.settings.bus.exchange
    ) as tapped:
        yield tapped


# --- a FerretDB of the test's own ---------------------------------------------------------------


def _ferretdb_binary() -> str | None:
    default = Path(os.environ.get("AUTOSCORER_BIN_DIR", Path.home() / ".cache/autoscorer/bin"))
    found = default / "ferretdb"
    return str(found) if found.exists() else shutil.which("ferretdb")


@dataclass
class PrivateFerretDB:
    binary: str
    data: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        with (self.data.parent / "ferretdb.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--handler=sqlite",
                    f"--sqlite-url=file:{self.data}/",
                    f"--listen-addr=127.0.0.1:{self.port}",
                    "--telemetry=disable",
                    f"--state-dir={self.data}",
                    "--debug-addr=-",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert time.monotonic() < deadline, "private FerretDB did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        """An outage: the server is gone (SIGKILL), connections drop, the port refuses."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def private_ferretdb(tmp_path: Path) -> Iterator[PrivateFerretDB]:
    binary = _ferretdb_binary()
    if binary is None:
        pytest.fail(
            "no FerretDB binary: scripts/provision/ferretdb.sh (run by scripts/test.sh) builds it"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = PrivateFerretDB(binary, tmp_path / "ferretdb", port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
