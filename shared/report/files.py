"""Reading files a report or the gateway serves from a workspace, safely.

Participant code writes ``output/`` and ``logs/`` may hold what its program printed, so a path is
only followed when it stays inside the workspace folder it names with no symbolic link on the way,
and the file is a regular one under a size cap.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
LOG_TAIL_BYTES = 16 * 1024


def _opened(root: Path, relative: str, folder: str) -> int | None:
    """A read-only descriptor of ``root/relative`` when it is a regular file inside
    ``root/folder`` reached without a link; None otherwise."""
    try:
        real_root = os.path.realpath(root)
        path = os.path.normpath(os.path.join(real_root, relative))
        inside = Path(path).is_relative_to(os.path.join(real_root, folder))
        if not inside or os.path.realpath(path) != path:
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_bounded(root: Path, relative: str, folder: str, limit: int) -> bytes | None:
    """The file's bytes, or None when it is absent, unsafe (see above) or over ``limit``."""
    fd = _opened(root, relative, folder)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None


def read_tail(root: Path, relative: str, folder: str, lines: int) -> str | None:
    """The last ``lines`` lines (at most LOG_TAIL_BYTES) of a text file, or None."""
    fd = _opened(root, relative, folder)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def read_json_object(root: Path, relative: str, folder: str) -> dict[str, Any] | None:
    data = read_bounded(root, relative, folder, MAX_JSON_BYTES)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
