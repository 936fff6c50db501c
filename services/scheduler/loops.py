"""Background work (the relay sweep, the lease monitor) run periodically.

This is the scheduler's one boundary for work no bus delivery carries: a platform error is
logged and the step runs again next period; an unexpected one is logged with its traceback
and the loop goes on, so one bad job cannot stop the sweeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.errors import AutoscorerError

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]


async def every(interval: float, step: Step, *, name: str, first: Step | None = None) -> None:
    """Run ``first`` (or ``step``) after ``interval`` seconds, then ``step`` every ``interval``
    seconds, forever. Waiting first lets the service start before its bus does."""
    await asyncio.sleep(interval)
    await _once(first or step, name)
    while True:
        await asyncio.sleep(interval)
        await _once(step, name)


async def _once(step: Step, name: str) -> None:
    try:
        await step()
    except AutoscorerError as exc:
        log.warning("%s: %s %s", name, exc.code.value, exc.message)
    except Exception:  # the one boundary of the scheduler's background loops
        log.exception("%s failed unexpectedly", name)
