"""Job and result contracts (pydantic v2), shared by the CLI and every service.

``JobSpec`` accepts both the full form of the original design (job_id, task_type, scorer, params,
input_uri, output_uri, time_limit, resources, container) and the short ``meta.json`` form of the
README notes (scorer, params, resources.gpu, timeout).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.errors import ErrorInfo
from shared.provenance import Provenance, parse_scorer_ref

_MEMORY_RE = re.compile(
    r"^\s*(\d{1,20})(?:\.(\d{1,9}))?\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE | re.ASCII
)
_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

MAX_QUANTITY_CHARS = 64
"""The longest memory quantity read: anything longer is refused before it is parsed."""
MAX_MEMORY_BYTES = 2**63 - 1
"""What the engines' int64 fields hold; operator caps (``shared.limits``) are far below it."""
MIN_MEMORY_BYTES = 6 * 1024**2
"""Docker refuses a container with less memory (and would call it a platform failure)."""
MIN_CPU = 0.01
"""Docker's smallest CPU share; below it ``NanoCpus`` rounds to 0, which means *unlimited*."""
DEFAULT_GROUND_TRUTH: tuple[str, ...] = ("gt.*", "gt/", "ground_truth*")
"""Input globs hidden from participant code whatever a spec says (see ``shared.limits``)."""
MAX_PARAMS_DEPTH = 32
"""How deep scorer ``params`` may nest (dicts and lists); deeper is refused, not recursed into."""
STORED = {"stored": True}
"""The validation context of a job read back from a store: its params were checked when it was
submitted, and a job stored before a rule was added must still read (docs/STORE.md)."""


def _shown(value: object) -> str:
    """A bounded rendering of untrusted input for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_memory(value: str | int) -> int:
    """Bytes from a quantity: ``4Gi``, ``512Mi``, ``1g``, ``256m``, ``1024``.

    Lower-case ``k/m/g`` follow Docker (binary); upper-case without ``i`` follow Kubernetes
    (decimal). Only ASCII digits, at most 20 of them before the point and 9 after, computed
    exactly in integers; zero, negatives, exponents, NaN and anything above
    :data:`MAX_MEMORY_BYTES` raise ``ValueError`` (never ``OverflowError``).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not a memory quantity: {_shown(value)}")  # noqa: TRY004 - pydantic
    if isinstance(value, int):
        return _bounded(value)
    if len(value) > MAX_QUANTITY_CHARS:
        raise ValueError(f"memory quantity longer than {MAX_QUANTITY_CHARS} characters")
    match = _MEMORY_RE.match(value)
    if not match:
        raise ValueError(f"not a memory quantity: {_shown(value)} (use e.g. 512Mi, 4Gi, 1g)")
    whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3) or ""
    key = unit.rstrip("bB")
    if key.islower() and len(key) == 1:  # docker style: 1g == 1GiB
        key += "i"
    scale = _MEMORY_UNITS[key.lower()]
    exact = int(whole) * scale + int(fraction or "0") * scale // 10 ** len(fraction)
    return _bounded(exact)


def _quantity(value: str) -> str:
    parse_memory(value)
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]
"""A memory quantity as configured (``512Mi``, ``4Gi``, ``1g``), checked by :func:`parse_memory`."""


def _bounded(amount: int) -> int:
    if amount <= 0:
        raise ValueError("memory must be positive")
    if amount > MAX_MEMORY_BYTES:
        raise ValueError(f"memory must be at most {MAX_MEMORY_BYTES} bytes")
    return amount


def unportable_values(value: object, path: str = "params") -> list[str]:
    """Where ``value`` holds what strict JSON and the stores cannot carry exactly, as
    ``params["a.b"][0] is nan``: NaN or infinite floats, integers beyond int64 and strings or keys
    with a lone UTF-16 surrogate (docs/STORE.md). Iterative; the depth is bounded by the caller."""
    found: list[str] = []
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        problem = _unportable(item)
        if problem:
            found.append(f"{where} {problem}")
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                shown = json.dumps(key)  # ASCII: a surrogate shows as \\udxxx
                if _unportable(key):
                    found.append(f"{where} has a key {shown} with a lone surrogate")
                stack.append((child, f"{where}[{shown}]"))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return found


def _unportable(item: object) -> str | None:
    if isinstance(item, float) and not math.isfinite(item):
        return f"is {item!r}"
    if isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63:
        return "is an integer beyond 64 bits"
    if isinstance(item, str):
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            return "holds a lone UTF-16 surrogate"
    return None


def nesting_depth_exceeds(value: object, limit: int) -> bool:
    """True when dicts/lists in ``value`` nest deeper than ``limit``; iterative, never recurses."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:16]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    cpu: float = Field(1.0, ge=MIN_CPU, le=256, allow_inf_nan=False)
    memory: str = Field("1Gi", max_length=MAX_QUANTITY_CHARS)
    gpus: int = Field(0, ge=0, le=64)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gpu" in data:
            data = dict(data)
            gpu = data.pop("gpu")
            if "gpus" in data and data["gpus"] != gpu:
                raise ValueError("resources.gpu and resources.gpus disagree")
            data["gpus"] = gpu
        return data

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if parse_memory(value) < MIN_MEMORY_BYTES:
            raise ValueError(f"memory must be at least {MIN_MEMORY_BYTES // 1024**2}Mi")
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)


def _plain(value: str, what: str) -> str:
    """Text an engine or ``exec`` can take: no NUL byte, encodable as UTF-8 (no lone surrogate)."""
    if "\x00" in value:
        raise ValueError(f"{what} must not contain a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} must be valid Unicode text") from exc
    return value


_ARGS_MAX_BYTES = 128 * 1024
"""Command line and environment, each: far below the kernel's ARG_MAX."""


class ContainerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=512, pattern=r"^[^\s\x00-\x1f\x7f]+$")
    cmd: list[str] = Field(default_factory=list, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict, max_length=1024)
    shm_size: str | None = Field(None, max_length=MAX_QUANTITY_CHARS)
    gpus: int | None = Field(None, ge=0, le=64)
    network_policy: Literal["none"] | str = Field("none", max_length=256)
    workdir: str = Field("/workspace", max_length=4096, pattern=r"^/")

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory(value)
        return value

    @field_validator("cmd")
    @classmethod
    def _cmd(cls, value: list[str]) -> list[str]:
        for arg in value:
            _plain(arg, "container.cmd")
        if sum(len(arg.encode()) + 1 for arg in value) > _ARGS_MAX_BYTES:
            raise ValueError(f"container.cmd is longer than {_ARGS_MAX_BYTES} bytes")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key or "=" in key:
                raise ValueError("container.env names must be non-empty and without '='")
            _plain(key, "container.env names")
            _plain(item, "container.env values")
        if sum(len(k.encode()) + len(v.encode()) + 2 for k, v in value.items()) > _ARGS_MAX_BYTES:
            raise ValueError(f"container.env is larger than {_ARGS_MAX_BYTES} bytes")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        return _plain(value, "container.workdir")


class JobSpec(BaseModel):
    """What to run and how to score it: the content of ``meta.json``."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(default_factory=new_job_id)
    task_type: str = Field("unknown", max_length=128)
    scorer: str = Field(min_length=1, max_length=256)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "scorer parameters: plain JSON, finite numbers, integers within 64 bits, no lone "
            "surrogates, at any depth (the schema states the number bounds for the top level)"
        ),
        json_schema_extra={
            "additionalProperties": {
                "anyOf": [
                    {"type": ["string", "boolean", "null", "array", "object"]},
                    {"type": "number", "minimum": -(2**63), "maximum": 2**63 - 1},
                ]
            }
        },
    )
    input_uri: str = Field("file://./input", max_length=4096)
    output_uri: str = Field("file://./output", max_length=4096)
    time_limit: int = Field(1800, gt=0, le=7 * 24 * 3600)
    resources: Resources = Field(default_factory=Resources)
    container: ContainerSpec | None = None
    ground_truth: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=lambda: list(DEFAULT_GROUND_TRUTH),
        max_length=256,
        description="globs (relative to input/) that participant code must never see; they "
        "add to the organiser's (settings limits.ground_truth), never replace them",
    )
    expected_outputs: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        None,
        max_length=1024,
        description="paths relative to output/ (e.g. 'pred.csv') the run must produce; "
        "default: the output/ files the scorer expects",
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "timeout" in data:
            data = dict(data)
            timeout = data.pop("timeout")
            if "time_limit" in data and data["time_limit"] != timeout:
                raise ValueError("timeout and time_limit disagree")
            data["time_limit"] = timeout
        return data

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if nesting_depth_exceeds(value, MAX_PARAMS_DEPTH):
            raise ValueError(f"params nest deeper than {MAX_PARAMS_DEPTH} levels")
        if info.context == STORED:
            return value  # a job stored before the rule below still reads (docs/STORE.md)
        if found := unportable_values(value):
            more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
            raise ValueError(
                "params must be plain JSON (finite numbers, integers within 64 bits, no lone "
                "surrogates): " + "; ".join(found[:5]) + more
            )
        return value

    @field_validator("scorer")
    @classmethod
    def _scorer(cls, value: str) -> str:
        parse_scorer_ref(value)  # a pinned version (name@1.0.0) must be well formed
        return value

    @field_validator("input_uri", "output_uri")
    @classmethod
    def _file_uri(cls, value: str) -> str:
        """Only the workspace's own folders (file://) are read and written: object storage is
        not supported yet, and a URI that would be silently ignored is refused."""
        if not value.startswith("file://"):
            scheme = value.split("://", 1)[0][:20] if "://" in value else "none"
            raise ValueError(
                f"only file:// URIs are supported (got scheme {scheme!r}); "
                "object storage is not supported yet"
            )
        return value

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        if not _JOB_ID_RE.match(value):
            raise ValueError("job_id must be 1-128 chars of letters, digits, '.', '_' or '-'")
        return value


class Artifact(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    size: int
    sha256: str
    media_type: str = "application/octet-stream"
    description: str = ""


MetricValue = float | dict[str, float]


class Result(BaseModel):
    """The outcome of scoring, written to ``output/result.json``."""

    summary: dict[str, float | bool | str] = Field(default_factory=dict)
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    timing: dict[str, float] = Field(default_factory=dict)
    resources: dict[str, float | int | str] = Field(default_factory=dict)
    versioning: dict[str, str] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    provenance: Provenance | None = Field(
        None, description="what produced this result (shared.provenance, docs/SCORERS.md)"
    )

    @property
    def ok(self) -> bool:
        return self.error is None


class RunOutcome(BaseModel):
    """What an executor reports about one run; also written to ``logs/run_info.json``."""

    job_id: str
    backend: str
    status: Literal["succeeded", "failed", "cancelled"]
    exit_code: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    image: str | None = None
    image_id: str | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    log_path: str | None = None
    log_truncated: bool = False
    error: ErrorInfo | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
