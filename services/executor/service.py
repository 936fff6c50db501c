"""The executor service: one replica serving one backend alias (docs/SERVICES.md, step 3).

It consumes ``run.requested.<backend>`` from the queue ``executor.<backend>`` with bounded
concurrency. Each attempt (job id, attempt number) runs as a task the *service* owns, not the
delivery: ``RunStarted`` is published first, ``RunHeartbeat`` every ``heartbeat_s`` while the
backend runs (one supervised loop for all runs), then ``RunCompleted``; the delivery that asked
for it waits for that task and is acknowledged (the handler returns) only once ``RunCompleted``
was published. A replica that dies mid-run therefore leaves the request to be redelivered.

Decisions this module settles:

* The run outlives its delivery. A broker blip closes the delivery's channel and cancels its
  handler, not the run: the container keeps running, heartbeats keep being tried, and the
  broker's redelivery of the same request *joins* the running attempt (waits for it) instead of
  starting another. Only an explicit stop ends a run early: a cancel (``JobCancelled`` /
  ``CancelRequested``), a newer attempt of the same job, or ``close()`` handing it back.
* The ``RunCompleted`` of an attempt has an id derived from its request
  (``derived_event_id(request.event_id, "run.completed")``): every delivery of one request is
  answered with the same event, which consumers dedupe on ``event_id``.
* Failures of the run, the participant's or the platform's, end as a ``RunCompleted`` whose
  ``outcome.error`` says which (a retryable platform error such as ``BACKEND_UNAVAILABLE`` keeps
  ``retryable=True``); the scheduler alone decides on another attempt. The bus only retries what
  happened *around* the run: publishing failed (``BUS_ERROR``) or the replica handed it back.
* Hand back: ``close()`` stops taking new work, lets in-flight runs finish within ``grace_s``,
  then cancels the rest and raises a retryable ``EXEC_ERROR`` from their handlers, so the bus
  delivers the request again (to another replica) and no ``RunCompleted`` is sent for them.
* Dedupe: the ``RunCompleted`` of the last ``memo_size`` attempts is remembered; a duplicate
  ``RunRequested`` re-publishes it (same ``event_id``: the scheduler drops it) instead of running
  again, and one arriving while the same attempt runs here joins that run.
* Dedupe across restarts and replicas: an attempt's ``RunCompleted`` is also written to the
  workspace (``logs/run_completed.json``, :data:`ANSWER_FILE`) before it is published. A
  request delivered again to a replica that does not remember it (restarted after a kill, or
  another replica after a broker restart) is answered from that file when it is the same
  request, and dropped when a newer attempt of the job has answered: re-running it would empty
  ``output/`` while the scheduler already has the answer and the scorer reads those files.
  A workspace this replica cannot reach (a URI) has no such file; the memo alone dedupes then.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal
from uuid import UUID

from pydantic import ValidationError

from services.executor.base import Executor
from shared.bus import EventBus, RetryPolicy, Subscription
from shared.errors import AutoscorerError, ErrorCode, Stage, execution_error, internal_error
from shared.events import (
    Event,
    RunCompleted,
    RunHeartbeat,
    RunRequested,
    RunStarted,
    derived_event_id,
)
from shared.files import atomic_write_text
from shared.joblog import arecord, reachable
from shared.memo import BoundedMemo
from shared.models import JobSpec, RunOutcome
from shared.retention import remove_participant_view
from shared.supervise import Supervisor, describe, guarded
from shared.workspace import Workspace

log = logging.getLogger(__name__)

MAX_LEASE_S = 24 * 3600.0
STOP_TIMEOUT_S = 30.0
"""How long ``close()`` waits for a cancelled run to stop before leaving it to the bus."""

CANCEL_RETRY_S = 0.25
"""How soon a cancel the backend could not place yet (the run is still starting) is tried again."""

ANSWER_FILE = "run_completed.json"
"""In the workspace's ``logs/``: the ``RunCompleted`` of the job's last answered attempt."""

HANDBACK_RETRY = RetryPolicy(max_attempts=10, delays=(1.0, 5.0, 15.0, 30.0))
"""Bus redelivery of a handed-back or unpublished run: a closing replica must not exhaust it."""


@dataclass(frozen=True, slots=True)
class ExecutorServiceConfig:
    backend: str
    instance: str
    concurrency: int = 2
    heartbeat_s: float = 10.0
    max_time_limit_s: int = 7 * 24 * 3600
    run_margin_s: float = 600.0
    grace_s: float = 30.0
    memo_size: int = 1024
    queue_prefix: str = ""
    cleanup_on_start: bool = True
    retry: RetryPolicy = HANDBACK_RETRY

    @property
    def queue(self) -> str:
        return f"{self.queue_prefix}executor.{self.backend}"

    @property
    def cancel_queue(self) -> str:
        """One per replica: every replica hears every cancel."""
        return f"{self.queue}.cancel.{self.instance}"

    @property
    def handler_timeout(self) -> float:
        """The longest run accepted plus the time around it; the bus gives up after this."""
        return self.max_time_limit_s + self.run_margin_s

    @property
    def lease_ttl_s(self) -> float:
        """Three missed heartbeats and the scheduler may take the job back."""
        return min(3 * self.heartbeat_s, MAX_LEASE_S)


@dataclass(slots=True)
class _Run:
    """One attempt running here, owned by the service (not by the delivery that asked for it)."""

    request: RunRequested
    done: asyncio.Event = field(default_factory=asyncio.Event)
    handed_back: bool = False
    task: asyncio.Task[RunCompleted] | None = None
    started_at: float | None = None  # loop time of RunStarted; heartbeats go while it is set
    beat: asyncio.Task[None] | None = None  # the heartbeat being published, if any
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    """The request's context (its consumer span, its job for logs): heartbeats run in a copy,
    so they continue the job's trace and log with its job id."""

    @property
    def job_id(self) -> str:
        return self.request.job_id

    @property
    def key(self) -> tuple[str, int]:
        return (self.request.job_id, self.request.attempt)


class ExecutorService:
    def __init__(self, config: ExecutorServiceConfig, bus: EventBus, executor: Executor) -> None:
        self._config = config
        self._bus = bus
        self._executor = executor
        self._active: dict[tuple[str, int], _Run] = {}
        self._slots = asyncio.Semaphore(config.concurrency)
        self._completed: BoundedMemo[tuple[str, int], RunCompleted] = BoundedMemo(config.memo_size)
        self._cancelled: BoundedMemo[str, bool] = BoundedMemo(config.memo_size)
        self._closing = False
        self._closed = asyncio.Event()
        self.supervisor = Supervisor(f"executor.{config.backend}")
        """The service's background loops (``heartbeats``); readiness reads its health."""

    @property
    def config(self) -> ExecutorServiceConfig:
        return self._config

    @property
    def in_flight(self) -> int:
        """Runs this replica holds now, running or waiting for a slot (a metric reads it)."""
        return len(self._active)

    async def start(self) -> None:
        """Remove what a previous life of this backend left behind, then subscribe."""
        if self._config.cleanup_on_start:
            removed = await self._executor.cleanup_leftovers(())
            log.info("removed %d leftover run(s) of backend %s", removed, self._config.backend)
        self.supervisor.every("heartbeats", self._config.heartbeat_s, self._beat_all)
        await self._bus.subscribe(
            Subscription(
                self._config.queue,
                [f"run.requested.{self._config.backend}"],
                self._on_run_requested,
                concurrency=self._config.concurrency,
                retry=self._config.retry,
                handler_timeout=self._config.handler_timeout,
            )
        )
        await self._bus.subscribe(
            Subscription(
                self._config.cancel_queue, ["job.cancelled", "cancel.requested"], self._on_cancel
            )
        )

    async def close(self) -> None:
        """Stop taking work; finish in-flight runs within ``grace_s``; hand back the rest."""
        if self._closing:
            return
        self._closing = True
        await _wait_all(list(self._active.values()), self._config.grace_s)
        left = list(self._active.values())
        for run in left:
            run.handed_back = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                # all at once: a run still waiting for a slot only ends when the others free one
                await asyncio.gather(*(self._stop(run) for run in left))
                await _wait_all(left, STOP_TIMEOUT_S)
        # a run the backend could not stop in time is abandoned to the bus (it is handed back)
        tasks = [run.task for run in left if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.supervisor.close()
        self._closed.set()

    # -- handlers ------------------------------------------------------------------------------

    async def _on_run_requested(self, event: Event) -> None:
        if not isinstance(event, RunRequested):
            return
        key = (event.job_id, event.attempt)
        completed = self._completed.get(key)
        if completed is None and key not in self._active:
            recorded = await asyncio.to_thread(_recorded_answer, event.workspace)
            if _is_newer(recorded, event):
                log.warning("run %s attempt %d is past: a newer attempt has answered", *key)
                return
            if recorded is not None and recorded.event_id == _answer_id(event):
                completed = recorded
        if completed is not None:
            log.info("duplicate request for run %s attempt %d; re-publishing its result", *key)
            await self._bus.publish(completed)
            return
        run = self._active.get(key)  # no await from here to _begin: a duplicate joins
        if run is not None:
            log.info("run %s attempt %d is already running here; joining it", *key)
        elif self._closing:
            await self._closed.wait()
            raise _handed_back(event)
        else:
            run = self._begin(event)
        assert run.task is not None
        await _join(run.task, event)

    def _begin(self, event: RunRequested) -> _Run:
        """Register the attempt and start its run as a task of the service (synchronously, so
        a duplicate delivered meanwhile finds it and joins)."""
        run = self._active[(event.job_id, event.attempt)] = _Run(event)
        run.task = asyncio.create_task(self._work(run), name=f"run:{event.job_id}:{event.attempt}")
        run.task.add_done_callback(_log_unjoined_failure)
        return run

    async def _work(self, run: _Run) -> RunCompleted:
        """One attempt from start to its published ``RunCompleted``; raises a retryable error
        when it was handed back (no answer) or the answer could not be published."""
        event = run.request
        try:
            await self._supersede(event)
            async with self._slots:  # runs a blip left without a delivery still count
                if run.handed_back:  # close() came first: it never started
                    raise _handed_back(event)
                completed = await self._attempt(event, run)
                # a run that beat the hand-back to the finish is answered like any other
                run.handed_back = run.handed_back and completed.outcome.status == "cancelled"
                if not run.handed_back:  # kept before the slot frees: the next run waits for it
                    self._completed.put(run.key, completed)
                    await asyncio.to_thread(_record_answer, completed)
        finally:
            del self._active[run.key]
            run.done.set()
        if run.handed_back:
            raise _handed_back(event)
        await self._bus.publish(completed)
        return completed

    async def _supersede(self, event: RunRequested) -> None:
        """Stop older attempts of the same job still running here: the scheduler has given up on
        them (e.g. a run redelivered after a crash whose lease expired meanwhile), and a backend
        runs one container per job. Their cancelled RunCompleted is ignored as stale."""
        older = [
            r for (job, n), r in self._active.items() if job == event.job_id and n < event.attempt
        ]
        for run in older:
            log.warning(
                "attempt %d of %s supersedes an older attempt running here; stopping it",
                event.attempt,
                event.job_id,
            )
            await self._stop(run)
            await run.done.wait()

    async def _on_cancel(self, event: Event) -> None:
        if event.job_id is None:
            return
        self._cancelled.put(event.job_id, True)
        for run in [r for r in self._active.values() if r.job_id == event.job_id]:
            log.info("cancelling run %s (%s)", event.job_id, event.type)
            await self._stop(run)

    # -- one attempt -----------------------------------------------------------------------------

    async def _attempt(self, event: RunRequested, run: _Run) -> RunCompleted:
        outcome = self._refusal(event)
        if outcome is None:
            await self._bus.publish(
                RunStarted(
                    event_id=derived_event_id(event.event_id, "run.started"),
                    job_id=event.job_id,
                    backend=self._config.backend,
                    attempt=event.attempt,
                    instance=self._config.instance,
                    lease_ttl_s=self._config.lease_ttl_s,
                )
            )
            run.started_at = asyncio.get_running_loop().time()
            await self._journal(event, "run_started")
            try:
                outcome = await self._execute(event)
            finally:
                await _stop_beating(run)
        await self._journal(event, "run_completed", outcome)
        return RunCompleted(
            event_id=_answer_id(event),
            job_id=event.job_id,
            outcome=outcome,
            attempt=event.attempt,
            workspace=event.workspace,
        )

    async def _journal(
        self, event: RunRequested, step: str, outcome: RunOutcome | None = None
    ) -> None:
        """One line in this service's log (DEBUG) and in the workspace's ``logs/job.jsonl``."""
        code = outcome.error.code.value if outcome and outcome.error else None
        status = outcome.status if outcome else None
        log.debug(
            "%s %s attempt %d %s",
            step,
            event.job_id,
            event.attempt,
            status or "",
            extra={"error_code": code},
        )
        await arecord(
            event.workspace,
            step,
            event.job_id,
            attempt=event.attempt,
            service="executor",
            only_if_reachable=True,
            backend=self._config.backend,
            instance=self._config.instance,
            status=status,
            error_code=code,
            exit_code=outcome.exit_code if outcome else None,
            duration_s=outcome.duration_s if outcome else None,
        )

    def _refusal(self, event: RunRequested) -> RunOutcome | None:
        """The outcome of a run that must not start: already cancelled, or too long to hold."""
        if event.job_id in self._cancelled:
            error = execution_error(ErrorCode.CANCELLED, "the job was cancelled before it ran")
            return self._failed(event.spec, error, status="cancelled")
        limit = self._config.max_time_limit_s
        if event.spec.time_limit > limit:
            # the same answer as the operator's caps (shared.limits): the job asked too much
            error = AutoscorerError(
                ErrorCode.RESOURCE_LIMIT_EXCEEDED,
                f"time_limit {event.spec.time_limit}s exceeds this executor's maximum of {limit}s",
                stage=Stage.CONFIG,
                details={
                    "exceeded": [
                        {"field": "time_limit", "asked": event.spec.time_limit, "cap": limit}
                    ]
                },
            )
            return self._failed(event.spec, error)
        return None

    async def _execute(self, event: RunRequested) -> RunOutcome:
        """The service's error boundary: whatever the backend raises becomes the outcome."""
        spec = event.spec
        try:
            ws = Workspace.at(event.workspace)
            try:
                return await self._executor.run(spec, ws)
            finally:  # retention: the participant view goes after every run, on every backend
                await asyncio.to_thread(remove_participant_view, ws)
        except AutoscorerError as exc:
            log.warning("run %s failed: %r", spec.job_id, exc)
            return self._failed(spec, exc)
        except Exception as exc:  # the one boundary: a backend bug still ends the run, visibly
            log.exception("backend %s crashed running %s", self._executor.name, spec.job_id)
            return self._failed(spec, internal_error(exc, stage=Stage.EXECUTION))

    # -- heartbeats ------------------------------------------------------------------------------

    async def _beat_all(self) -> None:
        """One step of the ``heartbeats`` loop: a beat for every run going here. A beat still
        being published (the broker is away) is left to finish; that run skips this step."""
        for run in list(self._active.values()):
            if run.started_at is None or (run.beat is not None and not run.beat.done()):
                continue
            run.beat = asyncio.create_task(
                self._beat(run),
                name=f"heartbeat:{run.job_id}:{run.request.attempt}",
                context=run.context.copy(),
            )

    async def _beat(self, run: _Run) -> None:
        started = run.started_at
        if started is None:
            return
        event = run.request
        beat = RunHeartbeat(
            job_id=event.job_id,
            backend=self._config.backend,
            attempt=event.attempt,
            instance=self._config.instance,
            elapsed_s=round(asyncio.get_running_loop().time() - started, 3),
            lease_ttl_s=self._config.lease_ttl_s,
        )
        # a missed beat only shortens the lease; the next step tries again
        await guarded(f"heartbeat for {event.job_id}", partial(self._publish_beat, beat))

    async def _publish_beat(self, beat: RunHeartbeat) -> None:
        async with asyncio.timeout(self._config.lease_ttl_s):
            await self._bus.publish(beat)

    async def _stop(self, run: _Run) -> None:
        """Cancel until the backend holds the run (it may still be starting) or the run ends."""
        while not run.done.is_set():
            try:
                if await self._executor.cancel(run.job_id):
                    return
            except AutoscorerError as exc:
                log.warning("could not cancel run %s: %r", run.job_id, exc)
            await _wait_all([run], CANCEL_RETRY_S)

    def _failed(
        self,
        spec: JobSpec,
        error: AutoscorerError,
        *,
        status: Literal["failed", "cancelled"] = "failed",
    ) -> RunOutcome:
        return RunOutcome(
            job_id=spec.job_id, backend=self._executor.name, status=status, error=error.to_info()
        )


async def _stop_beating(run: _Run) -> None:
    """No heartbeat for ``run`` after this (none may follow its ``RunCompleted``)."""
    run.started_at = None
    if run.beat is not None and not run.beat.done():
        run.beat.cancel()
        await asyncio.gather(run.beat, return_exceptions=True)


def _log_unjoined_failure(task: asyncio.Task[RunCompleted]) -> None:
    """A run whose delivery was gone when it ended (a broker blip) has nobody to raise to: say
    what happened; the broker redelivers the request, which re-publishes or hands back again."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("%s ended without an answer: %s", task.get_name(), describe(exc))


async def _wait_all(runs: list[_Run], within: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            for run in runs:
                await run.done.wait()


async def _join(task: asyncio.Task[RunCompleted], event: RunRequested) -> None:
    """Wait for the run of ``event``'s attempt. Shielded: when the bus cancels this handler (its
    channel died in a broker blip), the run goes on, and the broker's redelivery of the request
    joins it again. A run that ``close()`` had to cancel is handed back."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and (current is None or current.cancelling() == 0):
            raise _handed_back(event) from None
        raise


def _answer_id(request: RunRequested) -> UUID:
    """The id of the ``RunCompleted`` answering ``request`` (every delivery of it)."""
    return derived_event_id(request.event_id, "run.completed")


def _answer_path(workspace: str | None) -> Path | None:
    if workspace is None or not reachable(workspace):
        return None
    return Workspace.at(workspace).logs_dir / ANSWER_FILE


def _record_answer(completed: RunCompleted) -> None:
    """Keep ``completed`` in its workspace (runs in a thread); a failure only costs the dedupe
    across restarts, so it is logged, not raised."""
    path = _answer_path(completed.workspace)
    if path is None:
        return
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write_text(path, completed.model_dump_json())
    except OSError as exc:
        log.warning("answer of %s not kept in its workspace: %s", completed.job_id, exc)


def _recorded_answer(workspace: str) -> RunCompleted | None:
    """The answer kept in ``workspace`` (runs in a thread); ``None`` when there is none or it
    cannot be read (then the request runs, as without the file)."""
    path = _answer_path(workspace)
    if path is None:
        return None
    try:
        return RunCompleted.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("answer kept in %s unreadable: %s", workspace, exc)
        return None


def _is_newer(recorded: RunCompleted | None, request: RunRequested) -> bool:
    """Whether a later attempt of ``request``'s job has answered already."""
    return (
        recorded is not None
        and recorded.job_id == request.job_id
        and recorded.attempt > request.attempt
    )


def _handed_back(event: RunRequested) -> AutoscorerError:
    return AutoscorerError(
        ErrorCode.EXEC_ERROR,
        f"executor replica is shutting down; run {event.job_id} attempt {event.attempt} "
        "handed back",
        stage=Stage.EXECUTION,
        details={"reason": "handed_back", "attempt": event.attempt},
    )
