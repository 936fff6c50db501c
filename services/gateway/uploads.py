"""Unpacking an uploaded workspace archive (tar, tar.gz, tar.bz2, tar.xz or zip) safely.

Refused, with UPLOAD_REJECTED naming the member (cut short): absolute paths, ``..`` components,
names with NUL or other control characters or that are not UTF-8, names deeper than
``max_depth`` or longer than the file system takes, links of any kind, devices, FIFOs and sparse
files, more than ``max_files`` entries (directories count, including the ones a member's path
implies), more than ``max_unpacked`` bytes (counted while writing and while draining, never
trusted from headers), tar metadata records (pax, GNU long names) over 64 KiB, and archives that
are neither tar nor zip or are corrupt. Compressed streams are read to their end, so a bad
checksum anywhere is a refusal. Errors never quote an internal path or an exception's text.
Nothing is left behind on refusal.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, Self, cast

from services.gateway.http import api_error, shown
from shared.errors import AutoscorerError, ErrorCode

CHUNK = 1 << 20
MAX_DEPTH = 32
NAME_MAX = 255  # bytes in one path component
PATH_MAX = 1024  # bytes in a member's whole path
META_MAX = 64 * 1024  # bytes of one pax / GNU long-name record
ZIP_DIR_ENTRY_MAX = 1200  # bytes one central-directory entry may take, on average
CORRUPT = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    struct.error,
)


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Limits:
    max_files: int
    max_unpacked: int
    max_depth: int = MAX_DEPTH


def _reject(message: str, **details: object) -> AutoscorerError:
    return api_error(ErrorCode.UPLOAD_REJECTED, message, **details)


def _refuse_member(name: str, why: str) -> AutoscorerError:
    return _reject(f"archive member {shown(name)} {why}", member=shown(name))


def _safe_name(name: str, max_depth: int) -> PurePosixPath:
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _refuse_member(name, "has a NUL or control character in its name")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _refuse_member(name, "has a name that is not UTF-8") from exc
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise _refuse_member(name, "escapes the workspace")
    if len(path.parts) > max_depth:
        raise _refuse_member(name, f"is nested deeper than {max_depth} folders")
    if len(raw) > PATH_MAX or any(len(p.encode()) > NAME_MAX for p in path.parts):
        raise _refuse_member(name, "has a name longer than the file system takes")
    return path


class _Budget:
    """Entries (files and folders) and bytes written so far, against the limits."""

    def __init__(self, dest: Path, limits: Limits) -> None:
        self.dest = dest
        self.limits = limits
        self.entries = 0
        self.bytes = 0
        self.folders: set[PurePosixPath] = set()

    def _count(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise _reject(
                f"archive has more than {self.limits.max_files} files and folders",
                member=shown(name),
            )

    def folder(self, path: PurePosixPath, name: str) -> None:
        """Create ``path`` and any parents not seen yet, each one counted."""
        new = [p for p in (path, *path.parents) if p.parts and p not in self.folders]
        for parent in new:
            self._count(name)
            self.folders.add(parent)
        if new:
            (self.dest / path).mkdir(parents=True, exist_ok=True)

    def add_bytes(self, size: int, name: str) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_unpacked:
            raise _reject(
                f"archive unpacks to more than {self.limits.max_unpacked} bytes",
                member=shown(name),
            )

    def file(self, source: _Readable, path: PurePosixPath, name: str) -> None:
        self.folder(path.parent, name)
        self._count(name)
        with (self.dest / path).open("wb") as out:
            while block := source.read(CHUNK):
                self.add_bytes(len(block), name)
                out.write(block)

    def drain(self, source: _Readable) -> None:
        """Read what follows the last member, so the stream's checksum is verified."""
        while block := source.read(CHUNK):
            self.add_bytes(len(block), "(after the last member)")


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses oversized metadata records before tarfile reads them into memory."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        meta_types = (
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.SOLARIS_XHDTYPE,
        )
        if info.type in meta_types and info.size > META_MAX:
            raise _reject(f"a tar metadata record is larger than {META_MAX} bytes")
        return info


def _decompressed(archive: Path) -> io.BufferedIOBase:
    """The archive's bytes after its compression (by magic number), read as a stream."""
    with archive.open("rb") as probe:
        magic = probe.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(archive, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(archive, "rb")
    return archive.open("rb")


def _extract_tar(archive: Path, budget: _Budget) -> None:
    with (
        _decompressed(archive) as stream,
        tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", tarinfo=_SafeTarInfo) as tar,
    ):
        for member in tar:
            path = _safe_name(member.name, budget.limits.max_depth)
            if member.isdir():
                budget.folder(path, member.name)
                continue
            if not member.isfile() or member.issparse():
                raise _refuse_member(member.name, "is not a regular file")
            source = tar.extractfile(member)
            if source is None:
                raise _refuse_member(member.name, "cannot be read")
            budget.file(source, path, member.name)
        budget.drain(stream)


def _check_zip_directory(archive: Path, limits: Limits) -> None:
    """Refuse a central directory too big for ``max_files`` entries before zipfile reads it."""
    with archive.open("rb") as handle:
        end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]
    if end is None:
        raise _reject("the zip archive has no central directory")
    size = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if size > limits.max_files * ZIP_DIR_ENTRY_MAX + 65536:
        raise _reject(f"archive has more than {limits.max_files} files and folders")


def _extract_zip(archive: Path, budget: _Budget) -> None:
    _check_zip_directory(archive, budget.limits)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > budget.limits.max_files:
            raise _reject(f"archive has more than {budget.limits.max_files} files and folders")
        for info in infos:
            path = _safe_name(info.orig_filename, budget.limits.max_depth)
            mode = info.external_attr >> 16
            if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                raise _refuse_member(info.orig_filename, "is not a regular file")
            if info.is_dir():
                budget.folder(path, info.orig_filename)
                continue
            with zf.open(info) as source:
                budget.file(source, path, info.orig_filename)  # reads to the end: CRC checked


def _kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        with _decompressed(archive) as stream:
            head = stream.read(tarfile.BLOCKSIZE)
    except CORRUPT:
        return "corrupt"
    if len(head) == tarfile.BLOCKSIZE and head[257:262] == b"ustar":
        return "tar"
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return "unknown"
    return "tar"  # a pre-POSIX (v7) header with a valid checksum


def _extract(archive: Path, budget: _Budget) -> None:
    kind = _kind(archive)
    if kind == "zip":
        _extract_zip(archive, budget)
    elif kind == "tar":
        _extract_tar(archive, budget)
    elif kind == "corrupt":
        raise _reject("the archive is corrupt: its compressed stream cannot be read")
    else:
        raise _reject("the upload is neither a tar (.gz, .bz2, .xz) nor a zip archive")


def extract_workspace(archive: Path, dest: Path, limits: Limits) -> None:
    """Unpack ``archive`` into the new directory ``dest``; on any refusal ``dest`` is removed.

    Blocking: call it in a thread.
    """
    dest.mkdir(parents=True)
    budget = _Budget(dest, limits)
    try:
        _extract(archive, budget)
    except AutoscorerError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except CORRUPT as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise _reject(
            "the archive is corrupt or cannot be unpacked", reason=type(exc).__name__
        ) from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
