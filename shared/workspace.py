"""The standard workspace: ``meta.json``, ``input/`` (read-only), ``output/``, ``logs/``.

Ground truth lives in ``input/`` as in the original layout (``input/gt.csv``, ``input/gt.json``),
but participant code never sees the real ``input/``. Every backend mounts (or, for the local
backend, points the program at) the *participant view*: ``.autoscorer/participant/input``, a tree
of hard links to every input file except those matching the job's ``ground_truth`` globs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from shared.errors import ErrorCode, validation_error
from shared.models import JobSpec

PRIVATE_DIR = ".autoscorer"


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> Workspace:
        root = Path(path).resolve()
        if not root.is_dir():
            raise validation_error(
                ErrorCode.WORKSPACE_INVALID,
                f"workspace {root} is not a directory",
                workspace=str(root),
            )
        return cls(root)

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def private_dir(self) -> Path:
        return self.root / PRIVATE_DIR

    @property
    def participant_dir(self) -> Path:
        """The root of what participant code may see (input view, output, meta.json)."""
        return self.private_dir / "participant"

    @property
    def result_path(self) -> Path:
        return self.output_dir / "result.json"

    def require(self, relative: str) -> Path:
        """The path of a file that must exist, or MISSING_FILE naming it."""
        path = self.root / relative
        if not path.is_file():
            raise validation_error(
                ErrorCode.MISSING_FILE, f"required file {relative} is missing", path=relative
            )
        return path

    def load_spec(self) -> JobSpec:
        return load_spec(self.meta_path)

    def ensure_dirs(self) -> None:
        self.output_dir.mkdir(exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)


def load_spec(meta_path: Path) -> JobSpec:
    if not meta_path.is_file():
        raise validation_error(ErrorCode.MISSING_FILE, "meta.json is missing", path=str(meta_path))
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise validation_error(
            ErrorCode.PARSE_ERROR, f"meta.json is not valid JSON: {exc}", path="meta.json"
        ) from exc
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            "meta.json does not match the JobSpec schema",
            path="meta.json",
            errors=exc.errors(include_url=False, include_context=False),
        ) from exc


def is_ground_truth(relative: str, patterns: list[str]) -> bool:
    """True when ``relative`` (a POSIX path under input/) matches any ground-truth glob.

    A pattern ending in ``/`` hides a whole directory; other patterns match the file name and the
    full relative path, case-insensitively (``GT.CSV`` is ground truth too).
    """
    rel = relative.lower()
    name = rel.rsplit("/", 1)[-1]
    for raw in patterns:
        pattern = raw.lower()
        if pattern.endswith("/"):
            prefix = pattern.rstrip("/")
            top = rel.split("/")[0]
            if rel == prefix or rel.startswith(prefix + "/") or fnmatch.fnmatch(top, prefix):
                return True
        elif fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
            return True
    return False


def _hidden_dir(relative: str, patterns: list[str]) -> bool:
    return is_ground_truth(relative + "/", patterns) or is_ground_truth(relative, patterns)


def prepare_participant_view(ws: Workspace, spec: JobSpec) -> Path:
    """Build ``.autoscorer/participant/`` and return it.

    It holds ``input/`` (hard links to every non-ground-truth file, symlinks refused), an empty
    ``output/`` that is the workspace's own output directory's stand-in, and a copy of
    ``meta.json``. Rebuilt from scratch on every call so a stale view never leaks a file.
    """
    view = ws.participant_dir
    if view.exists():
        shutil.rmtree(view)
    view_input = view / "input"
    view_input.mkdir(parents=True)
    if ws.input_dir.is_dir():
        for dirpath, dirnames, filenames in os.walk(ws.input_dir):
            base = Path(dirpath)
            rel_dir = base.relative_to(ws.input_dir).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = [d for d in dirnames if not _hidden_dir(rel_dir + d, spec.ground_truth)]
            for name in filenames:
                rel = rel_dir + name
                source = base / name
                if source.is_symlink() or is_ground_truth(rel, spec.ground_truth):
                    continue
                target = view_input / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
    if ws.meta_path.is_file():
        shutil.copyfile(ws.meta_path, view / "meta.json")
    return view
