"""Process logging: JSON lines or readable text (``log.format``), set up once in ``main()``.

Every record carries the service, the logger, and (through :class:`shared.logctx.ContextFilter`)
the job, the attempt, the trace and span ids and the error code when there is one. In
``autoscorer serve`` the four services share one process: a record of a logger under
``services.<name>.`` names that service, any other record the process's name.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from shared.config import LogSettings
from shared.logctx import ContextFilter

SERVICES = ("gateway", "scheduler", "executor", "scorer", "cli")
FIELDS = ("job_id", "attempt", "trace_id", "span_id", "error_code")


def service_of(logger_name: str, process: str) -> str:
    """``services.scheduler.context`` -> ``scheduler``; ``shared.bus`` -> ``process``."""
    parts = logger_name.split(".")
    if len(parts) > 1 and parts[0] == "services" and parts[1] in SERVICES:
        return parts[1]
    return process


def timestamp(record: logging.LogRecord) -> str:
    """ISO-8601 in UTC to the millisecond: ``2026-11-29T19:02:41.123Z``."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes in ``exception``, still on that line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": timestamp(record),
            "level": record.levelname,
            "service": service_of(record.name, self.service),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name, None) for name in FIELDS})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-29T19:02:41.123Z INFO scheduler services.scheduler.context [job=j1 attempt=1
    trace=…] message``; the bracket only when the record belongs to a job."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        head = (
            f"{timestamp(record)} {record.levelname} "
            f"{service_of(record.name, self.service)} {record.name}"
        )
        tags = _tags(record)
        text = f"{head} [{tags}] {record.getMessage()}" if tags else f"{head} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _tags(record: logging.LogRecord) -> str:
    shown = {
        "job": getattr(record, "job_id", None),
        "attempt": getattr(record, "attempt", None),
        "code": getattr(record, "error_code", None),
        "trace": getattr(record, "trace_id", None),
    }
    if shown["job"] is None and shown["code"] is None:
        return ""
    return " ".join(f"{key}={value}" for key, value in shown.items() if value is not None)


def make_formatter(settings: LogSettings, service: str) -> logging.Formatter:
    return JsonFormatter(service) if settings.format == "json" else TextFormatter(service)


def log_handler(
    settings: LogSettings, service: str, stream: TextIO | None = None
) -> logging.Handler:
    """A stream handler (stderr by default) with the chosen format and the context filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(settings, service))
    handler.addFilter(ContextFilter())
    return handler


_installed: list[tuple[LogSettings, str]] = []


def setup_logging(settings: LogSettings, service: str, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one :func:`log_handler` at ``log.level``;
    ``warnings`` become records too (one format on stderr)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(log_handler(settings, service, stream))
    root.setLevel(settings.level)
    logging.captureWarnings(True)
    _installed[:] = [(settings, service)]


def installed_logging() -> tuple[LogSettings, str] | None:
    """What :func:`setup_logging` installed in this process, for a child process (a scoring
    worker) to set up the same (``None``: never called)."""
    return _installed[0] if _installed else None
