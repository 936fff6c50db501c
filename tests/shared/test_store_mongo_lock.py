"""The per-job write lock the Mongo store takes on servers whose updates are not atomic."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.jobs import JobStatus, new_job, now_ms
from shared.models import JobSpec
from shared.store_mongo import MongoJobStore

pytestmark = pytest.mark.mongo

Document = dict[str, Any]


@pytest.fixture
async def client() -> AsyncIterator[AsyncMongoClient[Document]]:
    url = os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(url, timeoutMS=10_000, tz_aware=True)
    yield mongo
    await mongo.close()


@pytest.fixture
async def store(client: AsyncMongoClient[Document]) -> AsyncIterator[MongoJobStore]:
    database = f"autoscorer_test_{uuid.uuid4().hex[:12]}"
    jobs = MongoJobStore(client, database, serialize_writes=True)  # lock even on real MongoDB
    await jobs.init()
    yield jobs
    await client.drop_database(database)


async def submitted(store: MongoJobStore) -> str:
    job = new_job(JobSpec(scorer="rmse"), workspace=f"/ws/{uuid.uuid4().hex}")
    await store.create(job)
    return job.job_id


def locks(client: AsyncMongoClient[Document], store: MongoJobStore) -> Any:
    return client[store._jobs.database.name]["jobs_locks"]


async def test_a_write_leaves_no_lock_behind(
    client: AsyncMongoClient[Document], store: MongoJobStore
) -> None:
    job_id = await submitted(store)

    await store.transition(job_id, JobStatus.SUBMITTED, JobStatus.QUEUED)

    assert await locks(client, store).count_documents({}) == 0


async def test_a_held_lock_makes_a_write_wait_for_its_release(
    client: AsyncMongoClient[Document], store: MongoJobStore
) -> None:
    job_id = await submitted(store)
    held = {"_id": "other", "job_id": job_id, "expires_at": now_ms() + timedelta(minutes=1)}
    await locks(client, store).insert_one(held)

    write = asyncio.create_task(store.transition(job_id, JobStatus.SUBMITTED, JobStatus.QUEUED))
    await asyncio.sleep(0.3)
    waited = not write.done()
    await locks(client, store).delete_one({"_id": "other"})
    moved = await asyncio.wait_for(write, 10)

    assert waited
    assert moved.applied


async def test_a_lock_whose_holder_died_is_broken_once_expired(
    client: AsyncMongoClient[Document], store: MongoJobStore
) -> None:
    job_id = await submitted(store)
    stale = {"_id": "dead", "job_id": job_id, "expires_at": now_ms() - timedelta(seconds=1)}
    await locks(client, store).insert_one(stale)

    moved = await asyncio.wait_for(
        store.transition(job_id, JobStatus.SUBMITTED, JobStatus.QUEUED), 10
    )

    assert moved.applied
    assert await locks(client, store).count_documents({}) == 0


async def test_the_server_kind_decides_whether_writes_are_locked(
    client: AsyncMongoClient[Document],
) -> None:
    database = f"autoscorer_test_{uuid.uuid4().hex[:12]}"
    store = MongoJobStore(client, database)
    try:
        await store.init()
        info = await client[database].command("buildInfo")
    finally:
        await client.drop_database(database)

    assert store.serializes_writes is ("ferretdbVersion" in info)
