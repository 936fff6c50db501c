"""How the stores fail: one retryable STORE_ERROR when the database does, clear misuse errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from shared.errors import AutoscorerError, ErrorCode, Fault, Stage
from shared.jobs import new_job
from shared.models import JobSpec
from shared.store import JobNotFoundError
from shared.store_mongo import driver_errors
from shared.store_sqlite import SqliteJobStore


async def test_a_mongo_driver_failure_becomes_a_retryable_store_error() -> None:
    # Not a real unreachable server: closing an AsyncMongoClient whose monitor is mid-connect
    # leaks a socket in PyMongo 4.20 (PYTHON-5867), which filterwarnings=error turns into a
    # random failure of whichever test runs next.
    with pytest.raises(AutoscorerError) as caught:
        async with driver_errors("get"):
            raise ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused")

    error = caught.value
    assert error.code is ErrorCode.STORE_ERROR
    assert error.stage is Stage.PLATFORM
    assert error.fault is Fault.PLATFORM
    assert error.retryable
    assert error.details == {"operation": "get", "exception": "ServerSelectionTimeoutError"}
    assert isinstance(error.__cause__, ServerSelectionTimeoutError)


async def test_store_errors_of_its_own_pass_through_the_guard() -> None:
    with pytest.raises(JobNotFoundError):
        async with driver_errors("transition"):
            raise JobNotFoundError("job-1")


async def test_a_sqlite_file_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")  # a missing folder is made; this is not
    store = SqliteJobStore(tmp_path / "a-file" / "jobs.sqlite3")
    try:
        with pytest.raises(AutoscorerError) as caught:
            await store.init()
    finally:
        await store.close()

    assert caught.value.code is ErrorCode.STORE_ERROR
    assert caught.value.details["operation"] == "init"


async def test_a_sqlite_store_must_be_opened_before_use(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = new_job(JobSpec(job_id="job-1", scorer="rmse"), workspace="/ws")

    with pytest.raises(RuntimeError, match="init"):
        await store.create(job)

    await store.init()
    assert (await store.create(job)).created
    await store.close()
    with pytest.raises(RuntimeError, match="init"):
        await store.get("job-1")


async def test_a_sqlite_store_runs_its_work_off_the_event_loop_thread(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.init()
    try:
        thread = await store._run("probe", _thread_name)
    finally:
        await store.close()

    assert thread.startswith("autoscorer-sqlite")


def _thread_name() -> str:
    return threading.current_thread().name
