"""Unpacking an uploaded workspace archive (tar, tar.gz or zip) safely.

Refused, with UPLOAD_REJECTED naming the member: absolute paths, ``..`` components, links of
any kind, devices and FIFOs, more than ``max_files`` members, more than ``max_unpacked`` bytes
(counted while writing, not trusted from headers), and archives that are neither tar nor zip.
Nothing is left behind on refusal.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from services.gateway.http import api_error
from shared.errors import AutoscorerError, ErrorCode

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    max_files: int
    max_unpacked: int


def _reject(message: str, **details: object) -> AutoscorerError:
    return api_error(ErrorCode.UPLOAD_REJECTED, message, **details)


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise _reject(f"archive member {name!r} escapes the workspace", member=name)
    return path


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def count_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise _reject(f"archive has more than {self.limits.max_files} files", member=name)

    def copy(self, source: IO[bytes], target: Path, name: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            while block := source.read(CHUNK):
                self.bytes += len(block)
                if self.bytes > self.limits.max_unpacked:
                    raise _reject(
                        f"archive unpacks to more than {self.limits.max_unpacked} bytes",
                        member=name,
                    )
                out.write(block)


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    with tarfile.open(archive, mode="r:*") as tar:
        for member in tar:
            path = _safe_name(member.name)
            if member.isdir():
                (dest / path).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise _reject(
                    f"archive member {member.name!r} is not a regular file", member=member.name
                )
            budget.count_file(member.name)
            source = tar.extractfile(member)
            if source is None:
                raise _reject(f"archive member {member.name!r} cannot be read", member=member.name)
            budget.copy(source, dest / path, member.name)


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = _safe_name(info.filename)
            mode = info.external_attr >> 16
            if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                raise _reject(
                    f"archive member {info.filename!r} is not a regular file", member=info.filename
                )
            if info.is_dir():
                (dest / path).mkdir(parents=True, exist_ok=True)
                continue
            budget.count_file(info.filename)
            with zf.open(info) as source:
                budget.copy(source, dest / path, info.filename)


def extract_workspace(archive: Path, dest: Path, limits: Limits) -> None:
    """Unpack ``archive`` into the new directory ``dest``; on any refusal ``dest`` is removed."""
    dest.mkdir(parents=True)
    budget = _Budget(limits)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, budget)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, dest, budget)
        else:
            raise _reject("the upload is neither a tar(.gz) nor a zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise _reject(f"the archive is corrupt: {exc}") from exc
    except AutoscorerError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
