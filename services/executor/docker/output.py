"""The size-limited output directory: a per-job tmpfs the participant writes into.

The executor mounts a tmpfs capped at ``output_limit`` bytes and ``output_max_files`` inodes on
``.autoscorer/docker-output`` and bind-mounts it at ``/workspace/output``. Writes past the cap fail
with ENOSPC inside the container, so the host disk is never at risk. After the run the regular
files are copied (never following symlinks, skipping devices and fifos) into the workspace's
``output/``, owned by the executor's user and readable by the scorer, and the tmpfs is unmounted.
Mounting needs CAP_SYS_ADMIN on the host (the executor runs as root next to dockerd). tmpfs pages
are charged to the container's memory cgroup: a run can write at most min(output_limit, memory
limit minus what the program itself uses); past the memory limit the run ends as CONTAINER_OOM.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ErrorCode, execution_error

MOUNT_SOURCE = "autoscorer-output"
_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 2, 4, 2  # <sys/mount.h>
_FULL_SLACK = 64 * 1024  # a write that does not fit the last partial page still counts as "full"


@dataclass(frozen=True, slots=True)
class OutputUsage:
    bytes_used: int
    files_used: int
    full: bool


async def mount_output(path: Path, *, limit: int, max_files: int, uid: int, gid: int) -> None:
    options = f"size={limit},nr_inodes={max_files + 1},uid={uid},gid={gid},mode=0700"
    await asyncio.to_thread(_mount_tmpfs, path, options)


async def unmount_output(path: Path) -> None:
    """Unmount if mounted (lazily, so a busy mount cannot wedge us); idempotent."""
    await asyncio.to_thread(_unmount, path)


def _mount_tmpfs(path: Path, options: str) -> None:
    _unmount(path)
    path.mkdir(parents=True, exist_ok=True)
    flags = _MS_NOSUID | _MS_NODEV
    if _libc().mount(MOUNT_SOURCE.encode(), bytes(path), b"tmpfs", flags, options.encode()) != 0:
        _raise_errno("mount", path)


def _unmount(path: Path) -> None:
    if os.path.ismount(path) and _libc().umount2(bytes(path), _MNT_DETACH) != 0:
        _raise_errno("umount", path)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _raise_errno(what: str, path: Path) -> None:
    errno = ctypes.get_errno()
    raise execution_error(
        ErrorCode.EXEC_ERROR,
        f"{what} of the output tmpfs at {path} failed: {os.strerror(errno)}"
        " (the Docker executor needs CAP_SYS_ADMIN: run it as root next to dockerd)",
        path=str(path),
        errno=errno,
    )


def usage(path: Path, limit: int) -> OutputUsage:
    st = os.statvfs(path)
    total_inodes = st.f_files
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    files = total_inodes - st.f_ffree - 1
    full = used + _FULL_SLACK >= limit or st.f_ffree == 0
    return OutputUsage(used, files, full)


def empty_dir(path: Path) -> None:
    """Remove everything inside ``path`` (links themselves, never what they point to)."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def collect(source: Path, target: Path) -> list[str]:
    """Copy regular files from ``source`` into ``target``; return what was skipped and why."""
    skipped: list[str] = []
    target.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(source):
        base = Path(dirpath)
        rel = base.relative_to(source)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                skipped.append(f"{rel / name}: symlink")
                continue
            destination = target / rel / name
            if destination.is_symlink():  # never write through a link left in output/
                destination.unlink()
            destination.mkdir(exist_ok=True)
        for name in filenames:
            item = base / name
            mode = item.lstat().st_mode
            if not stat.S_ISREG(mode):
                skipped.append(f"{rel / name}: not a regular file")
                continue
            destination = target / rel / name
            if destination.is_symlink():
                destination.unlink()
            shutil.copyfile(item, destination, follow_symlinks=False)
    return skipped
