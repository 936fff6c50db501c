"""Follow a container's output into ``logs/container.log`` while it runs, up to a byte cap.

Past the cap one visible marker line is written and the rest of the stream is read and dropped
until the container ends; the engine's own json-file copy is size-capped and rotated, so a flood
cannot fill a disk. The stream (``GET /containers/{id}/logs?follow=1``, multiplexed frames) is
read here rather than through aiodocker's ``log()``, whose generator leaves its response
unreleased when abandoned (a cancelled run would leak a connection); the bytes are kept as the
engine returns them (its json-file driver has already replaced invalid UTF-8 with U+FFFD).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from pathlib import Path
from typing import BinaryIO

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

TRUNCATION_MARKER = "[autoscorer] log truncated at {limit} bytes; further output discarded"
# json-file options for the engine's own copy, sized so the follower can always keep up with the cap
ENGINE_LOG_FILES = 2
_FRAME_HEADER = struct.Struct(">BxxxL")  # stream (1 stdout, 2 stderr), 3 zero bytes, length


def engine_log_config(limit: int) -> dict[str, object]:
    return {
        "Type": "json-file",
        "Config": {"max-size": str(max(limit, 1 << 20)), "max-file": str(ENGINE_LOG_FILES)},
    }


class LogFollower:
    """Streams one container's stdout and stderr into a file; ``truncated`` once the cap was hit."""

    def __init__(
        self, docker: aiodocker.Docker, container: DockerContainer, path: Path, limit: int
    ) -> None:
        self._docker = docker
        self._container = container
        self._path = path
        self._limit = limit
        self.written = 0
        self.truncated = False

    async def run(self) -> None:
        # opened and closed on the loop (one syscall each): a thread could not be cancelled
        # cleanly and would leak the handle when the run is cancelled while it opens
        with (
            self._path.open("wb") as handle,
            contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError),  # engine went away
        ):
            await self._follow(handle)

    async def _follow(self, handle: BinaryIO) -> None:
        path = f"containers/{self._container.id}/logs"
        params = {"stdout": "1", "stderr": "1", "follow": "1"}
        query = self._docker._query(path, params=params, timeout=aiohttp.ClientTimeout())
        async with query as response:
            try:
                while (frame := await _read_frame(response.content)) is not None:
                    self._take(handle, frame)
            finally:
                response.close()

    def _take(self, handle: BinaryIO, data: bytes) -> None:
        if self.truncated:
            return
        room = self._limit - self.written
        if len(data) > room:
            self._write(handle, data[:room])
            self._write_marker(handle)
        else:
            self._write(handle, data)

    def _write(self, handle: BinaryIO, data: bytes) -> None:
        # engine frames are at most 16 KiB: a small write, fine on the loop
        handle.write(data)
        handle.flush()
        self.written += len(data)

    def _write_marker(self, handle: BinaryIO) -> None:
        prefix = b"" if self.written == 0 else b"\n"
        handle.write(prefix + TRUNCATION_MARKER.format(limit=self._limit).encode() + b"\n")
        handle.flush()
        self.truncated = True


async def _read_frame(content: aiohttp.StreamReader) -> bytes | None:
    """The next frame's payload; None at the end of the stream."""
    try:
        _, length = _FRAME_HEADER.unpack(await content.readexactly(_FRAME_HEADER.size))
        return await content.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


def tail(path: Path, lines: int = 20, max_bytes: int = 16 * 1024) -> str:
    """The last ``lines`` lines of a log file (reads at most ``max_bytes`` from its end)."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - max_bytes))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(deque(text.splitlines(), maxlen=lines))
