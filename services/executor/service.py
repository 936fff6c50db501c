"""The executor service: one replica serving one backend alias (docs/SERVICES.md, step 3).

It consumes ``run.requested.<backend>`` from the queue ``executor.<backend>`` with bounded
concurrency and holds each message for the whole run: ``RunStarted`` is published first,
``RunHeartbeat`` every ``heartbeat_s`` while the backend runs, then ``RunCompleted``, and only
then is the message acknowledged (the handler returns). A replica that dies mid-run therefore
leaves the request to be redelivered.

Decisions this module settles:

* Failures of the run, the participant's or the platform's, end as a ``RunCompleted`` whose
  ``outcome.error`` says which (a retryable platform error such as ``BACKEND_UNAVAILABLE`` keeps
  ``retryable=True``); the scheduler alone decides on another attempt. The bus only retries what
  happened *around* the run: publishing failed (``BUS_ERROR``) or the replica handed it back.
* Hand back: ``close()`` stops taking new work, lets in-flight runs finish within ``grace_s``,
  then cancels the rest and raises a retryable ``EXEC_ERROR`` from their handlers, so the bus
  delivers the request again (to another replica) and no ``RunCompleted`` is sent for them.
* Dedupe: the ``RunCompleted`` of the last ``memo_size`` attempts is remembered; a duplicate
  ``RunRequested`` re-publishes it (same ``event_id``: the scheduler drops it) instead of running
  again, and one arriving while the same attempt runs here waits for that run. Nothing is
  remembered across restarts or between replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from services.executor.base import Executor
from services.executor.memo import BoundedMemo
from shared.bus import EventBus, RetryPolicy
from shared.errors import AutoscorerError, ErrorCode, Stage, execution_error, internal_error
from shared.events import Event, RunCompleted, RunHeartbeat, RunRequested, RunStarted
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace

log = logging.getLogger(__name__)

MAX_LEASE_S = 24 * 3600.0
STOP_TIMEOUT_S = 30.0
"""How long ``close()`` waits for a cancelled run to stop before leaving it to the bus."""

CANCEL_RETRY_S = 0.25
"""How soon a cancel the backend could not place yet (the run is still starting) is tried again."""

HANDBACK_RETRY = RetryPolicy(max_attempts=10, delays=(1.0, 5.0, 15.0, 30.0))
"""Bus redelivery of a handed-back or unpublished run: a closing replica must not exhaust it."""

Prepare = Callable[[JobSpec], JobSpec]


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
    job_id: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    handed_back: bool = False


def _unchanged(spec: JobSpec) -> JobSpec:
    return spec


class ExecutorService:
    def __init__(
        self,
        config: ExecutorServiceConfig,
        bus: EventBus,
        executor: Executor,
        *,
        prepare: Prepare = _unchanged,
    ) -> None:
        self._config = config
        self._bus = bus
        self._executor = executor
        self._prepare = prepare
        self._active: dict[tuple[str, int], _Run] = {}
        self._completed: BoundedMemo[tuple[str, int], RunCompleted] = BoundedMemo(config.memo_size)
        self._cancelled: BoundedMemo[str, bool] = BoundedMemo(config.memo_size)
        self._closing = False
        self._closed = asyncio.Event()

    @property
    def config(self) -> ExecutorServiceConfig:
        return self._config

    async def start(self) -> None:
        """Remove what a previous life of this backend left behind, then subscribe."""
        if self._config.cleanup_on_start:
            removed = await self._executor.cleanup_leftovers(())
            log.info("removed %d leftover run(s) of backend %s", removed, self._config.backend)
        await self._bus.subscribe(
            self._config.queue,
            [f"run.requested.{self._config.backend}"],
            self._on_run_requested,
            concurrency=self._config.concurrency,
            retry=self._config.retry,
            handler_timeout=self._config.handler_timeout,
        )
        await self._bus.subscribe(
            self._config.cancel_queue, ["job.cancelled", "cancel.requested"], self._on_cancel
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
                for run in left:
                    await self._stop(run)
                await _wait_all(left, STOP_TIMEOUT_S)
        self._closed.set()

    # -- handlers ------------------------------------------------------------------------------

    async def _on_run_requested(self, event: Event) -> None:
        if not isinstance(event, RunRequested):
            return
        key = (event.job_id, event.attempt)
        if await self._answered(key):
            return
        if self._closing:
            await self._closed.wait()
            raise _handed_back(event)
        await self._supersede(event)
        run = self._active[key] = _Run(event.job_id)
        try:
            completed = await self._attempt(event, run)
            # a run that beat the hand-back to the finish is answered like any other
            run.handed_back = run.handed_back and completed.outcome.status == "cancelled"
            if not run.handed_back:
                self._completed.put(key, completed)
        finally:
            del self._active[key]
            run.done.set()
        if run.handed_back:
            raise _handed_back(event)
        await self._bus.publish(completed)

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

    async def _answered(self, key: tuple[str, int]) -> bool:
        """True when this attempt already completed here (its RunCompleted is re-published)."""
        running = self._active.get(key)
        if running is not None:
            log.info("run %s attempt %d is already running here; waiting for it", *key)
            await running.done.wait()
        completed = self._completed.get(key)
        if completed is not None:
            log.info("duplicate request for run %s attempt %d; re-publishing its result", *key)
            await self._bus.publish(completed)
            return True
        if running is not None:  # the run it waited for was handed back
            raise _handed_back_key(*key)
        return False

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
                    job_id=event.job_id,
                    backend=self._config.backend,
                    attempt=event.attempt,
                    instance=self._config.instance,
                    lease_ttl_s=self._config.lease_ttl_s,
                )
            )
            outcome = await self._run_with_heartbeats(event)
        return RunCompleted(
            job_id=event.job_id, outcome=outcome, attempt=event.attempt, workspace=event.workspace
        )

    def _refusal(self, event: RunRequested) -> RunOutcome | None:
        """The outcome of a run that must not start: already cancelled, or too long to hold."""
        if event.job_id in self._cancelled:
            error = execution_error(ErrorCode.CANCELLED, "the job was cancelled before it ran")
            return self._failed(event.spec, error, status="cancelled")
        limit = self._config.max_time_limit_s
        if event.spec.time_limit > limit:
            error = execution_error(
                ErrorCode.CONFIG_VALIDATION_ERROR,
                f"time_limit {event.spec.time_limit}s exceeds this executor's maximum of {limit}s",
                time_limit=event.spec.time_limit,
                max_time_limit_s=limit,
            )
            return self._failed(event.spec, error)
        return None

    async def _run_with_heartbeats(self, event: RunRequested) -> RunOutcome:
        beat = asyncio.create_task(self._heartbeat(event), name=f"heartbeat:{event.job_id}")
        try:
            return await self._execute(event)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def _execute(self, event: RunRequested) -> RunOutcome:
        """The service's error boundary: whatever the backend raises becomes the outcome."""
        spec = event.spec
        try:
            spec = self._prepare(spec)
            return await self._executor.run(spec, Workspace.at(event.workspace))
        except AutoscorerError as exc:
            log.warning("run %s failed: %r", spec.job_id, exc)
            return self._failed(spec, exc)
        except Exception as exc:  # the one boundary: a backend bug still ends the run, visibly
            log.exception("backend %s crashed running %s", self._executor.name, spec.job_id)
            return self._failed(spec, internal_error(exc, stage=Stage.EXECUTION))

    async def _heartbeat(self, event: RunRequested) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await asyncio.sleep(self._config.heartbeat_s)
            beat = RunHeartbeat(
                job_id=event.job_id,
                backend=self._config.backend,
                attempt=event.attempt,
                instance=self._config.instance,
                elapsed_s=round(loop.time() - started, 3),
                lease_ttl_s=self._config.lease_ttl_s,
            )
            try:
                await self._bus.publish(beat)
            except AutoscorerError as exc:  # a missed beat only shortens the lease
                log.warning("heartbeat for %s not published: %r", event.job_id, exc)

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


async def _wait_all(runs: list[_Run], within: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            for run in runs:
                await run.done.wait()


def _handed_back(event: RunRequested) -> AutoscorerError:
    return _handed_back_key(event.job_id, event.attempt)


def _handed_back_key(job_id: str, attempt: int) -> AutoscorerError:
    return AutoscorerError(
        ErrorCode.EXEC_ERROR,
        f"executor replica is shutting down; run {job_id} attempt {attempt} handed back",
        stage=Stage.EXECUTION,
        details={"reason": "handed_back", "attempt": attempt},
    )
