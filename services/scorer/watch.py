"""Hot reload: watch scorer files and reload them into a registry when they change.

Folders are watched (not single files) so that editors that save by rename are seen too.
A broken edit keeps the last good version; every reload, good or bad, is reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from services.scorer.registry import ScorerRegistry
from shared.errors import AutoscorerError, ErrorInfo


@dataclass(frozen=True)
class ReloadEvent:
    file: Path
    change: str  # "loaded" | "removed" | "failed"
    scorers: tuple[str, ...] = ()
    error: ErrorInfo | None = None


def _watch_roots(paths: list[Path]) -> tuple[list[Path], Callable[[Path], bool]]:
    files = {p.resolve() for p in paths if p.is_file() or p.suffix == ".py"}
    dirs = {p.resolve() for p in paths if p.is_dir()}
    roots = sorted(dirs | {f.parent for f in files})

    def wanted(path: Path) -> bool:
        if path.suffix != ".py" or path.name.startswith(("_", ".")):
            return False
        return path in files or path.parent in dirs

    return roots, wanted


def apply_change(registry: ScorerRegistry, file: Path, change: Change) -> ReloadEvent:
    if change == Change.deleted or not file.exists():
        return ReloadEvent(file, "removed", tuple(registry.unload_file(file)))
    try:
        return ReloadEvent(file, "loaded", tuple(registry.load_file(file)))
    except AutoscorerError as exc:
        return ReloadEvent(file, "failed", error=exc.to_info())


async def watch_scorers(
    registry: ScorerRegistry,
    paths: list[Path],
    on_event: Callable[[ReloadEvent], Awaitable[None] | None],
    *,
    stop: asyncio.Event | None = None,
    debounce_ms: int = 150,
    ready: asyncio.Event | None = None,
) -> None:
    """Reload changed scorer files until ``stop`` is set."""
    roots, wanted = _watch_roots(paths)
    watcher = awatch(*roots, stop_event=stop, debounce=debounce_ms, step=50, recursive=False)
    if ready is not None:
        ready.set()
    async for changes in watcher:
        latest: dict[Path, Change] = {}
        for change, raw in changes:
            path = Path(raw)
            if wanted(path):
                latest[path] = change
        for file in sorted(latest):  # loading runs the file's code: in a thread, off the loop
            told = on_event(await asyncio.to_thread(apply_change, registry, file, latest[file]))
            if told is not None:  # a coroutine: its work off the loop is awaited here
                await told
