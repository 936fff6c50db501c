"""Per-job write locks, for MongoDB-wire servers whose single-document updates are not atomic.

FerretDB 1.x answers ``findAndModify`` and ``update`` by reading the matching document, applying
the operators in Go and writing it back by ``_id`` in a separate step, so two concurrent
compare-and-sets on one job can both "win" (seen here: 3 of 20). Its inserts are atomic, though:
unique indexes are SQLite unique indexes. So on such a server every write to a job first inserts a
lock document into a side collection with a unique index on ``job_id``; whoever inserts it holds
the job until it deletes it. The update itself is unchanged, its filter still the precondition.

A lock whose holder died is broken once it expires. Each lock has its own random ``_id`` and is
deleted by that id, so breaking a stale lock never removes a newer one. The remaining risk is a
holder stalled past ``LOCK_TTL`` between taking the lock and writing: keep the TTL far above the
two round trips a write takes. Real MongoDB never needs this (see ``MongoJobStore``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.jobs import now_ms
from shared.store import store_error

LOCK_TTL = timedelta(seconds=30)
WAIT_S = 15.0
_INDEX = IndexModel([("job_id", 1)], name="job_id", unique=True)


class JobLocks:
    """Exclusive per-job locks kept in ``collection`` (``<jobs>_locks``)."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self._locks = collection

    async def ensure_index(self) -> None:
        if _INDEX.document["name"] not in await self._locks.index_information():
            await self._locks.create_indexes([_INDEX])

    @asynccontextmanager
    async def hold(self, job_id: str) -> AsyncIterator[None]:
        token = await self._acquire(job_id)
        try:
            yield
        finally:
            await self._locks.delete_one({"_id": token})

    async def _acquire(self, job_id: str) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        delay = 0.002
        while True:
            token = uuid.uuid4().hex
            lock = {"_id": token, "job_id": job_id, "expires_at": now_ms() + LOCK_TTL}
            try:
                await self._locks.insert_one(lock)
            except DuplicateKeyError:
                await self._break_if_stale(job_id)
            else:
                return token
            if loop.time() > deadline:
                raise store_error(TimeoutError(f"job {job_id} stayed locked"), "lock")
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 (jitter only)
            delay = min(delay * 2, 0.05)

    async def _break_if_stale(self, job_id: str) -> None:
        await self._locks.delete_one({"job_id": job_id, "expires_at": {"$lte": now_ms()}})
