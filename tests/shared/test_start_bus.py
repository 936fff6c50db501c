"""A service started before its broker (or while it restarts) keeps trying to reach it for
``bus.start_within_s`` seconds instead of exiting (shared.connect.start_bus)."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from contextlib import closing
from urllib.parse import urlsplit

import pytest

from shared.bus_memory import MemoryBus
from shared.bus_rabbitmq import RabbitBus, RabbitBusConfig
from shared.connect import start_bus
from shared.errors import AutoscorerError, ErrorCode, Stage
from tests.shared.conftest import RABBIT_URL

BROKER = (urlsplit(RABBIT_URL).hostname or "127.0.0.1", urlsplit(RABBIT_URL).port or 5672)


class _LateBus(MemoryBus):
    """Refuses to start (as an unreachable broker does) the first ``failures`` times."""

    def __init__(self, failures: int, error: AutoscorerError) -> None:
        super().__init__()
        self.failures, self.error, self.tries = failures, error, 0

    async def start(self) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise self.error
        await super().start()


def _unavailable() -> AutoscorerError:
    return AutoscorerError(ErrorCode.BUS_ERROR, "down", stage=Stage.PLATFORM)


async def test_a_bus_that_comes_up_late_is_started() -> None:
    bus = _LateBus(3, _unavailable())
    await start_bus(bus, 10.0, first_delay_s=0.01)
    try:
        assert bus.ready() and bus.tries == 4
    finally:
        await bus.close()


async def test_it_gives_up_after_its_time() -> None:
    bus = _LateBus(1000, _unavailable())
    with pytest.raises(AutoscorerError) as caught:
        await start_bus(bus, 0.2, first_delay_s=0.01)
    assert caught.value.code is ErrorCode.BUS_ERROR and bus.tries >= 2


async def test_an_error_that_is_not_retryable_is_raised_at_once() -> None:
    wrong = AutoscorerError(ErrorCode.CONFIG_VALIDATION_ERROR, "bad", stage=Stage.CONFIG)
    bus = _LateBus(1000, wrong)
    with pytest.raises(AutoscorerError) as caught:
        await start_bus(bus, 10.0, first_delay_s=0.01)
    assert caught.value is wrong and bus.tries == 1


@pytest.mark.rabbitmq
async def test_a_real_broker_that_starts_listening_later_is_reached() -> None:
    """A port nobody listens on yet, forwarded to the real broker after a while."""
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"amqp://guest:guest@127.0.0.1:{port}/"

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(*BROKER)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer), return_exceptions=True)

    bus = RabbitBus(RabbitBusConfig(url=url, exchange="test.start-bus", connect_timeout=2.0))
    starting = asyncio.create_task(start_bus(bus, 30.0, first_delay_s=0.2))
    await asyncio.sleep(1.0)
    assert not starting.done()  # nobody listens yet: still trying
    server = await asyncio.start_server(forward, "127.0.0.1", port)
    try:
        await asyncio.wait_for(starting, 30)
        assert bus.ready()
    finally:
        await bus.close()
        server.close()
        await server.wait_closed()
        # aiormq leaves the sockets of the refused connects to the garbage collector
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
