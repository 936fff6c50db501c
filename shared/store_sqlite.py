"""``JobStore`` in an embedded SQLite file, for the single-process (embedded) mode.

A row per job: the whole document as JSON in ``doc``, plus the columns queries filter and sort on,
always rewritten from the document so they cannot disagree. All SQLite work happens on one worker
thread that owns the connection, so the event loop never blocks and calls never interleave. A
compare-and-set reads the row and writes it back inside one ``BEGIN IMMEDIATE`` transaction (which
also holds off other processes using the same file), and the ``UPDATE`` repeats the state
precondition in its ``WHERE``. Workspace claims (one active job per workspace) are rows of
``workspace_locks``, read and written inside one such transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from shared.jobs import (
    ACTIVE_STATES,
    Job,
    JobStatus,
    Lease,
    OutboxEntry,
    StatusChange,
    now_ms,
)
from shared.models import STORED
from shared.sqlite_worker import SqliteWorker, connect
from shared.store import (
    Created,
    JobNotFoundError,
    JobPage,
    JobUpdate,
    ListQuery,
    Step,
    Transition,
    TransitionOutcome,
    WorkspaceClaim,
    apply_transition,
    attempt_fits,
    check_moves,
    check_pop,
    claim_is_stale,
    lease_is_free,
    page_of,
    passed_change,
    state_set,
)
from shared.store_mongo_keys import from_json, stored_json
from shared.store_queue import RECENT_RUNS, BackendQueue, last_run_seconds, merge_counts

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id           TEXT PRIMARY KEY,
    status           TEXT NOT NULL,
    submitter        TEXT NOT NULL,
    scorer           TEXT NOT NULL,
    workspace        TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    lease_expires_at TEXT,
    outbox_size      INTEGER NOT NULL,
    deadline_at      TEXT,
    doc              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created_at DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_submitter_created ON jobs (submitter, created_at DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_scorer_created ON jobs (scorer, created_at DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_workspace_status ON jobs (workspace, status);
CREATE INDEX IF NOT EXISTS jobs_lease_expiry ON jobs (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_outbox_pending ON jobs (updated_at) WHERE outbox_size > 0;
CREATE TABLE IF NOT EXISTS workspace_locks (
    workspace  TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    claimed_at TEXT NOT NULL
);
"""

MIGRATIONS = (
    # files made before jobs had deadlines get the column; their jobs have none
    ("deadline_at", "ALTER TABLE jobs ADD COLUMN deadline_at TEXT"),
)
AFTER_MIGRATIONS = """
CREATE INDEX IF NOT EXISTS jobs_deadline ON jobs (deadline_at) WHERE deadline_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (
    status, json_extract(doc, '$.backend'),
    strftime('%Y-%m-%d %H:%M:%f', json_extract(doc, '$.queued_at')), job_id
);
CREATE INDEX IF NOT EXISTS jobs_backend_updated ON jobs (
    json_extract(doc, '$.backend'), updated_at
);
"""

_COLUMNS = (
    "job_id, status, submitter, scorer, workspace, idempotency_key, created_at, updated_at, "
    "lease_expires_at, outbox_size, deadline_at, doc"
)
_INSERT = f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_UPDATE = (
    "UPDATE jobs SET status = ?, submitter = ?, scorer = ?, workspace = ?, idempotency_key = ?, "
    "created_at = ?, updated_at = ?, lease_expires_at = ?, outbox_size = ?, deadline_at = ?, "
    "doc = ? WHERE job_id = ?"
)
_ACTIVE = sorted(state.value for state in ACTIVE_STATES)
_BACKEND = "json_extract(doc, '$.backend')"
_QUEUED_AT = "strftime('%Y-%m-%d %H:%M:%f', json_extract(doc, '$.queued_at'))"
"""fixed-width text of the JSON time (whose fraction pydantic leaves out when zero)"""
_RAN = ("scoring", "succeeded", "failed")  # a run finished (or never started: no attempt)


def timestamp(at: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def row_of(job: Job) -> tuple[Any, ...]:
    """The job's column values, in ``_COLUMNS`` order."""
    expiry = timestamp(job.lease.expires_at) if job.lease else None
    return (
        job.job_id,
        job.status.value,
        job.submitter,
        job.scorer,
        job.workspace,
        job.idempotency_key,
        timestamp(job.created_at),
        timestamp(job.updated_at),
        expiry,
        len(job.outbox),
        timestamp(job.deadline_at) if job.deadline_at else None,
        stored_json(job),  # NaN, infinities, huge ints kept (shared.store_mongo_keys)
    )


def job_of(doc: str) -> Job:
    """The job of a stored ``doc`` column (what :func:`row_of` wrote, or an older row)."""
    return Job.model_validate(from_json(doc), context=STORED)


def list_where(query: ListQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.status:
        states = sorted(s.value for s in query.status)
        clauses.append(f"status IN ({_marks(states)})")
        params += states
    for column, value in (("submitter", query.submitter), ("scorer", query.scorer)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.created_from is not None:
        clauses.append("created_at >= ?")
        params.append(timestamp(query.created_from))
    if query.created_to is not None:
        clauses.append("created_at < ?")
        params.append(timestamp(query.created_to))
    position = query.position()
    if position is not None:
        clauses.append("(created_at < ? OR (created_at = ? AND job_id < ?))")
        params += [timestamp(position[0]), timestamp(position[0]), position[1]]
    return " AND ".join(clauses) or "1", params


class JobsDb:
    """The synchronous store; every method runs on the one thread that opened it."""

    def __init__(self, path: str) -> None:
        self._conn = connect(path, SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(jobs)")}
        for column, ddl in MIGRATIONS:
            if column not in columns:
                self._conn.execute(ddl)
        self._conn.executescript(AFTER_MIGRATIONS)
        # the workspaces of active jobs stored before claims existed, as of their last update
        self._conn.execute(
            "INSERT OR IGNORE INTO workspace_locks (workspace, job_id, claimed_at) "  # noqa: S608
            f"SELECT workspace, job_id, updated_at FROM jobs WHERE status IN ({_marks(_ACTIVE)})",
            _ACTIVE,
        )

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taking the file's write lock up front."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[Any]) -> Job | None:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else job_of(row[0])

    def _many(self, sql: str, params: Sequence[Any]) -> list[Job]:
        return [job_of(row[0]) for row in self._conn.execute(sql, params)]

    def get(self, job_id: str) -> Job | None:
        return self._one("SELECT doc FROM jobs WHERE job_id = ?", (job_id,))

    def _must_get(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def _save(self, job: Job) -> None:
        job_id, *rest = row_of(job)
        self._conn.execute(_UPDATE, (*rest, job_id))

    def create(self, job: Job) -> Created:
        try:
            self._conn.execute(_INSERT, row_of(job))
        except sqlite3.IntegrityError:
            existing = None
            if job.idempotency_key is not None:
                sql = "SELECT doc FROM jobs WHERE idempotency_key = ?"
                existing = self._one(sql, (job.idempotency_key,))
            return Created(existing or self._must_get(job.job_id), created=False)
        return Created(job, created=True)

    def list_jobs(self, query: ListQuery) -> JobPage:
        where, params = list_where(query)
        sql = f"SELECT doc FROM jobs WHERE {where} ORDER BY created_at DESC, job_id DESC LIMIT ?"  # noqa: S608
        return page_of(self._many(sql, [*params, query.limit + 1]), query.limit)

    def transition(
        self,
        job_id: str,
        states: frozenset[JobStatus],
        to_state: JobStatus,
        *,
        update: JobUpdate | None,
        change: StatusChange,
        outbox: Sequence[OutboxEntry],
        if_deadline: datetime | None = None,
        if_attempts: int | None = None,
        passed: StatusChange | None = None,
        pop: Sequence[OutboxEntry] = (),
    ) -> Transition:
        with self._write():
            job = self._must_get(job_id)
            if change.event_id is not None and change.event_id in job.processed_event_ids:
                return Transition(TransitionOutcome.DUPLICATE_EVENT, job)
            moved_on = if_deadline is not None and job.deadline_at != if_deadline
            been = passed is not None and passed.event_id in job.processed_event_ids
            fits = attempt_fits(job, update, if_attempts)
            if job.status not in states or not fits or moved_on or been:
                return Transition(TransitionOutcome.STATE_MISMATCH, job)
            new = apply_transition(
                job, to_state, update, change=change, outbox=outbox, passed=passed, pop=pop
            )
            values = [s.value for s in states]
            job_id_, *rest = row_of(new)
            sql = f"{_UPDATE} AND status IN ({_marks(values)})"
            self._conn.execute(sql, (*rest, job_id_, *values))
        return Transition(TransitionOutcome.APPLIED, new)

    def set_lease(
        self, job_id: str, owner: str, now: datetime, ttl: timedelta, *, acquire: bool
    ) -> Job | None:
        with self._write():
            job = self._must_get(job_id)
            if acquire:
                allowed = job.active and lease_is_free(job, owner, now)
            else:
                allowed = job.lease is not None and job.lease.owner == owner
            if not allowed:
                return None
            lease = Lease(owner=owner, expires_at=now + ttl)
            new = job.model_copy(update={"lease": lease, "updated_at": now_ms()})
            self._save(new)
        return new

    def release_lease(self, job_id: str, owner: str) -> bool:
        with self._write():
            job = self._must_get(job_id)
            if job.lease is None or job.lease.owner != owner:
                return False
            self._save(job.model_copy(update={"lease": None, "updated_at": now_ms()}))
        return True

    def find_expired_leases(self, now: datetime, limit: int) -> list[Job]:
        sql = (
            f"SELECT doc FROM jobs WHERE status IN ({_marks(_ACTIVE)}) "  # noqa: S608
            "AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?"
        )
        return self._many(sql, [*_ACTIVE, timestamp(now), limit])

    def find_overdue(self, now: datetime, limit: int) -> list[Job]:
        sql = (
            f"SELECT doc FROM jobs WHERE status IN ({_marks(_ACTIVE)}) "  # noqa: S608
            "AND deadline_at <= ? ORDER BY deadline_at LIMIT ?"
        )
        return self._many(sql, [*_ACTIVE, timestamp(now), limit])

    def find_active_by_workspace(self, workspace: str) -> Job | None:
        sql = (
            f"SELECT doc FROM jobs WHERE workspace = ? AND status IN ({_marks(_ACTIVE)}) "  # noqa: S608
            "ORDER BY created_at DESC, job_id DESC LIMIT 1"
        )
        return self._one(sql, [workspace, *_ACTIVE])

    def find_without_deadline(self, limit: int) -> list[Job]:
        sql = (
            f"SELECT doc FROM jobs WHERE status IN ({_marks(_ACTIVE)}) "  # noqa: S608
            "AND deadline_at IS NULL ORDER BY updated_at LIMIT ?"
        )
        return self._many(sql, [*_ACTIVE, limit])

    def set_deadline(self, job_id: str, status: JobStatus, deadline_at: datetime) -> bool:
        with self._write():
            job = self._must_get(job_id)
            if job.status is not status or job.deadline_at is not None:
                return False
            self._save(job.model_copy(update={"deadline_at": deadline_at}))
        return True

    def claim_workspace(self, workspace: str, job_id: str, now: datetime) -> str:
        with self._write():
            row = self._conn.execute(
                "SELECT job_id, claimed_at FROM workspace_locks WHERE workspace = ?", (workspace,)
            ).fetchone()
            if row is not None and row[0] != job_id:
                claim = WorkspaceClaim(workspace, row[0], datetime.fromisoformat(row[1]))
                if not claim_is_stale(claim, self.get(claim.job_id), now):
                    return claim.job_id
            self._conn.execute(
                "INSERT OR REPLACE INTO workspace_locks (workspace, job_id, claimed_at) "
                "VALUES (?, ?, ?)",
                (workspace, job_id, timestamp(now)),
            )
        return job_id

    def release_workspace(self, workspace: str, job_id: str) -> bool:
        with self._write():
            done = self._conn.execute(
                "DELETE FROM workspace_locks WHERE workspace = ? AND job_id = ?",
                (workspace, job_id),
            )
        return done.rowcount == 1

    def append_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        with self._write():
            job = self._must_get(job_id)
            pending = {entry.event_id for entry in job.outbox}
            added = [e for e in entries if e.event_id not in pending]
            if not added:
                return job
            job = job.model_copy(update={"outbox": [*job.outbox, *added], "updated_at": now_ms()})
            self._save(job)
        return job

    def pop_outbox(self, job_id: str, event_ids: Sequence[str]) -> Job:
        with self._write():
            job = self._must_get(job_id)
            done = set(event_ids)
            kept = [entry for entry in job.outbox if entry.event_id not in done]
            if len(kept) == len(job.outbox):
                return job
            job = job.model_copy(update={"outbox": kept})
            self._save(job)
        return job

    def find_pending_outbox(self, limit: int, skip: Sequence[str]) -> list[Job]:
        left_out = f"AND job_id NOT IN ({_marks(skip)}) " if skip else ""
        sql = f"SELECT doc FROM jobs WHERE outbox_size > 0 {left_out}ORDER BY updated_at LIMIT ?"  # noqa: S608
        return self._many(sql, [*skip, limit])

    def count_queued_ahead(self, job: Job) -> int:
        if job.queued_at is None:
            return 0
        sql = (
            f"SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND {_BACKEND} = ? AND "  # noqa: S608
            f"({_QUEUED_AT} < ? OR ({_QUEUED_AT} = ? AND job_id < ?))"
        )
        at = job.queued_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        params = (job.backend, at, at, job.job_id)
        return int(self._conn.execute(sql, params).fetchone()[0])

    def recent_run_seconds(self, backend: str, limit: int) -> list[float]:
        sql = (
            f"SELECT doc FROM jobs WHERE {_BACKEND} = ? AND status IN (?, ?, ?) "  # noqa: S608
            "ORDER BY updated_at DESC LIMIT ?"
        )
        jobs = self._many(sql, (backend, *_RAN, limit))
        took = (last_run_seconds(job.attempts, backend) for job in jobs)
        return [seconds for seconds in took if seconds is not None]

    def queue_stats(self) -> list[BackendQueue]:
        sql = (
            f"SELECT {_BACKEND}, status, COUNT(*), MIN(created_at) FROM jobs "  # noqa: S608
            f"WHERE status IN ('queued', 'running') AND {_BACKEND} IS NOT NULL "
            f"GROUP BY {_BACKEND}, status"
        )
        rows = self._conn.execute(sql).fetchall()
        return merge_counts([(b, s, n, datetime.fromisoformat(at)) for b, s, n, at in rows])


class SqliteJobStore:
    """The embedded ``JobStore``: a SQLite file driven from one worker thread."""

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._worker = SqliteWorker("autoscorer-sqlite")
        self._db: JobsDb | None = None

    async def init(self) -> None:
        """Open (creating if needed) the file and its schema; idempotent."""
        self._worker.start()
        if self._db is None:
            self._db = await self._run("init", JobsDb, self._path)

    async def close(self) -> None:
        if self._db is not None:
            await self._run("close", self._db.close)
            self._db = None
        self._worker.stop()

    async def _run(self, operation: str, fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        return await self._worker.run(operation, fn, *args, **kw)

    @property
    def db(self) -> JobsDb:
        if self._db is None:
            raise RuntimeError("SqliteJobStore used before init() or after close()")
        return self._db

    async def create(self, job: Job) -> Created:
        return await self._run("create", self.db.create, job)

    async def get(self, job_id: str) -> Job | None:
        return await self._run("get", self.db.get, job_id)

    async def list_jobs(self, query: ListQuery) -> JobPage:
        return await self._run("list", self.db.list_jobs, query)

    async def transition(
        self,
        job_id: str,
        from_states: JobStatus | Iterable[JobStatus],
        to_state: JobStatus,
        update: JobUpdate | None = None,
        *,
        event_id: str | None = None,
        reason: str | None = None,
        outbox: Sequence[OutboxEntry] = (),
        if_deadline: datetime | None = None,
        if_attempts: int | None = None,
        through: Step | None = None,
        pop: Sequence[OutboxEntry] = (),
    ) -> Transition:
        states = state_set(from_states)
        check_moves(states, to_state, through)
        check_pop(outbox, pop)
        change = StatusChange(status=to_state, at=now_ms(), reason=reason, event_id=event_id)
        transition = self.db.transition
        return await self._run(
            "transition",
            transition,
            job_id,
            states,
            to_state,
            update=update,
            change=change,
            outbox=outbox,
            if_deadline=if_deadline,
            if_attempts=if_attempts,
            passed=passed_change(through, change),
            pop=list(pop),
        )

    async def acquire_lease(
        self, job_id: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> Job | None:
        at = now or now_ms()
        return await self._run(
            "acquire lease", self.db.set_lease, job_id, owner, at, ttl, acquire=True
        )

    async def renew_lease(
        self, job_id: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> Job | None:
        at = now or now_ms()
        return await self._run(
            "renew lease", self.db.set_lease, job_id, owner, at, ttl, acquire=False
        )

    async def release_lease(self, job_id: str, owner: str) -> bool:
        return await self._run("release lease", self.db.release_lease, job_id, owner)

    async def find_expired_leases(
        self, *, now: datetime | None = None, limit: int = 100
    ) -> list[Job]:
        at = now or now_ms()
        return await self._run("find expired leases", self.db.find_expired_leases, at, limit)

    async def find_overdue(self, *, now: datetime | None = None, limit: int = 100) -> list[Job]:
        at = now or now_ms()
        return await self._run("find overdue", self.db.find_overdue, at, limit)

    async def find_active_by_workspace(self, workspace: str) -> Job | None:
        find = self.db.find_active_by_workspace
        return await self._run("find by workspace", find, workspace)

    async def find_without_deadline(self, *, limit: int = 100) -> list[Job]:
        return await self._run("find without deadline", self.db.find_without_deadline, limit)

    async def set_deadline(self, job_id: str, status: JobStatus, deadline_at: datetime) -> bool:
        set_deadline = self.db.set_deadline
        return await self._run("set deadline", set_deadline, job_id, status, deadline_at)

    async def claim_workspace(
        self, workspace: str, job_id: str, *, now: datetime | None = None
    ) -> str:
        claim = self.db.claim_workspace
        return await self._run("claim workspace", claim, workspace, job_id, now or now_ms())

    async def release_workspace(self, workspace: str, job_id: str) -> bool:
        release = self.db.release_workspace
        return await self._run("release workspace", release, workspace, job_id)

    async def append_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        return await self._run("append outbox", self.db.append_outbox, job_id, list(entries))

    async def pop_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        event_ids = [entry.event_id for entry in entries]
        return await self._run("pop outbox", self.db.pop_outbox, job_id, event_ids)

    async def find_pending_outbox(self, *, limit: int = 100, skip: Sequence[str] = ()) -> list[Job]:
        find = self.db.find_pending_outbox
        return await self._run("find pending outbox", find, limit, list(skip))

    async def count_queued_ahead(self, job: Job) -> int:
        return await self._run("count queued ahead", self.db.count_queued_ahead, job)

    async def recent_run_seconds(self, backend: str, *, limit: int = RECENT_RUNS) -> list[float]:
        recent = self.db.recent_run_seconds
        return await self._run("recent run seconds", recent, backend, limit)

    async def queue_stats(self) -> list[BackendQueue]:
        return await self._run("queue stats", self.db.queue_stats)
