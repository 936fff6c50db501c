"""The scorer registry: built-ins plus custom scorers loaded from files at run time.

Scorers are ``ScorerDef`` objects found as module attributes. A name belongs to one source (a
module or a file); a second source claiming it is refused (SCORER_CONFLICT). Reloading a file
swaps in its new scorers all at once, and only if the whole file imports and registers cleanly:
a broken edit keeps the last good version and records the error.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from services.scorer.builtin import BUILTIN_MODULES
from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Stage
from shared.scoring import ScorerDef, ScorerInfo, find_scorer

PLUGIN_MODULE_PREFIX = "autoscorer_plugins"


def _load_error(message: str, **details: Any) -> AutoscorerError:
    return AutoscorerError(
        ErrorCode.SCORER_LOAD_ERROR, message, stage=Stage.CONFIG, details=details
    )


def _collect(module: ModuleType, source: str) -> dict[str, ScorerDef[Any]]:
    found: dict[str, ScorerDef[Any]] = {}
    for value in vars(module).values():
        if not isinstance(value, ScorerDef):
            continue
        if value.name in found and found[value.name] is not value:
            raise AutoscorerError(
                ErrorCode.SCORER_CONFLICT,
                f"scorer {value.name!r} is registered twice in {source}",
                stage=Stage.CONFIG,
                details={"scorer": value.name, "source": source},
            )
        found[value.name] = value.with_source(source)
    return found


def _exec_file(path: Path) -> ModuleType:
    """Import a scorer file under a private, unique module name."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"{PLUGIN_MODULE_PREFIX}.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _load_error(f"cannot import {path}", path=str(path))
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # plugin code may raise anything
        frames = traceback.format_exception(exc, limit=-3)
        raise _load_error(
            f"scorer file {path.name} failed to load: {type(exc).__name__}: {exc}",
            path=str(path),
            exception=type(exc).__name__,
            traceback_tail="".join(frames)[-2000:],
        ) from exc
    sys.modules[name] = module  # so pickling and introspection of plugin objects work
    return module


def _plugin_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".py":
            raise _load_error(f"{path} is not a .py file", path=str(path))
        return [path]
    if path.is_dir():
        return sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
    raise _load_error(f"scorer path {path} does not exist", path=str(path))


@dataclass
class ScorerRegistry:
    """Name -> scorer, with the source each came from and the last load error per file."""

    _scorers: dict[str, ScorerDef[Any]] = field(default_factory=dict)
    _by_source: dict[str, set[str]] = field(default_factory=dict)
    errors: dict[str, ErrorInfo] = field(default_factory=dict)

    @classmethod
    def with_builtins(cls) -> ScorerRegistry:
        registry = cls()
        for module_name in BUILTIN_MODULES:
            registry.load_module(module_name)
        return registry

    def get(self, ref: str) -> ScorerDef[Any]:
        """The scorer ``ref`` names: ``name``, or ``name@version`` (pinned: SCORER_NOT_FOUND
        unless exactly that version is loaded)."""
        return find_scorer(self._scorers, ref, lambda scorer: scorer.info.version)

    def infos(self) -> list[ScorerInfo]:
        return [self._scorers[name].info for name in sorted(self._scorers)]

    def names(self) -> list[str]:
        return sorted(self._scorers)

    def load_module(self, module_name: str) -> list[str]:
        module = importlib.import_module(module_name)
        return self._swap(f"module:{module_name}", _collect(module, f"module:{module_name}"))

    def load_path(self, path: Path) -> list[str]:
        """Load (or reload) every scorer file at ``path`` (a file or a folder of files).

        Each file is all-or-nothing. Files that fail keep their previous scorers; the first
        failure is raised after the good files are in, and every failure stays in ``errors``.
        """
        loaded: list[str] = []
        failures: list[AutoscorerError] = []
        for file in _plugin_files(path.resolve()):
            try:
                loaded += self.load_file(file)
            except AutoscorerError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
        return loaded

    def load_file(self, file: Path) -> list[str]:
        source = f"file:{file.resolve()}"
        try:
            names = self._swap(source, _collect(_exec_file(file.resolve()), source))
        except AutoscorerError as exc:
            self.errors[source] = exc.to_info()
            raise
        self.errors.pop(source, None)
        return names

    def unload_file(self, file: Path) -> list[str]:
        """Forget the scorers a (deleted) file registered; returns their names."""
        source = f"file:{file.resolve()}"
        names = self._by_source.pop(source, set())
        for name in names:
            del self._scorers[name]
        self.errors.pop(source, None)
        return sorted(names)

    def _swap(self, source: str, found: dict[str, ScorerDef[Any]]) -> list[str]:
        for name in found:
            owner = self._owner(name)
            if owner is not None and owner != source:
                raise AutoscorerError(
                    ErrorCode.SCORER_CONFLICT,
                    f"scorer {name!r} from {source} is already registered by {owner}",
                    stage=Stage.CONFIG,
                    details={"scorer": name, "source": source, "registered_by": owner},
                )
        for stale in self._by_source.get(source, set()) - found.keys():
            del self._scorers[stale]
        self._scorers.update(found)
        self._by_source[source] = set(found)
        return sorted(found)

    def _owner(self, name: str) -> str | None:
        for source, names in self._by_source.items():
            if name in names:
                return source
        return None
