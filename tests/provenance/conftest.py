"""Both job stores (SQLite, and MongoDB-wire on the FerretDB the test command provisions)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from shared.store import JobStore
from shared.store_mongo import MongoJobStore
from shared.store_sqlite import SqliteJobStore


def mongo_url() -> str:
    return os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")


@pytest.fixture(params=[pytest.param("mongo", marks=pytest.mark.mongo), "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    opened: JobStore
    database = f"autoscorer_test_{uuid.uuid4().hex[:12]}"
    if request.param == "mongo":
        opened = MongoJobStore.from_url(mongo_url(), database, timeoutMS=10_000)
    else:
        opened = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await opened.init()
    try:
        yield opened
    finally:
        await opened.close()
        if request.param == "mongo":
            client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
                mongo_url(), timeoutMS=10_000
            )
            try:
                await client.drop_database(database)
            finally:
                await client.close()
