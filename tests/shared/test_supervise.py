"""shared.supervise: no loop body can end its loop or the supervisor, health shows what readiness
must report, close leaves nothing behind. Real asyncio tasks and clocks; the loop bodies are the
only stand-ins (a loop that raises on purpose is what is under test)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.supervise import Supervisor, describe, guarded

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


async def _until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_a_forever_body_that_raises_is_started_again_and_the_supervisor_lives():
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.02)
    calls = []

    async def body():
        calls.append(1)
        if len(calls) < 4:
            raise RuntimeError("boom")
        await asyncio.Event().wait()  # the fourth start runs for good

    sup.forever("watcher", body)
    try:
        await _until(lambda: len(calls) == 4)
        h = sup.health()["watcher"]
        assert h.failures == 3 and h.restarts == 3 and h.last_error == "RuntimeError: boom"
        assert not h.ended
    finally:
        await sup.close()


async def test_a_forever_body_that_returns_is_started_again():
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01)
    calls = []

    async def body():
        calls.append(1)

    sup.forever("quitter", body)
    try:
        await _until(lambda: len(calls) >= 3)
        assert sup.health()["quitter"].restarts >= 2
    finally:
        await sup.close()


async def test_a_step_that_raises_keeps_the_periodic_loop_going():
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.02)
    steps = []

    async def step():
        steps.append(1)
        if len(steps) % 2:
            raise AutoscorerError(ErrorCode.STORE_ERROR, "store down", stage=Stage.PLATFORM)

    sup.every("relay", 0.01, step)
    try:
        await _until(lambda: len(steps) >= 8)
        h = sup.health()["relay"]
        assert h.failures >= 4 and h.healthy  # never more than one failure in a row
        assert h.last_error == "STORE_ERROR: store down"
    finally:
        await sup.close()


async def test_first_runs_once_before_the_steps_and_again_until_it_succeeds():
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01)
    seen = []

    async def first():
        seen.append("first")
        if seen.count("first") < 2:
            raise RuntimeError("not yet")

    async def step():
        seen.append("step")

    sup.every("sweep", 0.01, step, first=first)
    try:
        await _until(lambda: seen.count("step") >= 2)
        assert seen[:2] == ["first", "first"] and seen.count("first") == 2
    finally:
        await sup.close()


async def test_poke_runs_the_next_step_now():
    sup = Supervisor("svc")
    steps = []

    async def step():
        steps.append(1)

    sup.every("slow", 60.0, step)
    try:
        await asyncio.sleep(0.05)
        assert steps == []
        sup.poke("slow")
        await _until(lambda: steps == [1])
        sup.poke("nobody")  # an unknown name is ignored
    finally:
        await sup.close()


async def test_unhealthy_names_a_loop_failing_again_and_again_and_it_recovers():
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01, unhealthy_after=3)
    broken = True

    async def step():
        if broken:
            raise OSError("no route")

    async def fine():
        pass

    sup.every("flaky", 0.01, step)
    sup.every("steady", 0.01, fine)
    try:
        await _until(lambda: sup.unhealthy() == ["flaky"])
        assert sup.health()["flaky"].as_dict()["consecutive_failures"] >= 3
        broken = False
        await _until(lambda: sup.unhealthy() == [])
    finally:
        await sup.close()


async def test_a_forever_loop_that_recovers_becomes_healthy_again():
    """A forever body never returns, so running well for a while must count as recovered."""
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01, unhealthy_after=2)
    sup.recover_after_s = 0.2
    calls = []

    async def body():
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("broker down")
        await asyncio.Event().wait()

    sup.forever("consumer", body)
    try:
        await _until(lambda: len(calls) == 4)
        assert sup.unhealthy() == ["consumer"]
        await _until(lambda: sup.unhealthy() == [], timeout=2)
    finally:
        await sup.close()


async def test_unhealthy_names_a_loop_whose_task_ended():
    sup = Supervisor("svc")

    async def body():
        await asyncio.Event().wait()

    sup.forever("dispatcher", body)
    sup.forever("other", body)
    try:
        await asyncio.sleep(0.01)
        loop = sup._loops["dispatcher"]
        assert loop.task is not None
        loop.task.cancel()  # a task ending from outside, as a bug or a stray cancel would
        await asyncio.gather(loop.task, return_exceptions=True)
        assert sup.unhealthy() == ["dispatcher"]
        assert sup.health()["dispatcher"].ended
    finally:
        await sup.close()


async def test_a_body_that_raises_cancelled_error_itself_is_restarted():
    """Libraries raise CancelledError for their own reasons (a closed channel); only a cancel of
    the supervisor's task may end the loop."""
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01)
    calls = []

    async def body():
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.CancelledError
        await asyncio.Event().wait()

    sup.forever("consumer", body)
    try:
        await _until(lambda: len(calls) == 2)
        assert sup.unhealthy() == []
    finally:
        await sup.close()


async def test_close_cancels_every_loop_and_leaves_no_task():
    sup = Supervisor("svc", backoff_s=0.01)
    cancelled = []

    async def body():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    async def step():
        await asyncio.sleep(10)

    sup.forever("a", body)
    sup.forever("b", body)
    sup.every("c", 0.0, step)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(sup.close(), 2)
    assert cancelled == [1, 1]
    assert all(loop.task is not None and loop.task.done() for loop in sup._loops.values())
    assert sup.unhealthy() == []  # closing is not dying
    await sup.close()  # twice is harmless


async def test_close_while_a_loop_waits_out_its_backoff():
    sup = Supervisor("svc", backoff_s=30.0)

    async def body():
        raise RuntimeError("boom")

    sup.forever("sleepy", body)
    await _until(lambda: sup.health()["sleepy"].failures == 1)
    await asyncio.wait_for(sup.close(), 2)


async def test_a_name_is_supervised_once():
    sup = Supervisor("svc")

    async def body():
        await asyncio.Event().wait()

    sup.forever("x", body)
    try:
        with pytest.raises(ValueError, match="already supervised"):
            sup.every("x", 1.0, body)
    finally:
        await sup.close()


async def test_guarded_swallows_and_reports(caplog):
    async def fine():
        pass

    async def platform():
        raise AutoscorerError(ErrorCode.BUS_ERROR, "bus down", stage=Stage.PLATFORM)

    async def bug():
        raise KeyError("x")

    with caplog.at_level(logging.WARNING, logger="shared.supervise"):
        assert await guarded("item 1", fine) is True
        assert await guarded("item 2", platform) is False
        assert await guarded("item 3", bug) is False
    text = caplog.text
    assert "item 2: BUS_ERROR: bus down" in text and "item 3 failed unexpectedly" in text


async def test_guarded_lets_a_cancel_through():
    async def slow():
        await asyncio.sleep(10)

    task = asyncio.create_task(guarded("slow", slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_describe_is_bounded():
    assert len(describe(RuntimeError("x" * 10_000))) == 300


async def test_a_beating_loop_whose_failures_are_slow_is_still_reported():
    """A store timeout takes longer than recover_after_s to fail: only beats count as progress,
    so three slow failures in a row make the loop unhealthy; a beat makes it healthy again."""
    sup = Supervisor(
        "svc", backoff_s=0.01, max_backoff_s=0.01, unhealthy_after=3, recover_after_s=0.05
    )
    calls = []
    store_up = asyncio.Event()

    async def body():
        calls.append(1)
        if len(calls) == 1:
            sup.beat("dispatcher")  # it worked once
        if not store_up.is_set():
            await asyncio.sleep(0.1)  # a timeout, longer than recover_after_s
            raise AutoscorerError(ErrorCode.STORE_ERROR, "timed out", stage=Stage.PLATFORM)
        sup.beat("dispatcher")
        await asyncio.Event().wait()

    sup.forever("dispatcher", body)
    try:
        await _until(lambda: sup.unhealthy() == ["dispatcher"])
        assert sup.health()["dispatcher"].consecutive_failures >= 3
        store_up.set()
        await _until(lambda: sup.unhealthy() == [])
        assert sup.health()["dispatcher"].last_ok_at is not None
        sup.beat("nobody")  # an unknown name is ignored
    finally:
        await sup.close()


async def test_close_ends_a_periodic_loop_whose_body_turns_the_cancel_into_an_error():
    """CI once saw the scheduler's reaper go on after close (its store call turned the cancel
    into a STORE_ERROR) and close wait 300 s: the loop must stop at its next turn."""
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01)
    started = asyncio.Event()
    runs = []

    async def step():
        runs.append(1)
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise AutoscorerError(ErrorCode.STORE_ERROR, Stage.SCHEDULING, "cancelled") from None

    sup.every("reaper", 0.001, step)
    await started.wait()
    async with asyncio.timeout(5):
        await sup.close()
    assert len(runs) == 1  # not run again once closing
    assert all(loop.task is not None and loop.task.done() for loop in sup._loops.values())


async def test_close_ends_a_forever_loop_whose_body_swallows_the_cancel():
    sup = Supervisor("svc", backoff_s=0.01, max_backoff_s=0.01)
    started = asyncio.Event()

    async def body():
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return  # swallowed: a library returning early on cancel

    sup.forever("watcher", body)
    await started.wait()
    async with asyncio.timeout(5):
        await sup.close()
    assert all(loop.task is not None and loop.task.done() for loop in sup._loops.values())


async def test_close_gives_up_on_a_body_that_ignores_every_cancel(caplog):
    sup = Supervisor("svc")
    started = asyncio.Event()
    release = asyncio.Event()

    async def body():
        started.set()
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # ignores every cancel, as no body should

    sup.forever("stubborn", body)
    await started.wait()
    with caplog.at_level(logging.ERROR):
        async with asyncio.timeout(5):
            await sup.close(grace_s=0.5)
    assert "loops still running" in caplog.text and "svc:stubborn" in caplog.text
    release.set()  # let it end, so the test leaves no task
    task = sup._loops["stubborn"].task
    assert task is not None
    await asyncio.wait({task}, timeout=2)
    assert task.done()
