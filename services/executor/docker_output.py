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
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ErrorCode, execution_error

MOUNT_SOURCE = "autoscorer-output"
_FULL_SLACK = 64 * 1024  # a write that does not fit the last partial page still counts as "full"


@dataclass(frozen=True, slots=True)
class OutputUsage:
    bytes_used: int
    files_used: int
    full: bool


async def mount_output(path: Path, *, limit: int, max_files: int, uid: int, gid: int) -> None:
    await unmount_output(path)
    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
    options = f"size={limit},nr_inodes={max_files + 1},uid={uid},gid={gid},mode=0700,nosuid,nodev"
    await _run("mount", "-t", "tmpfs", "-o", options, MOUNT_SOURCE, str(path))


async def unmount_output(path: Path) -> None:
    """Unmount if mounted (lazily, so a busy mount cannot wedge us); idempotent."""
    if await asyncio.to_thread(os.path.ismount, path):
        await _run("umount", "-l", str(path))


def usage(path: Path, limit: int) -> OutputUsage:
    st = os.statvfs(path)
    total_inodes = st.f_files
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    files = total_inodes - st.f_ffree - 1
    full = used + _FULL_SLACK >= limit or st.f_ffree == 0
    return OutputUsage(used, files, full)


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


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise execution_error(
            ErrorCode.EXEC_ERROR,
            f"{argv[0]} of the output tmpfs failed: {out.decode(errors='replace').strip()}",
            argv=list(argv),
        )
