"""Provenance: what exactly produced a score, stored in every result (``Result.provenance``).

An organiser answering a dispute, or comparing a re-score with the first score, needs to prove
which scorer code, which ground truth, which predictions, which image and which platform gave a
number. This module holds that record and builds it:

* the scorer: name, version, where it was loaded from, and the sha256 of its module file (taken
  when the registry loads it, so a later edit on disk cannot change what a result claims);
* ``ground_truth`` / ``predictions``: per-file sha256 and one digest over all of them, hashed in
  fixed-size chunks (memory stays bounded whatever the file sizes);
* the image (reference, id, registry digest) from the executor's ``logs/run_info.json``;
* the platform's package version, the params, who submitted the job and when, when it was scored.

It also parses scorer references: a spec may pin a version, ``classification_f1@1.0.0``.

This module imports nothing from ``shared.models`` at import time (``Result`` holds a
``Provenance``); what it needs from the workspace side is imported inside the functions.
"""

from __future__ import annotations

import getpass
import hashlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from shared.scoring import ScorerInfo
    from shared.workspace import Workspace

log = logging.getLogger(__name__)

PLATFORM = "autoscorer"
MAX_LISTED_FILES = 1000
"""Files listed one by one in a file set; every file still counts in its ``sha256``."""
MAX_RUN_INFO_BYTES = 1024 * 1024
"""The largest ``logs/run_info.json`` read for the image's identity."""
MAX_VERSION_CHARS = 64
PLATFORM_FILES = frozenset({"result.json", "report.html"})
"""Files under output/ the platform writes (with ``artifacts/``): not predictions."""
PLATFORM_DIRS = ("artifacts/",)
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", re.ASCII)


# -- scorer references ---------------------------------------------------------------------------


def parse_scorer_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name@version`` -> (name, version or None); ``ValueError`` when malformed.

    A version is 1 to 64 letters, digits, ``.``, ``_``, ``+`` or ``-`` starting with a letter
    or digit (``1.0.0``, ``2.1.0-rc1``); the name is everything before the only ``@``.
    """
    name, sep, version = ref.partition("@")
    if not name:
        raise ValueError("a scorer reference needs a name before '@'")
    if not sep:
        return name, None
    if not _VERSION_RE.match(version):
        raise ValueError(
            f"scorer version {version[:MAX_VERSION_CHARS]!r} must be 1 to {MAX_VERSION_CHARS} "
            "letters, digits, '.', '_', '+' or '-' (e.g. classification_f1@1.0.0)"
        )
    return name, version


def scorer_name(ref: str) -> str:
    """The scorer's name in a reference, pinned or not (malformed: the reference itself)."""
    try:
        return parse_scorer_ref(ref)[0]
    except ValueError:
        return ref


# -- the record ---------------------------------------------------------------------------------


class FileDigest(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str = Field(description="relative to the workspace, e.g. input/gt.csv")
    size: int
    sha256: str


class FileSet(BaseModel):
    """Some files of the workspace: one digest over all of them, and each (the first ones)."""

    sha256: str = Field(
        description="sha256 over the sorted lines '<path> <sha256>\\n' of every file: changes "
        "when any file's bytes, name or presence change"
    )
    count: int = 0
    bytes: int = 0
    files: list[FileDigest] = Field(default_factory=list)
    truncated: bool = Field(
        False, description=f"more than {MAX_LISTED_FILES} files: the list stops, the digest not"
    )


class ModuleDigest(BaseModel):
    model_config = ConfigDict(frozen=True)

    module: str = Field(description="dotted module name")
    sha256: str


class ScorerProvenance(BaseModel):
    name: str
    version: str
    source: str = Field(description="module:<dotted name> (built-in) or file:<path> (plugin)")
    source_sha256: str | None = Field(
        None, description="sha256 of the scorer's module file when it was loaded"
    )
    pinned: str | None = Field(None, description="the version the spec pinned, if it did")
    source_files: list[ModuleDigest] = Field(
        default_factory=list,
        description="sha256 of each module of the scorer's package it uses (itself included), "
        "taken when it was loaded",
    )


class ImageProvenance(BaseModel):
    backend: str | None = None
    reference: str | None = None
    image_id: str | None = Field(None, description="the engine's image id (sha256:...)")
    digest: str | None = Field(None, description="repo@sha256:... when pulled from a registry")
    note: str = ""


class PlatformProvenance(BaseModel):
    name: str = PLATFORM
    version: str


class Provenance(BaseModel):
    """Everything that produced one result (docs/SCORERS.md, "Provenance")."""

    scorer: ScorerProvenance
    ground_truth: FileSet
    predictions: FileSet
    image: ImageProvenance
    platform: PlatformProvenance
    params: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    submitted_by: str | None = None
    submitted_at: datetime | None = None
    scored_at: datetime


@dataclass(frozen=True, slots=True)
class Submission:
    """Who submitted the job and when (the job's subject and ``created_at``)."""

    subject: str | None = None
    at: datetime | None = None


def local_submission() -> Submission:
    """The CLI's: the local user, no submission time (there is no job record)."""
    try:
        return Submission(getpass.getuser(), None)
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER in a bare container
        return Submission(None, None)


# -- hashing ------------------------------------------------------------------------------------


def sha256_path(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    from shared.files import sha256_file

    return sha256_file(path)


@lru_cache(maxsize=256)
def _cached_sha256(path: str, _mtime_ns: int, _size: int) -> str:
    return sha256_path(Path(path))


def source_sha256(fn: Callable[..., Any]) -> str | None:
    """sha256 of the file that defines ``fn`` (a scorer's module); None when it has none."""
    try:
        file = inspect.getsourcefile(inspect.unwrap(fn))
        if file is None:
            return None
        stat = os.stat(file)
        return _cached_sha256(os.path.realpath(file), stat.st_mtime_ns, stat.st_size)
    except (OSError, TypeError):
        return None


MAX_SOURCE_MODULES = 64
"""Modules of a scorer's package followed from its module (the rest are left out)."""


def _defining_module(value: object) -> str | None:
    if inspect.ismodule(value):
        return value.__name__
    name = getattr(value, "__module__", None)
    return name if isinstance(name, str) else None


def source_files(fn: Callable[..., Any]) -> list[ModuleDigest]:
    """sha256 of the module defining ``fn`` and of every module of its package that module
    uses, directly or through another (``services.scorer.builtin.tabular`` for the tabular
    scorers, ``...coco.*`` for detection): the code a change of which can change a score.
    Sorted by module name; modules without a file are left out. (A list, not a mapping: a
    document store refuses keys with dots.)"""
    start = inspect.unwrap(fn).__module__
    package = start.rpartition(".")[0] or start
    found: dict[str, str] = {}
    todo, seen = [start], {start}
    while todo and len(seen) <= MAX_SOURCE_MODULES:
        module = sys.modules.get(todo.pop())
        if module is None:
            continue
        digest = _module_sha256(module)
        if digest is not None:
            found[module.__name__] = digest
        for value in list(vars(module).values()):
            name = _defining_module(value)
            if name and name not in seen and (name == package or name.startswith(package + ".")):
                seen.add(name)
                todo.append(name)
    return [ModuleDigest(module=name, sha256=sha) for name, sha in sorted(found.items())]


def _module_sha256(module: ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py"):
        return None
    try:
        stat = os.stat(file)
        return _cached_sha256(os.path.realpath(file), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None


def file_set(root: Path, relatives: Iterable[str]) -> FileSet:
    """The digest of files under ``root`` (POSIX paths relative to it), hashed one by one."""
    combined = hashlib.sha256()
    listed: list[FileDigest] = []
    count = total = 0
    for relative in sorted(set(relatives)):
        path = root / relative
        try:
            size = path.stat().st_size
            digest = sha256_path(path)
        except OSError as exc:  # vanished or unreadable: say so in the digest, keep going
            log.warning("cannot hash %s for provenance: %s", relative, exc.strerror)
            continue
        combined.update(f"{relative} {digest}\n".encode())
        count, total = count + 1, total + size
        if len(listed) < MAX_LISTED_FILES:
            listed.append(FileDigest(path=relative, size=size, sha256=digest))
    return FileSet(
        sha256=combined.hexdigest(),
        count=count,
        bytes=total,
        files=listed,
        truncated=count > len(listed),
    )


def _walk_files(top: Path, root: Path) -> list[str]:
    """Regular files under ``top`` (links not followed), relative to ``root``."""
    found: list[str] = []
    if not top.is_dir() or top.is_symlink():
        return found
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
        for name in filenames:
            path = base / name
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def ground_truth_files(ws: Workspace, globs: list[str], expected: Iterable[str]) -> list[str]:
    """input/ files matching the ground-truth globs, plus the scorer's expected input/ files."""
    from shared.workspace import is_ground_truth

    files = [
        rel
        for rel in _walk_files(ws.input_dir, ws.root)
        if is_ground_truth(rel.removeprefix("input/"), globs)
    ]
    files += [rel for rel in expected if rel.startswith("input/") and (ws.root / rel).is_file()]
    return files


def prediction_files(ws: Workspace) -> list[str]:
    """output/ files, leaving out what the platform writes there (result, report, artifacts)."""
    files = []
    for rel in _walk_files(ws.output_dir, ws.root):
        inner = rel.removeprefix("output/")
        if inner in PLATFORM_FILES or inner.startswith(PLATFORM_DIRS):
            continue
        files.append(rel)
    return files


# -- the image and the platform -----------------------------------------------------------------


def image_provenance(ws: Workspace) -> ImageProvenance:
    """The image of the job's run, from the executor's ``logs/run_info.json``."""
    from shared.models import RunOutcome

    path = ws.logs_dir / "run_info.json"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RUN_INFO_BYTES + 1)
        if len(raw) > MAX_RUN_INFO_BYTES:
            return ImageProvenance(note="logs/run_info.json is too large to read")
        run = RunOutcome.model_validate_json(raw)
    except FileNotFoundError:
        return ImageProvenance(note="no run recorded (scored without a run: no image)")
    except (OSError, ValueError) as exc:
        return ImageProvenance(note=f"logs/run_info.json unreadable: {type(exc).__name__}")
    digest = run.extra.get("image_digest")
    if run.backend == "local" or (run.image is None and run.image_id is None):
        note = f"{run.backend} backend: the program ran on the host, no image"
        return ImageProvenance(backend=run.backend, note=note)
    return ImageProvenance(
        backend=run.backend,
        reference=run.image,
        image_id=run.image_id,
        digest=digest if isinstance(digest, str) else None,
        note="" if digest else "no registry digest (the image was built or loaded locally)",
    )


@lru_cache(maxsize=1)
def platform_version() -> str:
    try:
        return package_version(PLATFORM)
    except PackageNotFoundError:
        return "unknown"


# -- building the record ------------------------------------------------------------------------


def build_provenance(
    ws: Workspace,
    scorer: ScorerInfo,
    *,
    ref: str,
    params: Mapping[str, Any],
    ground_truth_globs: list[str],
    job_id: str | None,
    submission: Submission,
) -> Provenance:
    """The provenance of scoring ``ws`` with ``scorer`` (``ref`` is what the spec named)."""
    _, pinned = parse_scorer_ref(ref) if "@" in ref else (ref, None)
    return Provenance(
        scorer=ScorerProvenance(
            name=scorer.name,
            version=scorer.version,
            source=scorer.source,
            source_sha256=scorer.source_sha256,
            pinned=pinned,
            source_files=list(scorer.source_files),
        ),
        ground_truth=file_set(
            ws.root, ground_truth_files(ws, ground_truth_globs, scorer.expected_files)
        ),
        predictions=file_set(ws.root, prediction_files(ws)),
        image=image_provenance(ws),
        platform=PlatformProvenance(version=platform_version()),
        params=json.loads(json.dumps(dict(params), default=str)),
        job_id=job_id,
        submitted_by=submission.subject,
        submitted_at=submission.at,
        scored_at=datetime.now(UTC),
    )
