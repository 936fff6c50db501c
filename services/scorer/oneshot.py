"""Score one task in one fresh worker process, under a time limit (the CLI's ``score``).

The worker is started like a pool worker (``start_worker``: it dies with its parent, imports the
built-ins) and scores with ``score_in_worker``; its stdout goes to stderr so a scorer's print()
cannot mix into the CLI's JSON. Past the time limit it is killed: SCORE_TIMEOUT; a worker that
dies without a result: SCORE_ERROR. ``quiet_logging`` is the logging of the CLI and its workers:
no traceback on stderr below DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from typing import Any

from services.scorer.pool import (
    ScoreTask,
    died_message,
    failure_result,
    score_in_worker,
    start_worker,
    timeout_message,
    write_result,
)
from shared.errors import ErrorCode
from shared.models import Result

STARTUP_LIMIT_S = 120.0
"""How long a fresh worker may take to import the built-ins (not the scorer's time)."""


def score_once(task: ScoreTask, time_limit: float, *, log_level: int = logging.WARNING) -> Result:
    """Score ``task`` in a fresh worker process that dies with this one; blocking.

    SCORE_TIMEOUT (and the worker killed) past ``time_limit``; SCORE_ERROR if the worker dies.
    The worker logs at ``log_level`` to stderr, tracebacks only at DEBUG.
    """
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(
        target=_score_and_send, args=(task, send, os.getpid(), log_level), daemon=True
    )
    worker.start()
    send.close()
    try:
        result = _receive(receive, task, time_limit)
    finally:
        receive.close()
        worker.kill()
        worker.join()
    if isinstance(result, Result):
        return result
    code, message = result
    failure = failure_result(code, message, task)
    write_result(task, failure)  # what the killed or dead worker could not write
    return failure


def _receive(receive: Any, task: ScoreTask, time_limit: float) -> Result | tuple[ErrorCode, str]:
    """The worker's result, or the failure to report for a worker that gave none. The time
    limit starts once the worker has imported the built-ins (as in the pool)."""
    try:
        if receive.poll(STARTUP_LIMIT_S):
            receive.recv()  # "ready"
    except (EOFError, OSError):
        return ErrorCode.SCORE_ERROR, died_message(task)
    if not receive.poll(time_limit):
        return ErrorCode.SCORE_TIMEOUT, timeout_message(task, time_limit)
    try:
        result: Result = receive.recv()
    except (EOFError, OSError):
        return ErrorCode.SCORE_ERROR, died_message(task)
    return result


def _score_and_send(task: ScoreTask, send: Any, parent: int, log_level: int) -> None:
    _stdout_to_stderr()  # a scorer's print() must not mix into the CLI's --json output
    quiet_logging(log_level)
    start_worker(parent)
    send.send(None)
    send.send(score_in_worker(task))
    send.close()


def _stdout_to_stderr() -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr


class _NoTraceback(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""


def quiet_logging(level: int) -> None:
    """Log to stderr at ``level``; below DEBUG no record shows a traceback, and records that
    carry one (errors a boundary reports in the standard form anyway) are left out. Like
    ``basicConfig``, nothing changes where the root logger already has a handler."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if level > logging.DEBUG:
        handler.setFormatter(_NoTraceback("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(lambda record: record.exc_info is None)
    root.addHandler(handler)
    root.setLevel(level)
