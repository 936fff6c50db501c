"""Retention: what the platform removes, and when (docs/API.md, "Retention").

* The participant view (``.autoscorer/participant/``, hard links to the non-ground-truth inputs)
  is removed after every run, whichever backend ran it: :func:`remove_participant_view`.
* Uploaded workspaces (``<data_root>/uploads/<id>/``) expire ``uploads_ttl_s`` after their last
  activity (on by default), workspaces named by path (the organisers' and submitters' folders
  under the data root) ``workspaces_ttl_s`` after theirs (off by default). The
  :class:`RetentionReaper` sweeps every ``interval_s`` under the gateway's supervisor (the
  gateway owns uploads). It never touches a workspace with an active job: it claims the
  workspace in the store first (``JobStore.claim_workspace``, the one-job-per-workspace claim
  every submission takes), so a submission racing the removal is refused or wins, never both.
* Disk use of the data root is a gauge, ``autoscorer_data_root_bytes``, set by every sweep.

Last activity is the newest modification time of the workspace folder, its ``meta.json``,
``output/``, ``output/result.json``, ``logs/`` and ``logs/job.jsonl`` (a run and a scoring touch
them); files the participant's program wrote elsewhere do not keep a workspace alive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Gauge

from shared.config import RetentionSettings
from shared.store import JobStore
from shared.supervise import Supervisor
from shared.workspace import PRIVATE_DIR, Workspace

log = logging.getLogger(__name__)

LOOP = "retention"
UPLOADS = "uploads"
RESERVED = frozenset({UPLOADS, "scorers"})
"""Top-level folders of the data root that are not workspaces named by path."""
MAX_DEPTH = 4
"""How deep under the data root a workspace named by path is looked for (``<subject>/a/b/c``)."""
ACTIVITY_MARKERS = ("", "meta.json", "output", "output/result.json", "logs", "logs/job.jsonl")


def remove_participant_view(ws: Workspace) -> None:
    """Remove ``.autoscorer/participant/`` after a run (links are removed, never followed)."""
    view = ws.participant_dir
    if view.is_symlink():
        view.unlink()
    elif view.exists():
        shutil.rmtree(view, ignore_errors=True)
    private = ws.private_dir
    if private.is_dir() and not private.is_symlink() and not any(private.iterdir()):
        private.rmdir()


def last_activity(folder: Path) -> float:
    """The newest modification time among the workspace's activity markers (0: none)."""
    newest = 0.0
    for marker in ACTIVITY_MARKERS:
        try:
            newest = max(newest, (folder / marker).lstat().st_mtime)
        except OSError:
            continue
    return newest


def disk_bytes(root: Path) -> int:
    """Bytes the files under ``root`` take on disk (allocated blocks; links not followed,
    a hard-linked file counted once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if info.st_nlink > 1 and not os.path.isdir(os.path.join(dirpath, name)):
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += info.st_blocks * 512
    return total


def _upload_workspaces(root: Path) -> Iterator[tuple[Path, list[Path]]]:
    """Each upload folder and the workspaces in it (itself, or its folders with a meta.json)."""
    uploads = root / UPLOADS
    if not uploads.is_dir():
        return
    for entry in sorted(uploads.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue  # .receiving-*: a request still unpacking owns it
        inner = [child for child in entry.iterdir() if child.is_dir() and not child.is_symlink()]
        yield entry, [entry, *inner]


def _path_workspaces(root: Path) -> Iterator[Path]:
    """Folders with a meta.json under the data root, outside its reserved folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        if depth == 0:
            dirnames[:] = [d for d in dirnames if d not in RESERVED and not d.startswith(".")]
        if "meta.json" in filenames and depth > 0:
            dirnames[:] = []  # a workspace's own folders are not workspaces
            yield here
            continue
        dirnames[:] = sorted(
            d for d in dirnames if d != PRIVATE_DIR and not (here / d).is_symlink()
        )
        if depth >= MAX_DEPTH:
            dirnames[:] = []


def _finished(folder: Path) -> bool:
    """A workspace named by path expires only once a job ran or scored there."""
    return (folder / "output" / "result.json").is_file() or (
        folder / "logs" / "run_info.json"
    ).is_file()


@dataclass
class Sweep:
    """What one sweep did."""

    removed: list[str] = field(default_factory=list)
    kept_active: list[str] = field(default_factory=list)
    data_root_bytes: int = 0


@dataclass
class RetentionReaper:
    """Removes expired uploads and workspaces; never one with an active job."""

    data_root: Path
    settings: RetentionSettings
    store: JobStore
    gauge: Gauge | None = None
    owner: str = field(default_factory=lambda: f"retention-{uuid.uuid4().hex[:12]}")
    """the job id the reaper claims workspaces under (no job has it)"""

    def supervise(self, supervisor: Supervisor) -> None:
        supervisor.every(LOOP, self.settings.interval_s, self.sweep)

    async def sweep(self, now: float | None = None) -> Sweep:
        at = time.time() if now is None else now
        done = Sweep()
        root = self.data_root.resolve()
        uploads_ttl, paths_ttl = self.settings.uploads_ttl_s, self.settings.workspaces_ttl_s
        if uploads_ttl is not None:
            found = await asyncio.to_thread(lambda: list(_upload_workspaces(root)))
            for folder, workspaces in found:
                await self._expire(folder, workspaces, at - uploads_ttl, done)
        if paths_ttl is not None:
            paths = await asyncio.to_thread(lambda: list(_path_workspaces(root)))
            for folder in filter(_finished, paths):
                await self._expire(folder, [folder], at - paths_ttl, done)
        if root.is_dir():
            done.data_root_bytes = await asyncio.to_thread(disk_bytes, root)
            if self.gauge is not None:
                self.gauge.set(done.data_root_bytes)
        return done

    async def _expire(
        self, folder: Path, workspaces: list[Path], before: float, done: Sweep
    ) -> None:
        """Remove ``folder`` when all its workspaces were idle since ``before`` and none has a
        job: each is claimed first and released after (or when any is busy)."""
        newest = max(await asyncio.to_thread(lambda: [last_activity(w) for w in workspaces]))
        if newest > before:
            return
        claimed: list[str] = []
        try:
            for workspace in workspaces:
                key = str(workspace)
                holder = await self.store.claim_workspace(key, self.owner)
                if holder != self.owner:
                    done.kept_active.append(key)
                    log.info("retention keeps %s: job %s holds it", key, holder)
                    return
                claimed.append(key)
                if await self.store.find_active_by_workspace(key) is not None:
                    done.kept_active.append(key)
                    return
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
            done.removed.append(str(folder))
            log.info("retention removed %s (idle since %s)", folder, time.ctime(newest))
        finally:
            for key in claimed:
                await self.store.release_workspace(key, self.owner)
