"""What the stores answer about the queue (``JobStore.count_queued_ahead``,
``recent_run_seconds``, ``queue_stats``), and the helpers both stores share for it.

A queued job is ahead of another on the same backend when it went into ``queued`` earlier
(``Job.queued_at``; job id breaks a tie): its run request was published then (the scheduler
flushes it with the transition), and the executor queue is first in, first out (a RabbitMQ
quorum queue, no message priorities), so that is the order runs start in. Priority does not
reorder it. docs/OBSERVABILITY.md, "Where is my job?", says what the numbers promise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.jobs import Attempts

RECENT_RUNS = 50
"""how many finished runs an estimate looks back on"""


@dataclass(frozen=True, slots=True)
class BackendQueue:
    """One backend's queue as the store sees it."""

    backend: str
    queued: int
    running: int
    oldest_queued_at: datetime | None


def last_run_seconds(attempts: Attempts, backend: str) -> float | None:
    """How long the job's last finished attempt ran, if it ran on ``backend``."""
    for record in reversed(attempts.records):
        if record.finished_at is not None:
            ran = (record.finished_at - record.started_at).total_seconds()
            return max(0.0, ran) if record.backend == backend else None
    return None


def merge_counts(rows: list[tuple[str, str, int, datetime | None]]) -> list[BackendQueue]:
    """``BackendQueue`` per backend from (backend, status, count, oldest created_at) rows."""
    found: dict[str, BackendQueue] = {}
    for backend, status, count, oldest in rows:
        known = found.get(backend, BackendQueue(backend, 0, 0, None))
        if status == "queued":
            known = BackendQueue(backend, count, known.running, oldest)
        else:
            known = BackendQueue(backend, known.queued, count, known.oldest_queued_at)
        found[backend] = known
    return [found[name] for name in sorted(found)]
