"""The soak of ``bench/bench_soak.py``, short: seeded random kills of every service, duplicate
publishes and bad inputs mixed with good submissions through the gateway, on the real stack.
At the end every accepted job ended once (one terminal state, one terminal event per event_id,
one webhook), none was lost or duplicated, and every queue of the stack is empty.

The second test adds one RabbitMQ restart (stop_app/start_app of the shared broker), so it is
marked ``broker_restart``. ``python -m bench.bench_soak --seconds 180`` is the long version."""

from __future__ import annotations

import pytest

from bench.bench_soak import soak
from tests.faults.harness import SERVICES, MakeStack

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.mongo,
    pytest.mark.docker,
    pytest.mark.slow,
    # When RabbitMQ restarts (here, or another suite's broker_restart test), aiormq leaves the
    # socket of a connection attempt that failed midway for the garbage collector; the soak
    # itself rides the restart out, so that library warning must not fail it.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


@pytest.mark.timeout(420)
async def test_soak_with_kills_duplicates_and_bad_inputs(make_stack: MakeStack) -> None:
    stack = await make_stack(scorer_delay=0.3)
    report = await soak(stack, seconds=60, seed=1, settle_s=180)
    print("\n".join(report.lines()))
    assert report.accepted and set(report.kills) == set(SERVICES)  # seed 1 kills each early
    assert report.ok, report.lines()


@pytest.mark.broker_restart
@pytest.mark.timeout(480)
async def test_soak_through_a_broker_restart(make_stack: MakeStack) -> None:
    stack = await make_stack(scorer_delay=0.3)
    report = await soak(stack, seconds=75, seed=12, broker_restarts=1, settle_s=240)
    print("\n".join(report.lines()))
    assert report.broker_restarts == 1
    assert report.ok, report.lines()
