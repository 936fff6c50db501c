"""Copy a run's Pod log into ``logs/container.log``, capped, with a visible truncation marker."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.executor.kubernetes.api import KubeApi, LogRead
from services.executor.kubernetes.names import CONTAINER_NAME
from shared.errors import AutoscorerError
from shared.files import atomic_write_bytes
from shared.workspace import Workspace

log = logging.getLogger(__name__)

LOG_NAME = "container.log"
TAIL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class SavedLog:
    path: str  # relative to the workspace
    truncated: bool
    tail: str


def truncation_marker(cap_bytes: int) -> bytes:
    return f"\n[autoscorer: log truncated at {cap_bytes} bytes]\n".encode()


def log_body(data: bytes | None, truncated: bool, cap_bytes: int, missing: str) -> bytes:
    if data is None:
        return f"[autoscorer: no log: {missing}]\n".encode()
    return data + truncation_marker(cap_bytes) if truncated else data


async def fetch_log(api: KubeApi, pod: str | None, cap_bytes: int) -> tuple[LogRead | None, str]:
    """The log, or None and why; the run's verdict is known, so a failing API must not lose it."""
    if not pod:
        return None, "no pod was ever seen"
    try:
        read = await api.read_log(pod, CONTAINER_NAME, cap_bytes)
    except AutoscorerError as exc:
        log.warning("could not read the log of pod %s: %s", pod, exc.message)
        return None, f"the API failed: {exc.message}"
    return read, f"pod {pod} is gone or its container never started"


async def save_container_log(
    api: KubeApi, ws: Workspace, pod: str | None, cap_bytes: int
) -> SavedLog:
    read, missing = await fetch_log(api, pod, cap_bytes)
    data = read.data if read is not None else None
    truncated = read.truncated if read is not None else False
    body = log_body(data, truncated, cap_bytes, missing)
    await asyncio.to_thread(atomic_write_bytes, ws.logs_dir / LOG_NAME, body)
    tail = (data or b"")[-TAIL_BYTES:].decode("utf-8", errors="replace")
    return SavedLog(f"logs/{LOG_NAME}", truncated, tail)
