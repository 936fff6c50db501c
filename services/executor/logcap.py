"""A capped log sink: writes stream chunks to a file until a byte cap, then one marker line."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

TRUNCATION_MARKER = (
    "\n[autoscorer] log truncated: cap of {cap} bytes reached; {dropped} more bytes dropped\n"
)


class CappedLog:
    """Append-only log file with a hard size cap and a visible truncation marker."""

    def __init__(self, path: Path, cap_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.cap = cap_bytes
        self.written = 0
        self.dropped = 0
        self._handle: BinaryIO = path.open("wb")
        self._tail = bytearray()

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def write(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-8192:]
        room = self.cap - self.written
        if room > 0:
            kept = chunk[:room]
            self._handle.write(kept)
            self._handle.flush()
            self.written += len(kept)
            self.dropped += len(chunk) - len(kept)
        else:
            self.dropped += len(chunk)

    def tail_lines(self, count: int = 20) -> list[str]:
        """The last lines the program printed (kept even past the cap)."""
        text = self._tail.decode("utf-8", errors="replace")
        return text.splitlines()[-count:]

    def close(self) -> None:
        if self.dropped:
            marker = TRUNCATION_MARKER.format(cap=self.cap, dropped=self.dropped)
            self._handle.write(marker.encode())
        self._handle.close()
