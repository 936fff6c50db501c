"""Scoring in worker processes, with a time limit that kills only the worker that ran past it.

The pool is ``size`` slots, each a one-process ``ProcessPoolExecutor`` (spawned, so a worker
shares no locks or threads with the asyncio service). A job takes a free slot; when it runs past
the time limit its process is killed and the slot gets a fresh one, so the other slots keep
scoring. A worker that dies (a scorer calling ``os._exit``, a segfault) is replaced the same way.

Workers keep their own registry. Each task carries the service's plugin manifest (plugin file,
sha256); a worker (re)loads the files whose sha256 it has not loaded yet and drops the ones no
longer listed, so scorers loaded at run time reach the workers with the next job.

A worker never outlives the process that started it, even one killed with SIGKILL
(``services.scorer.lifeline``). ``services.scorer.oneshot`` runs one task the same way in a fresh
worker (the CLI's ``score``), with the same time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.scorer.engine import score_workspace
from services.scorer.lifeline import die_with_parent
from services.scorer.plugins import Manifest
from services.scorer.registry import ScorerRegistry
from shared.config import LogSettings
from shared.errors import AutoscorerError, ErrorCode, Stage, internal_error
from shared.files import atomic_write_text
from shared.logs import installed_logging, setup_logging
from shared.models import JobSpec, Result
from shared.provenance import Submission
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
    submission: Submission | None = None
    """who submitted the job and when, for the provenance (None: the local user)"""
    spec: JobSpec | None = None
    """the job's spec from its event: wins over meta.json, which is then not read"""

    @property
    def label(self) -> str:
        return self.scorer or "the scorer"


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
            registry,
            ws,
            scorer=task.scorer,
            params=task.params,
            write=task.write,
            submission=task.submission,
            spec=task.spec,
        )
    except Exception as exc:  # the worker's boundary: a bug here must not lose the job
        log.exception("scoring with %s failed unexpectedly", task.label)
        return Result(error=internal_error(exc, stage=Stage.SCORING).to_info())


def warm_up_worker() -> None:
    """Import the built-ins when the worker starts, so the first job's time limit is its own."""
    if _WORKER.registry is None:
        _WORKER.registry = ScorerRegistry.with_builtins()


def start_worker(parent: int, logs: tuple[LogSettings, str] | None = None) -> None:
    """A worker's initializer: die with ``parent``, log as it does (``shared.logs``), then
    import the built-ins."""
    die_with_parent(parent)
    if logs is not None:
        setup_logging(*logs)
    warm_up_worker()


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
            failure = failure_result(
                ErrorCode.SCORE_TIMEOUT, timeout_message(task, self._time_limit), task
            )
        except BrokenProcessPool:
            self._refuse_if_closed()
            slot = await self._replace(slot)
            failure = failure_result(ErrorCode.SCORE_ERROR, died_message(task), task)
        finally:
            self._free.put_nowait(slot)
        await asyncio.to_thread(write_result, task, failure)
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
        max_workers=1,
        mp_context=context,
        initializer=start_worker,
        initargs=(os.getpid(), installed_logging()),
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


def write_result(task: ScoreTask, result: Result) -> None:
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


def timeout_message(task: ScoreTask, time_limit: float) -> str:
    return f"{task.label} ran past its scoring time limit of {time_limit:g}s"


def died_message(task: ScoreTask) -> str:
    return f"the process scoring with {task.label} died (the scorer crashed its interpreter)"


def failure_result(code: ErrorCode, message: str, task: ScoreTask) -> Result:
    details = {"scorer": task.scorer} if task.scorer else {}
    error = AutoscorerError(code, message, stage=Stage.SCORING, details=details)
    result = Result(error=error.to_info())
    if task.scorer:
        result.versioning["scorer"] = task.scorer
    return result
