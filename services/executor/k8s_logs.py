"""Copy a run's Pod log into ``logs/container.log``, capped, with a visible truncation marker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.executor.k8s_api import KubeApi
from services.executor.k8s_names import CONTAINER_NAME
from shared.files import atomic_write_bytes
from shared.workspace import Workspace

LOG_NAME = "container.log"
TAIL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class SavedLog:
    path: str  # relative to the workspace
    truncated: bool
    tail: str


def truncation_marker(cap_bytes: int) -> bytes:
    return f"\n[autoscorer: log truncated at {cap_bytes} bytes]\n".encode()


def log_body(data: bytes | None, truncated: bool, cap_bytes: int, pod: str | None) -> bytes:
    if data is None:
        return f"[autoscorer: no log: pod {pod or '(none)'} is gone or never started]\n".encode()
    return data + truncation_marker(cap_bytes) if truncated else data


async def save_container_log(api: KubeApi, ws: Workspace, pod: str | None,
                             cap_bytes: int) -> SavedLog:
    read = await api.read_log(pod, CONTAINER_NAME, cap_bytes) if pod else None
    data = read.data if read is not None else None
    truncated = read.truncated if read is not None else False
    body = log_body(data, truncated, cap_bytes, pod)
    await asyncio.to_thread(atomic_write_bytes, ws.logs_dir / LOG_NAME, body)
    tail = (data or b"")[-TAIL_BYTES:].decode("utf-8", errors="replace")
    return SavedLog(f"logs/{LOG_NAME}", truncated, tail)
