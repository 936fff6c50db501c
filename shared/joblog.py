"""The per-job event log: ``logs/job.jsonl`` in the job's workspace (the design notes' JobLogger).

One JSON object per line: ``{"timestamp", "event", "job_id", "attempt", "service", "data"}``.
Whoever has the workspace on its file system appends what it did: the executor service its runs
(``run_started``, ``run_completed`` with status, error code and duration), the scorer service
its scorings (``scoring_started``, ``scoring_completed``), the CLI's ``run`` and ``pipeline``
the same steps (service ``cli``), and the scheduler every transition of
the job when the workspace path is a directory it can reach (always in ``autoscorer serve``;
in a distributed deploy only if it mounts the data root, else the transitions stay in the job's
``history`` and in the logs). Each line is one ``write`` on a file opened ``O_APPEND``, so
writers in several processes do not interleave.

Bounded: once the file has reached the cap, one ``{"event": "log_truncated"}`` line ends it and
nothing more is written (at most the cap plus one line plus the marker). Never participant
writable: ``logs/`` is outside the participant view that Docker and Kubernetes mount (the
local backend is no sandbox, docs/OBSERVABILITY.md); the file is opened with ``O_NOFOLLOW``.
Appending is best effort: a log that cannot be written never fails the job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec

log = logging.getLogger(__name__)
P = ParamSpec("P")

JOB_LOG = "job.jsonl"
TRUNCATED = "log_truncated"
MAX_LINE_BYTES = 8192
_DEFAULT_CAP = 1024 * 1024
_cap = _DEFAULT_CAP


def set_job_log_cap(max_bytes: int) -> None:
    """The process's cap (``log.job_log_max_bytes``), set once in ``main()``."""
    global _cap  # noqa: PLW0603 - one process-wide setting, like the logging configuration
    _cap = max_bytes


def job_log_path(workspace: str | Path) -> Path:
    return Path(workspace) / "logs" / JOB_LOG


def reachable(workspace: str | Path) -> bool:
    """Whether ``workspace`` is a directory here (a URI or another host's path is not)."""
    return os.path.isabs(workspace) and os.path.isdir(workspace)


def job_event(
    event: str, job_id: str, *, attempt: int | None = None, service: str, **data: Any
) -> bytes:
    """One line; a line above :data:`MAX_LINE_BYTES` keeps only its head fields."""
    line: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": event,
        "job_id": job_id,
        "attempt": attempt,
        "service": service,
        "data": {k: v for k, v in data.items() if v is not None},
    }
    encoded = (json.dumps(line, default=str) + "\n").encode()  # ASCII: any text survives
    if len(encoded) > MAX_LINE_BYTES:
        line["data"] = {"cut": True}
        encoded = (json.dumps(line, default=str) + "\n").encode()
    return encoded


def append_line(path: Path, line: bytes, cap: int | None = None) -> bool:
    """Append ``line`` unless the file has reached ``cap``; then end it with the marker once.
    Returns whether ``line`` was written."""
    limit = _cap if cap is None else cap
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size < limit:
            os.write(fd, line)
            return True
        if not _ends_with_marker(path):
            os.write(fd, (json.dumps({"event": TRUNCATED, "cap_bytes": limit}) + "\n").encode())
        return False
    finally:
        os.close(fd)


def _ends_with_marker(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - 128))
        return TRUNCATED.encode() in handle.read()


def record(
    workspace: str | Path,
    event: str,
    job_id: str,
    *,
    only_if_reachable: bool = False,
    cap: int | None = None,
    **fields: Any,
) -> None:
    """Append one event to the workspace's job log; a failure is logged, never raised.
    ``only_if_reachable``: skip a workspace that is no directory here (:func:`reachable`);
    ``cap``: instead of the process's (:func:`set_job_log_cap`)."""
    if only_if_reachable and not reachable(workspace):
        return
    try:
        append_line(job_log_path(workspace), job_event(event, job_id, **fields), cap)
    except OSError as exc:
        log.warning("job log of %s not written: %s", job_id, exc.strerror or exc)


def off_the_loop(fn: Callable[P, None]) -> Callable[P, Awaitable[None]]:
    """``fn`` (blocking file work) as a coroutine function that runs it in a thread."""

    async def in_a_thread(*args: P.args, **kwargs: P.kwargs) -> None:
        await asyncio.to_thread(fn, *args, **kwargs)

    return in_a_thread


arecord = off_the_loop(record)
""":func:`record` off the event loop."""
