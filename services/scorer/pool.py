"""Scoring in worker processes, with a time limit that kills only the worker that ran past it.

The pool is ``size`` slots, each a one-process ``ProcessPoolExecutor`` (spawned, so a worker
shares no locks or threads with the asyncio service). A job takes a free slot; when it runs past
the time limit its process is killed and the slot gets a fresh one, so the other slots keep
scoring. A worker that dies (a scorer calling ``os._exit``, a segfault) is replaced the same way.

Workers keep their own registry. Each task carries the service's plugin manifest (plugin file,
sha256); a worker (re)loads the files whose sha256 it has not loaded yet and drops the ones no
longer listed, so scorers loaded at run time reach the workers with the next job.

A worker never outlives the process that started it, even one killed with SIGKILL: on Linux the
kernel sends it SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), and everywhere a watchdog
thread exits it once its parent pid changes. ``score_once`` runs one task the same way in a
fresh worker (the CLI's ``score``), with the same time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.scorer.engine import score_workspace
from services.scorer.plugins import Manifest
from services.scorer.registry import ScorerRegistry
from shared.errors import AutoscorerError, ErrorCode, Stage, internal_error
from shared.files import atomic_write_text
from shared.models import Result
from shared.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScoreTask:
    """One scoring; ``scorer`` and ``params`` default to the workspace's meta.json."""

    workspace: str
    scorer: str | None
    params: Mapping[str, Any] | None
    plugins: Manifest = ()
    write: bool = True

    @property
    def label(self) -> str:
        return self.scorer or "the scorer"


WATCHDOG_INTERVAL_S = 0.5
STARTUP_LIMIT_S = 120.0
"""How long a fresh one-shot worker may take to import the built-ins (not the scorer's time)."""
_PR_SET_PDEATHSIG = 1


# -- inside a worker process ---------------------------------------------------------------------


@dataclass
class _WorkerState:
    registry: ScorerRegistry | None = None
    loaded: dict[str, str] = field(default_factory=dict)


_WORKER = _WorkerState()


def score_in_worker(task: ScoreTask) -> Result:
    """Score one workspace and write its ``output/result.json`` (runs in a worker)."""
    registry = _synced_registry(task.plugins)
    try:
        ws = Workspace.at(task.workspace)
    except AutoscorerError as exc:
        return Result(error=exc.to_info())
    try:
        return score_workspace(
            registry, ws, scorer=task.scorer, params=task.params, write=task.write
        )
    except Exception as exc:  # the worker's boundary: a bug here must not lose the job
        log.exception("scoring with %s failed unexpectedly", task.label)
        return Result(error=internal_error(exc, stage=Stage.SCORING).to_info())


def warm_up_worker() -> None:
    """Import the built-ins when the worker starts, so the first job's time limit is its own."""
    if _WORKER.registry is None:
        _WORKER.registry = ScorerRegistry.with_builtins()


def start_worker(parent: int) -> None:
    """A worker's initializer: die with ``parent``, then import the built-ins."""
    die_with_parent(parent)
    warm_up_worker()


def die_with_parent(parent: int) -> None:
    """Exit this process when ``parent`` dies: PR_SET_PDEATHSIG on Linux, a watchdog anywhere."""
    if sys.platform.startswith("linux"):
        _set_pdeathsig()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    watchdog = threading.Thread(
        target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True
    )
    watchdog.start()


def _set_pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError) as exc:  # no prctl: the watchdog still works
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCHDOG_INTERVAL_S)
    os._exit(1)


def _synced_registry(plugins: Manifest) -> ScorerRegistry:
    warm_up_worker()
    assert _WORKER.registry is not None
    registry, loaded = _WORKER.registry, _WORKER.loaded
    wanted = dict(plugins)
    for path in set(loaded) - wanted.keys():
        registry.unload_file(Path(path))
        del loaded[path]
    for path, sha in plugins:
        if loaded.get(path) == sha:
            continue
        loaded[path] = sha  # a file that fails keeps failing until it changes
        try:
            registry.load_file(Path(path))
        except AutoscorerError as exc:
            log.warning("worker %d could not load %s: %r", os.getpid(), path, exc)
    return registry


# -- in the service ----------------------------------------------------------------------------


@dataclass
class _Slot:
    executor: ProcessPoolExecutor
    pid: int


class ScoringPool:
    """``size`` worker processes; ``score`` never raises for a scorer's failure."""

    def __init__(self, size: int, time_limit: float) -> None:
        if size < 1:
            raise ValueError("a scoring pool needs at least one worker")
        self._size = size
        self._time_limit = time_limit
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        self._slots: list[_Slot] = []
        self._closed = False

    @property
    def time_limit(self) -> float:
        return self._time_limit

    async def start(self) -> None:
        for _ in range(self._size):
            slot = await _new_slot()
            self._slots.append(slot)
            self._free.put_nowait(slot)

    async def score(self, task: ScoreTask) -> Result:
        """The task's result; SCORE_TIMEOUT past the limit, SCORE_ERROR when the worker died."""
        slot = await self._take()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(slot.executor, score_in_worker, task)
            return await asyncio.wait_for(future, self._time_limit)
        except TimeoutError:
            slot = await self._replace(slot)
            failure = _failure(
                ErrorCode.SCORE_TIMEOUT, _timeout_message(task, self._time_limit), task
            )
        except BrokenProcessPool:
            self._refuse_if_closed()
            slot = await self._replace(slot)
            failure = _failure(ErrorCode.SCORE_ERROR, _died_message(task), task)
        finally:
            self._free.put_nowait(slot)
        await asyncio.to_thread(_write_result, task, failure)
        return failure

    async def close(self) -> None:
        """Kill every worker; ``score`` calls still waiting raise a retryable error."""
        self._closed = True
        slots, self._slots = self._slots, []
        for slot in slots:
            _kill(slot)
        await asyncio.to_thread(_reap, slots)

    async def _take(self) -> _Slot:
        self._refuse_if_closed()
        slot = await self._free.get()
        self._refuse_if_closed()
        return slot

    async def _replace(self, old: _Slot) -> _Slot:
        _kill(old)
        self._slots.remove(old)
        self._refuse_if_closed()
        slot = await _new_slot()
        self._slots.append(slot)
        return slot

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise AutoscorerError(
                ErrorCode.RESOURCE_ERROR,
                "the scoring pool is shutting down; the job is handed back",
                stage=Stage.SCORING,
                details={"reason": "handed_back"},
            )


async def _new_slot() -> _Slot:
    """A one-process executor, started from the loop's thread: PR_SET_PDEATHSIG follows the
    thread that started the worker, so it must be one that lives as long as the process."""
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=start_worker, initargs=(os.getpid(),)
    )
    pid = await asyncio.get_running_loop().run_in_executor(executor, os.getpid)
    return _Slot(executor, pid)


def _kill(slot: _Slot) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(slot.pid, signal.SIGKILL)
    slot.executor.shutdown(wait=False, cancel_futures=True)


def _reap(slots: list[_Slot]) -> None:
    for slot in slots:
        slot.executor.shutdown(wait=True)


def _write_result(task: ScoreTask, result: Result) -> None:
    """What the killed worker could not write; nothing when the workspace has no output/."""
    if not task.write:
        return
    ws = Workspace(Path(task.workspace))
    if not ws.output_dir.is_dir():
        return
    try:
        atomic_write_text(ws.result_path, result.model_dump_json(indent=2))
    except OSError as exc:
        log.warning("could not write %s: %s", ws.result_path, exc)


def _timeout_message(task: ScoreTask, time_limit: float) -> str:
    return f"{task.label} ran past its scoring time limit of {time_limit:g}s"


def _died_message(task: ScoreTask) -> str:
    return f"the process scoring with {task.label} died (the scorer crashed its interpreter)"


def _failure(code: ErrorCode, message: str, task: ScoreTask) -> Result:
    details = {"scorer": task.scorer} if task.scorer else {}
    error = AutoscorerError(code, message, stage=Stage.SCORING, details=details)
    result = Result(error=error.to_info())
    if task.scorer:
        result.versioning["scorer"] = task.scorer
    return result


# -- one task in one fresh worker (the CLI) ------------------------------------------------------


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
    failure = _failure(code, message, task)
    _write_result(task, failure)  # what the killed or dead worker could not write
    return failure


def _receive(receive: Any, task: ScoreTask, time_limit: float) -> Result | tuple[ErrorCode, str]:
    """The worker's result, or the failure to report for a worker that gave none. The time
    limit starts once the worker has imported the built-ins (as in the pool)."""
    try:
        if receive.poll(STARTUP_LIMIT_S):
            receive.recv()  # "ready"
    except (EOFError, OSError):
        return ErrorCode.SCORE_ERROR, _died_message(task)
    if not receive.poll(time_limit):
        return ErrorCode.SCORE_TIMEOUT, _timeout_message(task, time_limit)
    try:
        result: Result = receive.recv()
    except (EOFError, OSError):
        return ErrorCode.SCORE_ERROR, _died_message(task)
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
