"""One supervisor for every background loop of a service (relay, lease monitor, reaper, webhook
dispatcher, scorer watcher, ...).

A loop is a coroutine function. ``Supervisor.forever`` runs one that should never return (a
watcher, a dispatcher's ``run``): when it raises or returns while the supervisor is open, it is
logged and started again after a growing back-off. Such a body never returns, so it reports
its progress with :meth:`Supervisor.beat` (the webhook dispatcher beats after each round of
claims): a beat counts its failures in a row from zero again. A forever body that never beats is
taken as recovered once it has run ``recover_after_s`` without failing; that guess is wrong for
a body whose failures take longer than that (a store timeout), which is why loops should beat.
``Supervisor.every`` runs a step every ``interval``
seconds; a step that raises is logged and the next period runs it again (``first`` is run
again until it succeeds once). Nothing a loop raises ends it, not even a ``CancelledError``
that a library raised by itself; only :meth:`Supervisor.close` does. Every loop's state is in
:meth:`Supervisor.health`, which readiness reads: a loop that failed ``unhealthy_after`` times
in a row, or whose task ended, is unhealthy.

Per-item isolation (one bad delivery, one stuck job) belongs inside a step: :func:`guarded` runs
one item's work at that boundary, so a failed item is logged and the step goes on with the next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from shared.errors import AutoscorerError

log = logging.getLogger(__name__)

Body = Callable[[], Awaitable[object]]


@dataclass
class LoopHealth:
    """What a loop is doing, as readiness and metrics see it."""

    name: str
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None  # time.time() of the last step or run that ended well
    ended: bool = False
    unhealthy_after: int = 3
    running_since: float | None = None  # time.monotonic() when the running body started

    @property
    def healthy(self) -> bool:
        return not self.ended and self.consecutive_failures < self.unhealthy_after

    def as_dict(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            "runs": self.runs,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_ok_at": self.last_ok_at,
            "ended": self.ended,
        }


def describe(exc: BaseException) -> str:
    """A short, bounded description of ``exc`` for logs and health (never unbounded input)."""
    if isinstance(exc, AutoscorerError):
        text = f"{exc.code.value}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


async def guarded(label: str, work: Body) -> bool:
    """Run one item's ``work``; True when it ended well. Any exception is logged (with a
    traceback unless it is an ``AutoscorerError``) and swallowed: this is the per-item boundary
    of a background loop, so the loop goes on with its next item."""
    try:
        await work()
    except AutoscorerError as exc:
        log.warning("%s: %s", label, describe(exc))
        return False
    except Exception:  # the per-item boundary of every supervised loop
        log.exception("%s failed unexpectedly", label)
        return False
    return True


@dataclass
class _Loop:
    health: LoopHealth
    forever: bool = False
    beats: bool = False  # it reports progress itself: no guessing from how long it ran
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Starts, watches and stops the background loops of one service."""

    def __init__(
        self,
        service: str,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        unhealthy_after: int = 3,
        recover_after_s: float = 10.0,
    ) -> None:
        self.service = service
        self.recover_after_s = recover_after_s
        self._backoff = backoff_s
        self._max_backoff = max_backoff_s
        self._unhealthy_after = unhealthy_after
        self._loops: dict[str, _Loop] = {}
        self._closing = False

    def forever(self, name: str, body: Body) -> None:
        """Run ``body`` until :meth:`close`; restart it (with back-off) whenever it ends."""
        loop = self._add(name)
        loop.forever = True
        loop.task = asyncio.create_task(self._forever(loop, body), name=f"{self.service}:{name}")

    def every(self, name: str, interval: float, step: Body, *, first: Body | None = None) -> None:
        """Run ``first`` (or ``step``) after ``interval`` seconds, then ``step`` every
        ``interval`` seconds (sooner after :meth:`poke`). Waiting first lets the service start
        before its bus does."""
        loop = self._add(name)
        loop.task = asyncio.create_task(
            self._every(loop, interval, step, first), name=f"{self.service}:{name}"
        )

    def poke(self, name: str) -> None:
        """Run a periodic loop's next step now rather than at the end of its period."""
        if name in self._loops:
            self._loops[name].wake.set()

    def beat(self, name: str) -> None:
        """The loop ``name`` made progress (a forever body calls this as it works)."""
        loop = self._loops.get(name)
        if loop is not None:
            loop.beats = True
            loop.health.consecutive_failures = 0
            loop.health.last_ok_at = time.time()

    def health(self) -> dict[str, LoopHealth]:
        for loop in self._loops.values():
            if loop.task is not None and loop.task.done() and not self._closing:
                loop.health.ended = True
            if self._recovered(loop):
                loop.health.consecutive_failures = 0
        return {name: loop.health for name, loop in self._loops.items()}

    def unhealthy(self) -> list[str]:
        """Names of the loops readiness should report (dead, or failing again and again)."""
        return sorted(name for name, h in self.health().items() if not h.healthy)

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop every loop. A library may swallow a cancellation (CI once saw a reaper go on
        after close, and the scheduler's close wait 300 s), so the loops also stop at their
        next turn once closing, and a task still running is cancelled again every 0.2 s; one
        that outlives ``grace_s`` is logged and left, never waited on forever."""
        self._closing = True
        for loop in self._loops.values():
            loop.wake.set()
        pending = {loop.task for loop in self._loops.values() if loop.task is not None}
        deadline = time.monotonic() + grace_s
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.2)
            if pending and time.monotonic() >= deadline:
                log.error(
                    "%s: loops still running %.0f s after close: %s",
                    self.service,
                    grace_s,
                    sorted(task.get_name() for task in pending),
                )
                break
        for loop in self._loops.values():
            if loop.task is not None and loop.task.done() and not loop.task.cancelled():
                loop.task.exception()  # retrieved: a loop that ended by raising was logged

    def _add(self, name: str) -> _Loop:
        if name in self._loops:
            raise ValueError(f"loop {name!r} is already supervised by {self.service}")
        loop = _Loop(LoopHealth(name, unhealthy_after=self._unhealthy_after))
        self._loops[name] = loop
        return loop

    async def _forever(self, loop: _Loop, body: Body) -> None:
        while True:
            ok = await self._run(loop, body)
            if self._closing:
                return
            if ok:
                log.error(
                    "%s: loop %s ended on its own; starting it again",
                    self.service,
                    loop.health.name,
                )
                loop.health.consecutive_failures += 1
            loop.health.restarts += 1
            await asyncio.sleep(self._delay(loop.health))

    async def _every(self, loop: _Loop, interval: float, step: Body, first: Body | None) -> None:
        await self._pause(loop, interval)
        if first is not None:
            while not self._closing and not await self._run(loop, first):
                await self._pause(loop, max(interval, self._delay(loop.health)))
        elif not self._closing:
            await self._run(loop, step)
        while not self._closing:
            delay = (
                interval
                if loop.health.consecutive_failures == 0
                else max(interval, self._delay(loop.health))
            )
            await self._pause(loop, delay)
            if self._closing:
                return
            await self._run(loop, step)

    async def _pause(self, loop: _Loop, seconds: float) -> None:
        # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation that arrives
        # as the wait ends (gh-86296)
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await loop.wake.wait()
        if not self._closing:
            loop.wake.clear()

    async def _run(self, loop: _Loop, body: Body) -> bool:
        h = loop.health
        h.runs += 1
        h.running_since = time.monotonic()
        try:
            await body()
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if self._closing or (task is not None and task.cancelling()):
                raise  # close(), or whoever owns the task, cancelled it
            self._failed(h, exc, self._recovered(loop))
            log.warning("%s: loop %s was cancelled from inside", self.service, h.name)
            return False
        except AutoscorerError as exc:
            self._failed(h, exc, self._recovered(loop))
            log.warning("%s: loop %s: %s", self.service, h.name, describe(exc))
            return False
        except Exception as exc:  # the one boundary of every supervised background loop
            self._failed(h, exc, self._recovered(loop))
            log.exception("%s: loop %s failed unexpectedly", self.service, h.name)
            return False
        finally:
            h.running_since = None
        h.consecutive_failures = 0
        h.last_ok_at = time.time()
        return True

    def _recovered(self, loop: _Loop) -> bool:
        """A forever body that does not beat has gone ``recover_after_s`` without failing."""
        if not loop.forever or loop.beats:
            return False
        since = loop.health.running_since
        return since is not None and time.monotonic() - since >= self.recover_after_s

    @staticmethod
    def _failed(h: LoopHealth, exc: BaseException, fresh: bool = False) -> None:
        h.failures += 1
        h.consecutive_failures = 1 if fresh else h.consecutive_failures + 1
        h.last_error = describe(exc)

    def _delay(self, h: LoopHealth) -> float:
        exponent = max(0, min(h.consecutive_failures - 1, 16))
        return float(min(self._max_backoff, self._backoff * 2.0**exponent))
