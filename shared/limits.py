"""The operator's caps on what a job may ask for, and the one check every path goes through.

The operator sets the limits; the job only asks within them (CONVENTIONS item 15). A spec's
``resources.memory``, ``resources.cpu``, ``container.shm_size``, ``time_limit`` and GPUs are
checked against :class:`SandboxLimits` by :func:`check_within_caps` — at admission (gateway,
scheduler) and again by every executor backend right before it starts anything, so a spec that
reached a backend some other way (CLI, a replayed event) is refused all the same. A spec above a
cap is ``RESOURCE_LIMIT_EXCEEDED`` (stage ``config``, the submitter's fault, not retried).

Ground truth: the globs hidden from participant code are the UNION of the organiser's
(:attr:`SandboxLimits.ground_truth`, default :data:`shared.models.DEFAULT_GROUND_TRUTH`) and the
spec's own (:func:`hidden_globs`); a spec can add globs, never remove one.

The same settings carry the sandbox's ulimits (``nofile``, ``fsize``; core dumps are always off)
and the operator's cap on a run's output.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.models import DEFAULT_GROUND_TRUTH, JobSpec, parse_memory


class SandboxLimits(BaseModel):
    """``limits:`` in the settings; each backend's config may narrow (or widen) them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_memory: str = Field("16Gi", description="largest resources.memory a job may ask for")
    max_cpu: float = Field(
        8.0,
        gt=0,
        le=256,
        allow_inf_nan=False,
        description="most resources.cpu (cores) a job may ask for",
    )
    max_shm: str = Field("2Gi", description="largest container.shm_size (/dev/shm)")
    max_time_limit_s: int = Field(
        24 * 3600, gt=0, le=7 * 24 * 3600, description="longest time_limit a job may ask for"
    )
    max_gpus: int = Field(8, ge=0, le=64, description="most GPUs a job may ask for")
    max_output: str = Field(
        "1Gi",
        description="most bytes a run may leave in output/ (with the "
        "backend's own output cap, the smaller wins)",
    )
    ground_truth: list[str] = Field(
        default_factory=lambda: list(DEFAULT_GROUND_TRUTH),
        max_length=256,
        description="input/ globs never shown to participant code; a spec only adds to them",
    )
    nofile: int = Field(4096, ge=64, le=1 << 20, description="open files per process (ulimit -n)")
    fsize: str = Field(
        "1Gi",
        description="largest file a run may write (ulimit -f); core dumps "
        "are always off (ulimit -c 0)",
    )

    @field_validator("max_memory", "max_shm", "max_output", "fsize")
    @classmethod
    def _quantity(cls, value: str) -> str:
        parse_memory(value)
        return value

    @property
    def max_memory_bytes(self) -> int:
        return parse_memory(self.max_memory)

    @property
    def max_shm_bytes(self) -> int:
        return parse_memory(self.max_shm)

    @property
    def max_output_bytes(self) -> int:
        return parse_memory(self.max_output)

    @property
    def fsize_bytes(self) -> int:
        return parse_memory(self.fsize)


def requested_gpus(spec: JobSpec) -> int:
    """The most GPUs any field of the spec asks for."""
    container = spec.container.gpus if spec.container and spec.container.gpus else 0
    return max(spec.resources.gpus, container)


def _excesses(spec: JobSpec, caps: SandboxLimits) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def over(field: str, asked: object, cap: object) -> None:
        found.append({"field": field, "asked": asked, "cap": cap})

    if spec.resources.memory_bytes > caps.max_memory_bytes:
        over("resources.memory", spec.resources.memory, caps.max_memory)
    if spec.resources.cpu > caps.max_cpu:
        over("resources.cpu", spec.resources.cpu, caps.max_cpu)
    shm = spec.container.shm_size if spec.container else None
    if shm is not None and parse_memory(shm) > caps.max_shm_bytes:
        over("container.shm_size", shm, caps.max_shm)
    if spec.time_limit > caps.max_time_limit_s:
        over("time_limit", spec.time_limit, caps.max_time_limit_s)
    if requested_gpus(spec) > caps.max_gpus:
        over("resources.gpus", requested_gpus(spec), caps.max_gpus)
    return found


def check_within_caps(spec: JobSpec, caps: SandboxLimits) -> None:
    """Refuse a spec that asks for more than ``caps`` allow: ``RESOURCE_LIMIT_EXCEEDED``.

    ``details.exceeded`` lists every field over its cap (``field``, ``asked``, ``cap``).
    """
    exceeded = _excesses(spec, caps)
    if not exceeded:
        return
    names = ", ".join(item["field"] for item in exceeded)
    raise AutoscorerError(
        ErrorCode.RESOURCE_LIMIT_EXCEEDED,
        f"the job asks for more than this platform allows: {names}",
        stage=Stage.CONFIG,
        details={"exceeded": exceeded},
    )


def hidden_globs(spec: JobSpec, caps: SandboxLimits | None = None) -> list[str]:
    """The ground-truth globs of a run: the organiser's, then any the spec adds (no duplicates)."""
    organiser = caps.ground_truth if caps is not None else list(DEFAULT_GROUND_TRUTH)
    return list(dict.fromkeys([*organiser, *spec.ground_truth]))


def output_cap_bytes(caps: SandboxLimits, backend_cap: int) -> int:
    """The output bytes a run may leave: the smaller of the backend's cap and the operator's."""
    return min(backend_cap, caps.max_output_bytes)


__all__ = [
    "SandboxLimits",
    "check_within_caps",
    "hidden_globs",
    "output_cap_bytes",
    "requested_gpus",
]
