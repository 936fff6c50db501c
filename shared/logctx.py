"""Which job a log record belongs to: a context variable set around job-scoped work.

The bus sets it around every handler (``shared.bus_dispatch``: the event's ``job_id`` and, when
the event has one, its run ``attempt``), so every service's handlers, and the tasks they start,
log with the job's id without passing it around. :class:`ContextFilter` copies it, with the
current OpenTelemetry span's trace and span ids, onto every record a handler emits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass

from opentelemetry import trace

from shared.errors import AutoscorerError


@dataclass(frozen=True, slots=True)
class JobScope:
    job_id: str
    attempt: int | None = None


_CURRENT: ContextVar[JobScope | None] = ContextVar("autoscorer_job", default=None)

Bound = Token[JobScope | None]


def current_job() -> JobScope | None:
    return _CURRENT.get()


def bind_job(job_id: str | None, attempt: int | None = None) -> Bound:
    """Make ``job_id`` the current job (``None``: no job); undo with :func:`unbind_job`."""
    return _CURRENT.set(JobScope(job_id, attempt) if job_id else None)


def unbind_job(token: Bound | None) -> None:
    if token is not None:
        _CURRENT.reset(token)


@contextmanager
def job_context(job_id: str | None, attempt: int | None = None) -> Iterator[None]:
    """Records logged inside (and in tasks started inside) carry ``job_id`` and ``attempt``."""
    token = bind_job(job_id, attempt)
    try:
        yield
    finally:
        unbind_job(token)


class ContextFilter(logging.Filter):
    """Adds ``job_id``, ``attempt``, ``trace_id``, ``span_id`` and ``error_code`` to a record
    (``None`` when unknown); values passed with ``extra=`` win. Put it on the handler, so
    records of every logger get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _CURRENT.get()
        _default(record, "job_id", scope.job_id if scope else None)
        _default(record, "attempt", scope.attempt if scope else None)
        span = trace.get_current_span().get_span_context()
        _default(record, "trace_id", f"{span.trace_id:032x}" if span.is_valid else None)
        _default(record, "span_id", f"{span.span_id:016x}" if span.is_valid else None)
        _default(record, "error_code", _error_code(record))
        return True


def _default(record: logging.LogRecord, name: str, value: object) -> None:
    if getattr(record, name, None) is None:
        setattr(record, name, value)


def _error_code(record: logging.LogRecord) -> str | None:
    """The code of an ``AutoscorerError`` logged with ``exc_info``."""
    exc = record.exc_info[1] if record.exc_info else None
    return exc.code.value if isinstance(exc, AutoscorerError) else None
