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

from shared.bounded_json import JsonTooDeep, loads_bounded
from shared.errors import AutoscorerError, ErrorCode, Fault, fault_of_file, validation_error
from shared.limits import SandboxLimits, hidden_globs
from shared.models import JobSpec

_META = Fault.ORGANISER  # meta.json is the job's configuration (docs/ERRORS.md, whose fault)
PRIVATE_DIR = ".autoscorer"
PATH_MAX = 4096
"""Linux's limit on a whole path, in bytes; longer workspace paths are refused up front."""
NAME_MAX = 255
"""Linux's limit on one path component, in bytes."""
MAX_META_BYTES = 1024 * 1024
"""The largest meta.json read; a bigger one is refused, never read into memory."""
MAX_META_DEPTH = 64
"""How deep meta.json may nest; checked before parsing (json.loads recurses per level)."""


def _shown(path: str) -> str:
    return path if len(path) <= 120 else path[:117] + "..."


def _invalid_path(message: str, path: str) -> AutoscorerError:
    return validation_error(ErrorCode.WORKSPACE_INVALID, message, workspace=_shown(path))


def check_path(path: str | os.PathLike[str]) -> str:
    """The path as text, or WORKSPACE_INVALID: a NUL byte, an unencodable character, or a path
    or component longer than the kernel takes (PATH_MAX / NAME_MAX bytes)."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise _invalid_path("a workspace path must be text", repr(text))
    if "\x00" in text:
        shown = text.replace("\x00", "\\0")
        raise _invalid_path("a workspace path must not contain a NUL byte", shown)
    try:
        raw = os.fsencode(text)
    except UnicodeError as exc:
        raise _invalid_path("a workspace path must be encodable", ascii(text)) from exc
    if not raw or len(raw) >= PATH_MAX:
        raise _invalid_path(f"a workspace path must be 1 to {PATH_MAX - 1} bytes", text)
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        raise _invalid_path(f"a workspace path component is over {NAME_MAX} bytes", text)
    return text


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> Workspace:
        """The workspace at ``path``, or WORKSPACE_INVALID (never a raw OSError/ValueError)."""
        text = check_path(path)
        try:
            root = Path(text).resolve()
            is_dir = root.is_dir()
        except (OSError, ValueError) as exc:
            raise _invalid_path("the workspace path cannot be resolved", text) from exc
        if not is_dir:
            raise _invalid_path(f"workspace {_shown(str(root))} is not a directory", str(root))
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
                ErrorCode.MISSING_FILE,
                f"required file {relative} is missing",
                path=relative,
                fault=fault_of_file(relative),  # input/ is the organiser's (docs/ERRORS.md)
            )
        return path

    def load_spec(self) -> JobSpec:
        return load_spec(self.meta_path)

    def ensure_dirs(self) -> None:
        self.output_dir.mkdir(exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)


def _read_meta(meta_path: Path) -> bytes:
    """At most MAX_META_BYTES of meta.json, or MISSING_FILE / CONFIG_VALIDATION_ERROR."""
    try:
        if not meta_path.is_file():
            raise validation_error(
                ErrorCode.MISSING_FILE, "meta.json is missing", path="meta.json", fault=_META
            )
        with meta_path.open("rb") as handle:
            raw = handle.read(MAX_META_BYTES + 1)
    except OSError as exc:
        raise validation_error(
            ErrorCode.MISSING_FILE,
            f"meta.json cannot be read: {exc.strerror}",
            path="meta.json",
            fault=_META,
        ) from exc
    if len(raw) > MAX_META_BYTES:
        raise validation_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"meta.json is larger than {MAX_META_BYTES} bytes",
            path="meta.json",
            limit=MAX_META_BYTES,
        )
    return raw


def load_spec(meta_path: Path) -> JobSpec:
    """The workspace's JobSpec: bounded in size and depth, every failure a standard error."""
    raw = _read_meta(meta_path)
    try:
        data = loads_bounded(raw.decode("utf-8"), max_depth=MAX_META_DEPTH)
    except JsonTooDeep as exc:
        raise validation_error(
            ErrorCode.CONFIG_VALIDATION_ERROR, f"meta.json {exc}", path="meta.json"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise validation_error(
            ErrorCode.PARSE_ERROR,
            f"meta.json is not valid JSON: {exc}",
            path="meta.json",
            fault=_META,
        ) from exc
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            "meta.json does not match the JobSpec schema",
            path="meta.json",
            errors=exc.errors(include_url=False, include_context=False, include_input=False),
        ) from exc


def is_ground_truth(relative: str, patterns: list[str]) -> bool:
    """True when ``relative`` (a POSIX path under input/) matches any ground-truth glob.

    A pattern ending in ``/`` hides a whole directory; other patterns match the file name and the
    full relative path, case-insensitively (``GT.CSV`` is ground truth too). A pattern written
    from the workspace root (``input/labels.csv``, as ``autoscorer init`` writes them) also
    matches as if relative to input/: hiding more is the safe side.
    """
    rel = relative.lower()
    name = rel.rsplit("/", 1)[-1]
    for pattern in _both_readings(patterns):
        if pattern.endswith("/"):
            prefix = pattern.rstrip("/")
            top = rel.split("/")[0]
            if rel == prefix or rel.startswith(prefix + "/") or fnmatch.fnmatch(top, prefix):
                return True
        elif fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
            return True
    return False


def _both_readings(patterns: list[str]) -> list[str]:
    """Each pattern lower-cased, plus its reading relative to input/ when it names input/."""
    readings = []
    for raw in patterns:
        pattern = raw.lower()
        readings.append(pattern)
        inner = pattern.lstrip("/").removeprefix("./").removeprefix("input/")
        if inner and inner != pattern:
            readings.append(inner)
    return readings


def _hidden_dir(relative: str, patterns: list[str]) -> bool:
    return is_ground_truth(relative + "/", patterns) or is_ground_truth(relative, patterns)


def prepare_participant_view(
    ws: Workspace, spec: JobSpec, caps: SandboxLimits | None = None
) -> Path:
    """Build ``.autoscorer/participant/`` and return it.

    It holds ``input/`` (hard links to every non-ground-truth file, symlinks refused), an empty
    ``output/`` that is the workspace's own output directory's stand-in, and a copy of
    ``meta.json``. Rebuilt from scratch on every call so a stale view never leaks a file.
    Hidden: the organiser's globs (``caps.ground_truth``, or the defaults) plus the spec's own;
    a spec with ``ground_truth: []`` hides exactly the organiser's.
    """
    hidden = hidden_globs(spec, caps)
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
            dirnames[:] = [d for d in dirnames if not _hidden_dir(rel_dir + d, hidden)]
            for name in filenames:
                rel = rel_dir + name
                source = base / name
                if source.is_symlink() or is_ground_truth(rel, hidden):
                    continue
                target = view_input / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
    if ws.meta_path.is_file():
        shutil.copyfile(ws.meta_path, view / "meta.json")
    return view
