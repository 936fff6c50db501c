"""Small file helpers: atomic writes and artifacts with size and sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from shared.models import Artifact


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees either the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone who may read output/
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def make_artifact(root: Path, path: Path, *, media_type: str, description: str = "") -> Artifact:
    """Describe a file under ``root`` (the workspace) by relative path, size and sha256."""
    return Artifact(
        path=path.relative_to(root).as_posix(),
        size=path.stat().st_size,
        sha256=sha256_file(path),
        media_type=media_type,
        description=description,
    )
