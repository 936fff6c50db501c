"""The CLI's response envelopes (design notes) and its readable output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from shared.errors import ErrorInfo
from shared.models import Result


def _meta(execution_time: float) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "execution_time": round(execution_time, 6),
        "version": version("autoscorer"),
    }


def success(data: Any, execution_time: float) -> dict[str, Any]:
    return {"status": "success", "data": data, "meta": _meta(execution_time)}


def failure(error: ErrorInfo, execution_time: float, data: Any = None) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "status": "error",
        "error": error.model_dump(mode="json"),
        "meta": _meta(execution_time),
    }
    if data is not None:
        envelope["data"] = data
    return envelope


def print_json(envelope: dict[str, Any]) -> None:
    text = json.dumps(envelope, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    sys.stdout.write(text + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6f}"
    return str(value)


@dataclass
class _Style:
    details: bool = False


_STYLE = _Style()
MAX_LINE = 2000


def show_details(flag: bool) -> None:
    """Readable errors: one line (the default), or with their details and logs (--debug)."""
    _STYLE.details = flag


def print_error(error: ErrorInfo) -> None:
    """One line on stderr: ``error CODE (stage, fault fault[, retryable]): message``; the
    details follow, indented, with --debug (--json always carries them)."""
    err = sys.stderr
    message = " ".join(error.message.split())[:MAX_LINE]
    retry = ", retryable" if error.retryable else ""
    err.write(f"error {error.code.value} ({error.stage.value}, {error.fault.value} fault{retry})")
    logs = error.logs or ""
    where = f" (logs: {logs})" if logs and "\n" not in logs and len(logs) < 200 else ""
    err.write(f": {message}{where}\n")
    if not _STYLE.details:
        return
    for key, value in error.details.items():
        text = json.dumps(value, ensure_ascii=False, default=str)
        err.write(f"  {key}: {text[:600]}\n")
    if error.logs:
        err.write(f"  logs: {error.logs}\n")


def print_result(result: Result, where: str) -> None:
    if result.error is not None:
        print_error(result.error)
        return
    scorer = result.versioning.get("scorer", "?")
    out = sys.stdout
    out.write(f"{scorer} {result.versioning.get('version', '')}\n")
    for key, value in result.summary.items():
        out.write(f"  {key:<24} {_fmt(value)}\n")
    scalars = {k: v for k, v in result.metrics.items() if not isinstance(v, dict)}
    if scalars:
        out.write("metrics:\n")
        for key, value in scalars.items():
            out.write(f"  {key:<24} {_fmt(value)}\n")
    for key, nested in result.metrics.items():
        if isinstance(nested, dict):
            out.write(f"{key}: {len(nested)} entries (see result.json)\n")
    if result.timing:
        out.write("timing: " + ", ".join(f"{k}={v:.3f}s" for k, v in result.timing.items()) + "\n")
    out.write(f"result: {where}\n")
