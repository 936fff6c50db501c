"""One thread that owns a SQLite connection, so async code never blocks on SQLite."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from shared.store import store_error

P = ParamSpec("P")
T = TypeVar("T")


def connect(path: str, schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(schema)
    return conn


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
        except sqlite3.Error as exc:
            raise store_error(exc, operation) from exc
