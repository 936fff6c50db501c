"""Image references, the allow-list, and getting the exact image a job names onto the engine.

References are normalised to ``repo:tag`` (``latest`` when no tag; digests kept as given) and
matched exactly against the engine's tags, never by the engine's prefix-of-an-id lookup. The
container is then created from the resolved image *id*, so a tag moved by another job between
resolution and creation cannot swap the image under us.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker

from services.executor.docker.config import DockerConfig
from shared.errors import AutoscorerError, ErrorCode, execution_error

ARCHIVE_NAMES = ("image.tar", "image.tar.gz")
_HUB_PREFIXES = ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/")
_CHUNK = 1 << 20
_MISSING_HINTS = ("manifest unknown", "not found", "does not exist", "access denied")


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    reference: str  # normalised
    image_id: str  # sha256:...
    digest: str | None  # repo@sha256:... when the image came from a registry


def normalise(reference: str) -> str:
    """``busybox`` -> ``busybox:latest``; ``host:5000/a/b`` -> ``host:5000/a/b:latest``."""
    ref = reference.strip()
    for prefix in _HUB_PREFIXES:
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    if "@" in ref or ref.startswith("sha256:"):
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def check_allowed(reference: str, patterns: list[str] | None) -> None:
    if patterns is None or any(fnmatch.fnmatchcase(reference, p) for p in patterns):
        return
    raise execution_error(
        ErrorCode.IMAGE_NOT_ALLOWED, f"image {reference} is not on the allow-list", image=reference
    )


def find_archive(workspace_root: Path, configured: str | None) -> Path | None:
    """The image archive shipped with the job, if any (config path first, then the workspace)."""
    candidates = [Path(configured)] if configured else []
    candidates += [workspace_root / name for name in ARCHIVE_NAMES]
    return next((c for c in candidates if c.is_file()), None)


async def local_image(docker: aiodocker.Docker, reference: str) -> ResolvedImage | None:
    """The image whose tags (or digests, or id) include ``reference`` exactly; None if absent."""
    try:
        info = await docker.images.inspect(reference)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise
    if not _matches(info, reference):
        return None
    digests = info.get("RepoDigests") or []
    return ResolvedImage(reference, str(info["Id"]), digests[0] if digests else None)


def _matches(info: dict[str, Any], reference: str) -> bool:
    if reference.startswith("sha256:"):
        return str(info.get("Id")) == reference
    names = [normalise(n) for n in (info.get("RepoTags") or []) + (info.get("RepoDigests") or [])]
    return reference in names


async def ensure_image(
    docker: aiodocker.Docker, spec_image: str, config: DockerConfig, workspace_root: Path
) -> ResolvedImage:
    """Make ``spec_image`` present per the pull policy and return what will actually run."""
    reference = normalise(spec_image)
    check_allowed(reference, config.allowed_images)
    archive = find_archive(workspace_root, config.image_archive)
    if archive is not None:
        await _load_archive(docker, archive, config.pull_timeout_s)
        return await _require_local(
            docker, reference, ErrorCode.IMAGE_LOAD_FAILED, archive=str(archive)
        )
    present = await local_image(docker, reference)
    if config.pull_policy == "never" or (present and config.pull_policy == "ifnotpresent"):
        if present is None:
            raise execution_error(
                ErrorCode.IMAGE_NOT_PRESENT,
                f"image {reference} is not on this engine and the pull policy is 'never'",
                image=reference,
            )
        return present
    await _pull(docker, reference, config.pull_timeout_s)
    return await _require_local(docker, reference, ErrorCode.IMAGE_PULL_FAILED)


async def _require_local(
    docker: aiodocker.Docker, reference: str, code: ErrorCode, archive: str | None = None
) -> ResolvedImage:
    resolved = await local_image(docker, reference)
    if resolved is None:
        message = f"image {reference} is still not present"
        if archive is None:
            raise execution_error(code, message, image=reference)
        raise execution_error(code, message, image=reference, archive=archive)
    return resolved


async def _pull(docker: aiodocker.Docker, reference: str, timeout_s: float) -> None:
    try:
        await docker.images.pull(reference, timeout=timeout_s)
    except aiodocker.DockerError as exc:
        raise _pull_error(reference, exc) from exc
    except TimeoutError as exc:
        message = f"pulling {reference} took over {timeout_s}s"
        raise execution_error(ErrorCode.IMAGE_PULL_FAILED, message, image=reference) from exc


def _pull_error(reference: str, exc: aiodocker.DockerError) -> AutoscorerError:
    text = str(exc.message).lower()
    missing = exc.status == 404 or any(hint in text for hint in _MISSING_HINTS)
    code = ErrorCode.IMAGE_NOT_FOUND if missing else ErrorCode.IMAGE_PULL_FAILED
    return execution_error(code, f"pulling {reference} failed: {exc.message}", image=reference)


async def _load_archive(docker: aiodocker.Docker, archive: Path, timeout_s: float) -> None:
    try:
        result = await docker.images.import_image(_read_chunks(archive), timeout=timeout_s)
    except aiodocker.DockerError as exc:
        raise _load_error(archive, str(exc.message)) from exc
    errors = [item["error"] for item in result or [] if isinstance(item, dict) and "error" in item]
    if errors:
        raise _load_error(archive, str(errors[0]))


def _load_error(archive: Path, reason: str) -> AutoscorerError:
    message = f"loading {archive.name} failed: {reason}"
    return execution_error(ErrorCode.IMAGE_LOAD_FAILED, message, archive=str(archive))


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)
