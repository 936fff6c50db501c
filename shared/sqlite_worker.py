"""One thread that owns a SQLite connection, so async code never blocks on SQLite; and the one way
to open a store's SQLite file, privately.

A store file holds what other users of the machine must not read (webhook signing secrets, every
tenant's jobs), so :func:`connect` creates it and its ``-wal``/``-shm`` files mode 0600 (and
tightens them to 0600 when found looser), and a directory it has to make mode 0700.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from pydantic_core import PydanticSerializationError

from shared.store import store_error

P = ParamSpec("P")
T = TypeVar("T")


SIDE_FILES = ("", "-wal", "-shm", "-journal")


def connect(path: str, schema: str) -> sqlite3.Connection:
    """The store file at ``path`` (made private, see above), in WAL mode, with ``schema``."""
    private_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(schema)
    if _on_disk(path):
        tighten(path)  # SQLite gives -wal/-shm the database's mode; make sure of it
    return conn


def _on_disk(path: str) -> bool:
    return path != ":memory:" and not path.startswith("file:")


def private_file(path: str) -> None:
    """Create ``path`` mode 0600 (its directory 0700 if it must be made), before SQLite opens it."""
    if not _on_disk(path):
        return
    parent = Path(path).parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    tighten(path)


def tighten(path: str) -> None:
    """Make the file at ``path`` and its side files 0600 where they are looser."""
    for suffix in SIDE_FILES:
        try:
            if os.stat(path + suffix).st_mode & 0o077:
                os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            continue


class SqliteWorker:
    """Runs functions on its single thread; sqlite3 errors become STORE_ERROR."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def run(self, operation: str, fn: Callable[P, T], *args: P.args, **kw: P.kwargs) -> T:
        if self._executor is None:
            raise RuntimeError(f"{self._name} used before init() or after close()")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kw))
        # OSError: the file or its folder cannot be made; the others: a value the stored form
        # (shared.store_mongo_keys) does not cover, a store error as on Mongo, never a raw one
        except (sqlite3.Error, OSError, PydanticSerializationError, UnicodeEncodeError) as exc:
            raise store_error(exc, operation) from exc
