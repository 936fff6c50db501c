"""The outbox: events written into the job document with the change that caused them, and the
one relay that publishes them.

A writer (the gateway's submit, every scheduler transition) stores ``outbox_entry(event)`` in the
same single-document update as its state change, then hands the job to :meth:`OutboxRelay.flush`
(or :func:`publish_pending`) with the events it still holds, which are published as they are;
only entries read back from the store are validated from their stored JSON. An entry is popped
once the broker confirmed it, so a crash in between publishes it again with the same
``event_id``, which consumers drop. :meth:`OutboxRelay.sweep` runs periodically (and at start-up,
for everything) over every writer's leftovers, highest job priority first.

A writer whose job will move again soon (the scheduler, for an active job) may let the pop wait
for that move (``flush(..., hold=True)``): the relay *holds* what it published and the job's
next transition takes it (:meth:`OutboxRelay.take`) and removes it in its own update (the
store's ``transition(pop=...)``), one round trip fewer. A held entry is never published again by
this relay; one held ``hold`` seconds is popped by the next sweep, a held entry of a job that is
finished goes with the pop of the finishing move's own entries, and :meth:`OutboxRelay.close`
pops what is held. ``hold`` plus the sweep interval stays below ``settle``, so another replica's
sweep never takes a held entry for a writer's leftover; only a crash or a failed pop leaves one
to be published again, as they always did.

One rule for every writer says what an entry that cannot be published becomes (:func:`fate`):
an entry that is no valid event is dropped (logged); an unroutable notification (``job.failed``,
``job.cancelled``, ``score.completed``) is dropped, since nobody listens; anything else stays, in
order, for the next try.

Jobs are isolated from each other: each job's relay step is its own guarded item, so a job whose
step fails (a store error or a stale per-job lock on pop, an entry the broker refuses) is logged
and backed off, growing up to ``max_backoff`` seconds, and left out of the store's query while it
waits, so it neither stalls the other jobs' events in that sweep nor fills the next sweep's batch.
A broker that is down is nobody's job's fault: the sweep stops and the supervisor backs it off.

Every entry is published under the current span, or (in a sweep, outside any span) under the
job's ``trace_context``, so every event of a job stays in the job's trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.bus import EventBus
from shared.errors import AutoscorerError, ErrorCode
from shared.events import EVENT_ADAPTER, BaseEvent, malformed_event
from shared.jobs import Job, OutboxEntry, now_ms
from shared.logctx import job_context
from shared.store import JobNotFoundError, JobStore
from shared.supervise import guarded
from shared.telemetry import continue_trace

if TYPE_CHECKING:
    from shared.metrics import Metrics

log = logging.getLogger(__name__)

NOTIFICATIONS = frozenset({"job.failed", "job.cancelled", "score.completed"})
"""Events that only inform: when no queue is bound to them nobody is listening, so an unroutable
one is dropped. Work requests (``run.requested.*``, ``score.requested``, ``job.submitted``) stay
until a consumer binds its queue."""

MAX_SKIPPED = 500
"""At most this many backed-off jobs are left out of one query (the longest-waiting stay out)."""


def outbox_entry(event: BaseEvent) -> OutboxEntry:
    """The stored form of ``event``: its JSON form, which is what the store needs."""
    return OutboxEntry(
        event_id=str(event.event_id), type=event.type, payload=event.model_dump(mode="json")
    )


def entry_event(entry: OutboxEntry) -> BaseEvent:
    """The event a stored entry holds; a payload that is no event raises ``BAD_FORMAT``."""
    try:
        return EVENT_ADAPTER.validate_python(entry.payload)
    except ValidationError as exc:
        raise malformed_event(
            f"outbox entry {entry.event_id} ({entry.type}) is not a valid event",
            event_id=entry.event_id,
            type=entry.type,
        ) from exc


class Fate(StrEnum):
    SENT = "sent"
    DROPPED = "dropped"  # popped unpublished, for good
    KEPT = "kept"  # stays for the next try; the entries after it wait too (order)


def fate(entry: OutboxEntry, exc: AutoscorerError) -> Fate:
    """What becomes of an entry whose publish raised ``exc``: the one rule for every writer."""
    if exc.code is ErrorCode.BAD_FORMAT:
        return Fate.DROPPED
    if exc.details.get("reason") == "unroutable" and entry.type in NOTIFICATIONS:
        return Fate.DROPPED
    return Fate.KEPT


BROKER_DOWN = frozenset({"unavailable", "not_started", "topology"})
"""``BUS_ERROR`` reasons that are about the bus, not about one entry (``unroutable`` and
``nacked`` are about the entry)."""


def broker_down(exc: AutoscorerError) -> bool:
    """A bus failure that is not about one entry (no connection, no confirm in time)."""
    return exc.code is ErrorCode.BUS_ERROR and exc.details.get("reason") in BROKER_DOWN


_LOG_LEVEL = {Fate.KEPT: logging.WARNING, Fate.DROPPED: logging.INFO, Fate.SENT: logging.DEBUG}


@dataclass(slots=True)
class _Relayed:
    """What one job's relay step did."""

    published: int = 0
    complete: bool = True  # every entry given was published or dropped
    broker_down: AutoscorerError | None = None  # the bus could not publish at all


@dataclass(slots=True)
class _Backoff:
    failures: int
    until: float  # time.monotonic()


@dataclass(slots=True)
class _Held:
    """Entries of one job published and not popped yet, waiting for the job's next move."""

    entries: list[OutboxEntry]
    since: float  # time.monotonic() of the first


class OutboxRelay:
    """Publishes and pops outbox entries, one job at a time, each job isolated."""

    def __init__(
        self,
        bus: EventBus,
        store: JobStore,
        *,
        batch: int = 100,
        settle: float = 1.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        hold: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        """``hold``: how long a published entry may wait in the outbox for its job's next
        transition to pop it (0: popped at once); keep it plus the sweep interval under
        ``settle``."""
        self._metrics = metrics
        self._bus = bus
        self._store = store
        self._batch = batch
        self._settle = timedelta(seconds=settle)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._hold = hold
        self._waiting: dict[str, _Backoff] = {}
        self._held: dict[str, _Held] = {}

    async def flush(self, job: Job, events: Sequence[BaseEvent] = (), *, hold: bool = False) -> int:
        """Publish ``job``'s pending entries in order (but those held: they went out already)
        and pop the published ones; ``events`` are the entries' events as the caller holds them
        (published without a round trip). With ``hold`` (the job moves again soon) the
        published ones are held for that move to pop instead, if this relay holds at all; else
        what it held for the job goes with this pop. Never raises: what is left waits for the
        sweep."""
        known = {str(event.event_id): event for event in events}
        done = _Relayed()

        async def work() -> None:
            await self._relay(job, self.unsent(job), known, done, hold=hold and self._hold > 0)

        with job_context(job.job_id):
            await guarded(f"outbox of job {job.job_id}", work)
            if done.broker_down is not None:
                log.warning(
                    "outbox of job %s left for the sweep: %s", job.job_id, done.broker_down.message
                )
        return done.published

    async def sweep(self, *, everything: bool = False) -> int:
        """Relay what is pending in the store. Entries younger than ``settle`` seconds are left
        to the writer that is publishing them, unless ``everything`` (at start-up)."""
        await self._pop_held(older_than=self._hold)
        skip = self._backed_off()
        jobs = await self._store.find_pending_outbox(limit=self._batch, skip=skip)
        if self._metrics is not None:
            self._metrics.outbox_backlog.set(sum(len(job.outbox) for job in jobs))
        cutoff = now_ms() - self._settle
        published = 0
        for job in sorted(jobs, key=lambda j: (-j.priority, j.updated_at)):
            unsent = self.unsent(job)  # those held went out already: their pop is on its way
            entries = [e for e in unsent if everything or e.created_at <= cutoff]
            if entries:
                published += await self._step(job, entries)
        return published

    def take(self, job_id: str) -> list[OutboxEntry]:
        """The entries held for ``job_id``'s next transition to pop (as stored), no longer held
        here: the caller pops them with its move, or gives them back with :meth:`keep`."""
        held = self._held.pop(job_id, None)
        return [] if held is None else held.entries

    def keep(self, job_id: str, entries: Sequence[OutboxEntry]) -> None:
        """Hold ``entries`` (published, not popped) again: the move that took them did not
        pop them (not applied, or failed). The sweep pops them once held long enough."""
        if entries:
            self._hold_entries(job_id, entries)

    def unsent(self, job: Job) -> list[OutboxEntry]:
        """``job``'s outbox entries that are not known to be published (those held are; an
        entry written again with the same event, e.g. a request sent again, is not)."""
        held = self._held.get(job.job_id)
        if held is None:
            return list(job.outbox)
        return [entry for entry in job.outbox if entry not in held.entries]

    async def close(self) -> None:
        """Pop everything held, so a restart does not publish it again. Never raises."""
        await guarded("outbox: held pops", lambda: self._pop_held(older_than=None))

    def waiting(self) -> dict[str, int]:
        """Jobs backed off now, with their consecutive failures (for health and tests)."""
        now = time.monotonic()
        return {job_id: b.failures for job_id, b in self._waiting.items() if b.until > now}

    async def _step(self, job: Job, entries: Sequence[OutboxEntry]) -> int:
        """One job's relay step, its own guarded item; a broker that is down ends the sweep."""
        done = _Relayed()

        async def work() -> None:
            await self._relay(job, entries, {}, done)

        with job_context(job.job_id):
            ok = await guarded(f"outbox of job {job.job_id}", work)
        if done.broker_down is not None:
            raise done.broker_down
        if ok and done.complete:
            self._waiting.pop(job.job_id, None)
        else:
            self._back_off(job.job_id)
        return done.published

    async def _relay(
        self,
        job: Job,
        entries: Sequence[OutboxEntry],
        known: Mapping[str, BaseEvent],
        done: _Relayed,
        *,
        hold: bool = False,
    ) -> None:
        """Publish ``entries`` in order until one must stay; pop what went out (with what was
        held for the job), or with ``hold`` hold it for the job's next move."""
        gone: list[OutboxEntry] = []
        try:
            for entry in entries:
                outcome = await self._publish(job, entry, known.get(entry.event_id))
                if outcome is Fate.KEPT:
                    done.complete = False
                    break
                gone.append(entry)
                done.published += outcome is Fate.SENT
        except AutoscorerError as exc:
            if not broker_down(exc):
                raise
            done.complete = False
            done.broker_down = exc
        if hold:
            self.keep(job.job_id, gone)
            return
        gone += self.take(job.job_id)
        if gone:
            await self._pop(job.job_id, gone)

    async def _pop_held(self, *, older_than: float | None) -> None:
        """Pop what has been held at least ``older_than`` seconds (``None``: everything), each
        job its own guarded item; a job that is gone has nothing left to pop."""
        now = time.monotonic()
        due = [
            job_id
            for job_id, held in self._held.items()
            if older_than is None or now - held.since >= older_than
        ]
        for job_id in due:
            pop = partial(self._pop, job_id, self.take(job_id))
            with job_context(job_id):
                if not await guarded(f"outbox of job {job_id}: held pop", pop):
                    self._back_off(job_id)  # its entries wait in the store, as after any failed pop

    async def _pop(self, job_id: str, entries: list[OutboxEntry]) -> None:
        """Pop published ``entries``. When that fails they stay in the store, no longer held:
        the sweep publishes them again (consumers drop the duplicate) and pops them."""
        try:
            await self._store.pop_outbox(job_id, entries)
        except JobNotFoundError:
            return  # the job is gone, and its outbox with it

    def _hold_entries(self, job_id: str, entries: Sequence[OutboxEntry]) -> None:
        held = self._held.get(job_id)
        if held is None:
            self._held[job_id] = _Held(list(entries), time.monotonic())
            return
        held.entries += [entry for entry in entries if entry not in held.entries]

    async def _publish(self, job: Job, entry: OutboxEntry, event: BaseEvent | None) -> Fate:
        try:
            with continue_trace(job.trace_context):
                await self._bus.publish(event or entry_event(entry))
        except AutoscorerError as exc:
            if broker_down(exc):
                raise
            decided = fate(entry, exc)
            level = _LOG_LEVEL[decided] if exc.code is not ErrorCode.BAD_FORMAT else logging.ERROR
            log.log(
                level,
                "outbox entry %s (%s) of job %s %s: %s",
                entry.event_id,
                entry.type,
                job.job_id,
                decided.value,
                exc.message,
            )
            return decided
        return Fate.SENT

    def _back_off(self, job_id: str) -> None:
        failures = self._waiting[job_id].failures + 1 if job_id in self._waiting else 1
        delay = min(self._max_backoff, self._backoff * 2.0 ** min(failures - 1, 16))
        self._waiting[job_id] = _Backoff(failures, time.monotonic() + delay)

    def _backed_off(self) -> list[str]:
        now = time.monotonic()
        stale = now - 2 * self._max_backoff
        for job_id in [j for j, b in self._waiting.items() if b.until < stale]:
            del self._waiting[job_id]  # gone from the store, or fine for a long while
        waiting = sorted(
            ((b.until, j) for j, b in self._waiting.items() if b.until > now), reverse=True
        )
        return [job_id for _, job_id in waiting[:MAX_SKIPPED]]


async def publish_pending(
    bus: EventBus, store: JobStore, job: Job, events: Sequence[BaseEvent] = ()
) -> int:
    """Publish ``job``'s outbox now (the writer's fast path) by the relay's rule; returns how
    many were published. Never raises: what is left waits for the scheduler's sweep."""
    return await OutboxRelay(bus, store).flush(job, events)
