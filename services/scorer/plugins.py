"""Scorer plugin files for a long-running scorer: load them at start, install one at run time.

A scorer installed at run time (``install_source``) is written to the replica's plugin folder as
``<first scorer name>.py``: every replica derives the same file name from the same source, so a
reload replaces the file (and the registry swaps the file's scorers) instead of conflicting with
it. The source is checked in a scratch registry first; a broken one never reaches the folder.
``plugin_manifest`` names the plugin files a registry holds, with their sha256, so that pool
workers can load the same ones.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.scorer.registry import ScorerRegistry
from shared.config import ScorerSettings
from shared.errors import AutoscorerError, ErrorCode, Stage

log = logging.getLogger(__name__)

FILE_SOURCE = "file:"
Manifest = tuple[tuple[str, str], ...]
"""(absolute plugin file path, sha256 of its bytes), sorted."""


@dataclass(frozen=True, slots=True)
class Installed:
    path: Path
    scorers: tuple[str, ...]
    version: str
    sha256: str
    action: Literal["loaded", "reloaded"]


def registry_from_settings(section: ScorerSettings) -> ScorerRegistry:
    """Built-ins, ``plugin_paths`` and what ``plugin_dir`` holds; broken files are logged."""
    registry = ScorerRegistry.with_builtins()
    folders = [*section.plugin_paths]
    if section.plugin_dir.is_dir():
        folders.append(section.plugin_dir)
    for path in folders:
        try:
            registry.load_path(path)
        except AutoscorerError as exc:
            log.warning("scorer plugins at %s did not all load: %r", path, exc)
    return registry


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def plugin_manifest(registry: ScorerRegistry) -> Manifest:
    files = {
        info.source.removeprefix(FILE_SOURCE)
        for info in registry.infos()
        if info.source.startswith(FILE_SOURCE)
    }
    found = ((path, file_sha256(Path(path))) for path in sorted(files))
    return tuple((path, sha) for path, sha in found if sha is not None)


def install_source(registry: ScorerRegistry, plugin_dir: Path, source: str) -> Installed:
    """Check ``source``, write it as ``plugin_dir/<scorer>.py`` and (re)load it."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    names = _check(plugin_dir, source)
    target = plugin_dir / f"{names[0]}.py"
    previous = target.read_text(encoding="utf-8") if target.exists() else None
    _write(target, source)
    try:
        loaded = registry.load_file(target)
    except AutoscorerError:
        _restore(target, previous)
        raise
    return Installed(
        path=target.resolve(),
        scorers=tuple(loaded),
        version=registry.get(loaded[0]).info.version,
        sha256=sha256_text(source),
        action="loaded" if previous is None else "reloaded",
    )


def remove_plugin(registry: ScorerRegistry, plugin_dir: Path, scorer: str) -> list[str]:
    """Forget the file installed for ``scorer`` and delete it; returns the names it held."""
    target = plugin_dir / f"{scorer}.py"
    names = registry.unload_file(target)
    target.unlink(missing_ok=True)
    return names


def _check(plugin_dir: Path, source: str) -> list[str]:
    staged = plugin_dir / f"_incoming-{uuid.uuid4().hex}.py"
    _write(staged, source)
    try:
        names = ScorerRegistry().load_file(staged)
    finally:
        staged.unlink(missing_ok=True)
        for module in [name for name in sys.modules if staged.stem in name]:
            del sys.modules[module]
    if not names:
        raise AutoscorerError(
            ErrorCode.SCORER_LOAD_ERROR,
            "the scorer source registers no scorer",
            stage=Stage.CONFIG,
        )
    return names


def _write(path: Path, text: str) -> None:
    staged = path.with_name(f"_{path.name}.{uuid.uuid4().hex}.tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(path)


def _restore(target: Path, previous: str | None) -> None:
    if previous is None:
        target.unlink(missing_ok=True)
    else:
        _write(target, previous)
