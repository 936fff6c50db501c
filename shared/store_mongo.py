"""``JobStore`` on MongoDB or FerretDB, through PyMongo's native ``AsyncMongoClient``.

Each job is one document (``_id`` = job id). Every write is a single ``find_one_and_update`` /
``update_one`` whose filter carries the precondition (state, event id, lease owner), so MongoDB
applies it atomically or not at all: no transactions, no change streams.

FerretDB 1.24 does not apply those updates atomically (it reads, then writes back by ``_id``), so
there the store also holds a per-job lock around each write (:mod:`shared.store_mongo_lock`).

Workspace claims (one active job per workspace) are documents of ``<jobs>_workspace_locks`` keyed
by a hash of the workspace's path: a claim is an insert, which the unique ``_id`` makes atomic
everywhere; taking over a stale claim or dropping one is a compare-and-set on the holder, under
the same per-key lock on FerretDB. FerretDB has no partial indexes, so the jobs collection cannot
say "one active job per workspace" itself.
Only what FerretDB handles correctly is used: it ignores ``$push``'s ``$slice``, matches a
``$pull`` condition as a whole element, reads ``{"$exists": 1}`` wrongly (``True`` works) and
drops the connection on a multi-index ``createIndexes`` naming existing indexes.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from bson.codec_options import CodecOptions
from pydantic import BaseModel
from pymongo import AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.jobs import (
    ACTIVE_STATES,
    PROCESSED_EVENTS_KEPT,
    Attempts,
    Job,
    JobStatus,
    Lease,
    OutboxEntry,
    StatusChange,
    now_ms,
)
from shared.models import STORED
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
    check_moves,
    check_pop,
    claim_is_stale,
    page_of,
    passed_change,
    state_set,
    store_error,
)
from shared.store_mongo_keys import ENCODING_ERRORS, document, restored, storable
from shared.store_mongo_lock import JobLocks
from shared.store_queue import RECENT_RUNS, BackendQueue, last_run_seconds, merge_counts

Document = dict[str, Any]

_NEWEST_FIRST = [("created_at", -1), ("_id", -1)]

INDEXES = [
    IndexModel([("idempotency_key", 1)], name="idempotency_key", unique=True, sparse=True),
    IndexModel(_NEWEST_FIRST, name="created"),
    IndexModel([("status", 1), *_NEWEST_FIRST], name="status_created"),
    IndexModel([("submitter", 1), *_NEWEST_FIRST], name="submitter_created"),
    IndexModel([("spec.scorer", 1), *_NEWEST_FIRST], name="scorer_created"),
    IndexModel([("workspace", 1), ("status", 1)], name="workspace_status"),
    IndexModel([("lease.expires_at", 1)], name="lease_expiry"),
    IndexModel([("deadline_at", 1)], name="deadline"),
    IndexModel([("updated_at", 1)], name="updated"),
    IndexModel(
        [("status", 1), ("backend", 1), ("queued_at", 1), ("_id", 1)],
        name="queue",
    ),
    IndexModel([("status", 1), ("backend", 1), ("created_at", 1)], name="queue_age"),
    IndexModel([("backend", 1), ("updated_at", -1)], name="backend_updated"),
]
_ACTIVE = sorted(state.value for state in ACTIVE_STATES)
_BEYOND_KEPT = f"processed_event_ids.{PROCESSED_EVENTS_KEPT}"
_CLAIM_TRIES = 20


def workspace_key(workspace: str) -> str:
    """The claim's ``_id``: a fixed-size key for a path of any length."""
    return hashlib.sha256(workspace.encode("utf-8", "surrogatepass")).hexdigest()


@asynccontextmanager
async def driver_errors(operation: str) -> AsyncIterator[None]:
    """Turn a driver failure into the store's one error; everything else passes through."""
    try:
        yield
    except (PyMongoError, *ENCODING_ERRORS) as exc:  # a value BSON cannot hold: not raw either
        raise store_error(exc, operation) from exc


def lease_document(lease: Lease) -> Document:
    return {"owner": lease.owner, "expires_at": lease.expires_at}


def outbox_document(entry: OutboxEntry) -> Document:
    """An outbox entry as stored: what ``$push`` writes and ``$pullAll`` must match exactly."""
    stored: Document = document(entry)
    return stored


def to_document(job: Job) -> Document:
    """JSON-safe fields, with real BSON dates where queries compare times; the keys of user
    dicts (params, per-class metrics, payloads) in their storable form
    (:mod:`shared.store_mongo_keys`)."""
    fields = document(job)
    doc: Document = {"_id": fields.pop("job_id"), **fields}
    doc["created_at"] = job.created_at
    doc["updated_at"] = job.updated_at
    doc["deadline_at"] = job.deadline_at
    doc["queued_at"] = job.queued_at
    if job.lease is not None:
        doc["lease"] = lease_document(job.lease)
    if job.idempotency_key is None:
        del doc["idempotency_key"]  # absent, not null: the unique index is sparse
    return doc


def _claim_document(claim: WorkspaceClaim) -> Document:
    return {
        "_id": workspace_key(claim.workspace),
        "workspace": claim.workspace,
        "job_id": claim.job_id,
        "claimed_at": claim.claimed_at,
    }


def from_document(doc: Document) -> Job:
    """The job of a stored document, its user dicts restored (an older document, stored
    before they were encoded, reads too: docs/STORE.md)."""
    data: Document = restored(doc)
    data["job_id"] = data.pop("_id")
    return Job.model_validate(data, context=STORED)


def _bson_value(value: Any) -> Any:
    if isinstance(value, Lease):
        return lease_document(value)
    if isinstance(value, BaseModel):
        return document(value)
    return storable(value)  # trace_context's dict; dates and numbers as they are


def transition_operators(
    to_state: JobStatus,
    update: JobUpdate | None,
    change: StatusChange,
    outbox: Sequence[OutboxEntry],
    passed: StatusChange | None = None,
    *,
    pop: Sequence[OutboxEntry] = (),
) -> Document:
    """The update document of a transition: the Mongo form of ``store.apply_transition``
    (``pop`` is a ``$pullAll`` of the entries' stored form, as ``pop_outbox``'s first try)."""
    sets: Document = {
        name: _bson_value(v) for name, v in (update.fields() if update else {}).items()
    }
    sets["status"] = to_state.value
    sets["updated_at"] = change.at
    pushes: Document = {"history": change.model_dump(mode="json")}
    if outbox:
        pushes["outbox"] = {"$each": [outbox_document(entry) for entry in outbox]}
    if change.event_id is not None:
        pushes["processed_event_ids"] = change.event_id
    if passed is not None:
        pushes["history"] = {"$each": [passed.model_dump(mode="json"), pushes["history"]]}
        ids = [step.event_id for step in (passed, change) if step.event_id is not None]
        pushes["processed_event_ids"] = {"$each": ids}
    if update is not None and update.result is not None:  # every result is kept (a re-score's)
        pushes["result_versions"] = sets["result"]
    operators: Document = {"$set": sets, "$push": pushes}
    if pop:
        operators["$pullAll"] = {"outbox": [outbox_document(entry) for entry in pop]}
    if update is not None and update.attempt is not None:
        number = update.attempt.number
        sets[f"attempts.records.{number - 1}"] = update.attempt.model_dump(mode="json")
        operators["$max"] = {"attempts.count": number}
    return operators


def transition_filter(
    job_id: str,
    states: frozenset[JobStatus],
    event_id: str | None,
    update: JobUpdate | None,
    *,
    if_deadline: datetime | None = None,
    if_attempts: int | None = None,
    passed_event_id: str | None = None,
) -> Document:
    query: Document = {"_id": job_id, "status": {"$in": sorted(s.value for s in states)}}
    if if_deadline is not None:
        query["deadline_at"] = if_deadline
    not_seen = [i for i in (event_id, passed_event_id) if i is not None]
    if len(not_seen) == 1:
        query["processed_event_ids"] = {"$ne": not_seen[0]}
    elif not_seen:
        query["processed_event_ids"] = {"$nin": not_seen}
    if update is not None and update.attempt is not None:
        query["attempts.count"] = {"$gte": update.attempt.number - 1}
    if if_attempts is not None:
        fits = update is None or update.attempt is None or update.attempt.number <= if_attempts + 1
        query["attempts.count"] = if_attempts if fits else -1  # -1: never matches
    return query


def list_filter(query: ListQuery) -> Document:
    found: Document = {}
    if query.status:
        found["status"] = {"$in": sorted(s.value for s in query.status)}
    if query.submitter is not None:
        found["submitter"] = query.submitter
    if query.scorer is not None:
        found["spec.scorer"] = query.scorer
    created: Document = {}
    if query.created_from is not None:
        created["$gte"] = query.created_from
    if query.created_to is not None:
        created["$lt"] = query.created_to
    if created:
        found["created_at"] = created
    position = query.position()
    if position is not None:
        at, job_id = position
        found["$or"] = [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": job_id}}]
    return found


def ahead_filter(job: Job) -> Document:
    """Queued jobs on ``job``'s backend that went into ``queued`` before it."""
    at = job.queued_at
    return {
        "status": JobStatus.QUEUED.value,
        "backend": job.backend,
        "$or": [{"queued_at": {"$lt": at}}, {"queued_at": at, "_id": {"$lt": job.job_id}}],
    }


_QUEUE_GROUPS = [
    {"$match": {"status": {"$in": ["queued", "running"]}, "backend": {"$type": "string"}}},
    {
        "$group": {
            "_id": {"backend": "$backend", "status": "$status"},
            "count": {"$sum": 1},  # FerretDB 1.24 has no $min/$first: the oldest is a find
        }
    },
]
_RAN = ["scoring", "succeeded", "failed"]


class MongoJobStore:
    """Jobs in one collection of a MongoDB (or FerretDB) database."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        collection: str = "jobs",
        owns_client: bool = False,
        serialize_writes: bool | None = None,
    ) -> None:
        """``serialize_writes``: take a per-job lock around every write (see
        :mod:`shared.store_mongo_lock`); ``None`` asks the server once and does so on FerretDB."""
        options: CodecOptions[Document] = CodecOptions(tz_aware=True, tzinfo=UTC)
        db = client[database]
        self._client = client
        self._owns_client = owns_client
        self._jobs: AsyncCollection[Document] = db.get_collection(collection, codec_options=options)
        self._locks = JobLocks(db.get_collection(f"{collection}_locks", codec_options=options))
        self._claims: AsyncCollection[Document] = db.get_collection(
            f"{collection}_workspace_locks", codec_options=options
        )
        self._serialize = serialize_writes
        self._locks_ready = False

    @classmethod
    def from_url(
        cls, url: str, database: str, *, serialize_writes: bool | None = None, **client_options: Any
    ) -> MongoJobStore:
        """A store owning its client; the client connects lazily, on first use."""
        client: AsyncMongoClient[Document] = AsyncMongoClient(url, **client_options)
        return cls(client, database, owns_client=True, serialize_writes=serialize_writes)

    async def init(self) -> None:
        async with driver_errors("init"):
            await self._needs_locks()
            existing = await self._jobs.index_information()
            for index in INDEXES:
                if index.document["name"] not in existing:
                    # one per call: FerretDB 1.24 drops the connection when a multi-index
                    # createIndexes names indexes that already exist
                    await self._jobs.create_indexes([index])
            await self._claim_active_jobs()

    async def _claim_active_jobs(self) -> None:
        """Claim the workspace of every active job stored before claims existed (as of its last
        update, so a job finishing meanwhile leaves a claim that is stale at once)."""
        fields = {"workspace": 1, "updated_at": 1}
        async for doc in self._jobs.find({"status": {"$in": _ACTIVE}}, fields):
            claim = WorkspaceClaim(doc["workspace"], doc["_id"], doc["updated_at"])
            try:
                await self._claims.insert_one(_claim_document(claim))
            except DuplicateKeyError:
                continue

    async def _needs_locks(self) -> bool:
        if self._serialize is None:
            info = await self._jobs.database.command("buildInfo")
            self._serialize = "ferretdbVersion" in info
        if self._serialize and not self._locks_ready:
            await self._locks.ensure_index()
            self._locks_ready = True
        return self._serialize

    @asynccontextmanager
    async def _exclusive(self, job_id: str) -> AsyncIterator[None]:
        """Hold the job's write lock where the server needs one; a no-op on MongoDB."""
        if await self._needs_locks():
            async with self._locks.hold(job_id):
                yield
        else:
            yield

    @property
    def serializes_writes(self) -> bool | None:
        return self._serialize

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    async def create(self, job: Job) -> Created:
        async with driver_errors("create"):
            try:
                await self._jobs.insert_one(to_document(job))
            except DuplicateKeyError as exc:
                return Created(await self._existing(job, exc), created=False)
        return Created(job, created=True)

    async def _existing(self, job: Job, exc: DuplicateKeyError) -> Job:
        doc = None
        if job.idempotency_key is not None:
            doc = await self._jobs.find_one({"idempotency_key": job.idempotency_key})
        if doc is None:
            doc = await self._jobs.find_one({"_id": job.job_id})
        if doc is None:  # the clashing job was deleted in between
            raise store_error(exc, "create")
        return from_document(doc)

    async def get(self, job_id: str) -> Job | None:
        async with driver_errors("get"):
            doc = await self._jobs.find_one({"_id": job_id})
        return None if doc is None else from_document(doc)

    async def list_jobs(self, query: ListQuery) -> JobPage:
        async with driver_errors("list"):
            cursor = self._jobs.find(list_filter(query)).sort(_NEWEST_FIRST)
            docs = await cursor.limit(query.limit + 1).to_list()
        return page_of([from_document(doc) for doc in docs], query.limit)

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
        passed = passed_change(through, change)
        query = transition_filter(
            job_id,
            states,
            event_id,
            update,
            if_deadline=if_deadline,
            if_attempts=if_attempts,
            passed_event_id=passed.event_id if passed else None,
        )
        async with driver_errors("transition"), self._exclusive(job_id):
            doc = await self._jobs.find_one_and_update(
                query,
                transition_operators(to_state, update, change, outbox, passed, pop=pop),
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                return await self._not_applied(job_id, event_id)
            job = await self._trim_processed(from_document(doc))
        return Transition(TransitionOutcome.APPLIED, job)

    async def _not_applied(self, job_id: str, event_id: str | None) -> Transition:
        job = await self._must_get(job_id)
        if event_id is not None and event_id in job.processed_event_ids:
            return Transition(TransitionOutcome.DUPLICATE_EVENT, job)
        return Transition(TransitionOutcome.STATE_MISMATCH, job)

    async def _trim_processed(self, job: Job) -> Job:
        """Forget the oldest processed event ids beyond the bound, one ``$pop`` each."""
        excess = len(job.processed_event_ids) - PROCESSED_EVENTS_KEPT
        for _ in range(excess):
            await self._jobs.update_one(
                {
                    "_id": job.job_id,
                    f"processed_event_ids.{PROCESSED_EVENTS_KEPT}": {"$exists": True},
                },
                {"$pop": {"processed_event_ids": -1}},
            )
        if excess <= 0:
            return job
        return job.model_copy(update={"processed_event_ids": job.processed_event_ids[excess:]})

    async def _must_get(self, job_id: str) -> Job:
        doc = await self._jobs.find_one({"_id": job_id})
        if doc is None:
            raise JobNotFoundError(job_id)
        return from_document(doc)

    async def acquire_lease(
        self, job_id: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> Job | None:
        at = now or now_ms()
        free = [{"lease": None}, {"lease.owner": owner}, {"lease.expires_at": {"$lte": at}}]
        query = {"_id": job_id, "status": {"$in": _ACTIVE}, "$or": free}
        return await self._set_lease(query, Lease(owner=owner, expires_at=at + ttl), "acquire")

    async def renew_lease(
        self, job_id: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> Job | None:
        at = now or now_ms()
        query = {"_id": job_id, "lease.owner": owner}
        return await self._set_lease(query, Lease(owner=owner, expires_at=at + ttl), "renew")

    async def _set_lease(self, query: Document, lease: Lease, operation: str) -> Job | None:
        async with driver_errors(f"{operation} lease"), self._exclusive(query["_id"]):
            doc = await self._jobs.find_one_and_update(
                query,
                {"$set": {"lease": lease_document(lease), "updated_at": now_ms()}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                await self._must_get(query["_id"])
                return None
        return from_document(doc)

    async def release_lease(self, job_id: str, owner: str) -> bool:
        async with driver_errors("release lease"), self._exclusive(job_id):
            done = await self._jobs.update_one(
                {"_id": job_id, "lease.owner": owner},
                {"$set": {"lease": None, "updated_at": now_ms()}},
            )
        return done.modified_count == 1

    async def find_expired_leases(
        self, *, now: datetime | None = None, limit: int = 100
    ) -> list[Job]:
        query = {"status": {"$in": _ACTIVE}, "lease.expires_at": {"$lte": now or now_ms()}}
        async with driver_errors("find expired leases"):
            docs = await self._jobs.find(query).sort("lease.expires_at", 1).limit(limit).to_list()
        return [from_document(doc) for doc in docs]

    async def find_overdue(self, *, now: datetime | None = None, limit: int = 100) -> list[Job]:
        query = {"status": {"$in": _ACTIVE}, "deadline_at": {"$lte": now or now_ms()}}
        async with driver_errors("find overdue"):
            docs = await self._jobs.find(query).sort("deadline_at", 1).limit(limit).to_list()
        return [from_document(doc) for doc in docs]

    async def find_active_by_workspace(self, workspace: str) -> Job | None:
        query = {"workspace": workspace, "status": {"$in": _ACTIVE}}
        async with driver_errors("find by workspace"):
            docs = await self._jobs.find(query).sort(_NEWEST_FIRST).limit(1).to_list()
        return from_document(docs[0]) if docs else None

    async def find_without_deadline(self, *, limit: int = 100) -> list[Job]:
        query = {"status": {"$in": _ACTIVE}, "deadline_at": None}  # null or absent
        async with driver_errors("find without deadline"):
            docs = await self._jobs.find(query).sort("updated_at", 1).limit(limit).to_list()
        return [from_document(doc) for doc in docs]

    async def set_deadline(self, job_id: str, status: JobStatus, deadline_at: datetime) -> bool:
        query = {"_id": job_id, "status": status.value, "deadline_at": None}
        async with driver_errors("set deadline"), self._exclusive(job_id):
            done = await self._jobs.update_one(query, {"$set": {"deadline_at": deadline_at}})
        return done.modified_count == 1

    async def claim_workspace(
        self, workspace: str, job_id: str, *, now: datetime | None = None
    ) -> str:
        key = workspace_key(workspace)
        async with driver_errors("claim workspace"):
            for _ in range(_CLAIM_TRIES):
                at = now or now_ms()
                try:
                    await self._claims.insert_one(
                        _claim_document(WorkspaceClaim(workspace, job_id, at))
                    )
                except DuplicateKeyError:
                    holder = await self._claim_held(key, job_id, at)
                    if holder is not None:
                        return holder
                else:
                    return job_id
        raise store_error(TimeoutError(f"workspace claim kept changing ({key})"), "claim workspace")

    async def _claim_held(self, key: str, job_id: str, at: datetime) -> str | None:
        """The holder after trying to take the existing claim over; ``None``: try again."""
        async with self._exclusive(f"workspace:{key}"):
            doc = await self._claims.find_one({"_id": key})
            if doc is None:  # released in between: insert again
                return None
            claim = WorkspaceClaim(doc["workspace"], doc["job_id"], doc["claimed_at"])
            if claim.job_id != job_id:
                holder = await self.get(claim.job_id)
                if not claim_is_stale(claim, holder, at):
                    return claim.job_id
            done = await self._claims.update_one(
                {"_id": key, "job_id": claim.job_id, "claimed_at": claim.claimed_at},
                {"$set": {"job_id": job_id, "claimed_at": at}},
            )
        return job_id if done.matched_count == 1 else None

    async def release_workspace(self, workspace: str, job_id: str) -> bool:
        key = workspace_key(workspace)
        async with driver_errors("release workspace"), self._exclusive(f"workspace:{key}"):
            done = await self._claims.delete_one({"_id": key, "job_id": job_id})
        return done.deleted_count == 1

    async def append_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        async with driver_errors("append outbox"), self._exclusive(job_id):
            for entry in entries:
                await self._jobs.update_one(
                    {"_id": job_id, "outbox.event_id": {"$ne": entry.event_id}},
                    {
                        "$push": {"outbox": outbox_document(entry)},
                        "$set": {"updated_at": now_ms()},
                    },
                )
            return await self._must_get(job_id)

    async def pop_outbox(self, job_id: str, entries: Sequence[OutboxEntry]) -> Job:
        """``$pullAll`` of the entries as stored (FerretDB's ``$pull`` only matches whole
        elements, never a condition such as ``{"event_id": ...}``): first of the stored form of
        the entries given, which is what the transition wrote (one round trip); if one of them
        is still there in another form, of the stored elements the answer shows (a second)."""
        done = {entry.event_id for entry in entries}
        pull = [outbox_document(entry) for entry in entries]
        async with driver_errors("pop outbox"), self._exclusive(job_id):
            doc = await self._pull_outbox(job_id, pull)
            left = [entry for entry in doc.get("outbox", []) if entry["event_id"] in done]
            if left:
                doc = await self._pull_outbox(job_id, left)
        return from_document(doc)

    async def _pull_outbox(self, job_id: str, elements: list[Document]) -> Document:
        doc = await self._jobs.find_one_and_update(
            {"_id": job_id},
            {"$pullAll": {"outbox": elements}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise JobNotFoundError(job_id)
        return doc

    async def find_pending_outbox(self, *, limit: int = 100, skip: Sequence[str] = ()) -> list[Job]:
        query: Document = {"outbox.0": {"$exists": True}}
        if skip:
            query["_id"] = {"$nin": list(skip)}
        async with driver_errors("find pending outbox"):
            cursor = self._jobs.find(query).sort("updated_at", 1)
            docs = await cursor.limit(limit).to_list()
        return [from_document(doc) for doc in docs]

    async def count_queued_ahead(self, job: Job) -> int:
        if job.queued_at is None:
            return 0
        async with driver_errors("count queued ahead"):
            return await self._jobs.count_documents(ahead_filter(job))

    async def recent_run_seconds(self, backend: str, *, limit: int = RECENT_RUNS) -> list[float]:
        query = {"backend": backend, "status": {"$in": _RAN}}
        async with driver_errors("recent run seconds"):
            cursor = self._jobs.find(query, {"attempts": 1}).sort("updated_at", -1)
            docs = await cursor.limit(limit).to_list()
        took = (last_run_seconds(Attempts.model_validate(d["attempts"]), backend) for d in docs)
        return [seconds for seconds in took if seconds is not None]

    async def queue_stats(self) -> list[BackendQueue]:
        async with driver_errors("queue stats"):
            groups = await (await self._jobs.aggregate(_QUEUE_GROUPS)).to_list()
            rows = [
                (g["_id"]["backend"], g["_id"]["status"], g["count"], await self._oldest(g["_id"]))
                for g in groups
            ]
        return merge_counts(rows)

    async def _oldest(self, group: Document) -> datetime | None:
        if group["status"] != JobStatus.QUEUED.value:
            return None
        query = {"status": group["status"], "backend": group["backend"]}
        cursor = self._jobs.find(query, {"created_at": 1}).sort("created_at", 1).limit(1)
        docs = await cursor.to_list()
        return docs[0]["created_at"] if docs else None
