"""The scorer contract: a function plus its metadata, registered with ``@register("name")``.

A scorer is a plain function ``(workspace, params) -> Result``. ``register`` wraps it in a
:class:`ScorerDef` carrying a :class:`ScorerInfo`; nothing global is touched at import time. The
registry in ``services/scorer`` collects ``ScorerDef`` objects from modules and files and refuses
two scorers with the same name.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import (
    AutoscorerError,
    ErrorCode,
    Stage,
    data_error,
    scoring_error,
    validation_error,
)
from shared.models import Result
from shared.provenance import ModuleDigest, parse_scorer_ref, source_files, source_sha256
from shared.workspace import Workspace


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


P = TypeVar("P", bound=BaseModel)
S = TypeVar("S")


def find_scorer(scorers: Mapping[str, S], ref: str, version: Callable[[S], str]) -> S:
    """The scorer ``ref`` names: ``name``, or ``name@version`` (pinned: SCORER_NOT_FOUND unless
    exactly that version is the one held, named ``loaded_version`` in the error's details).
    One lookup for the scorer's registry and the gateway's catalogue of announced scorers."""
    try:
        name, pinned = parse_scorer_ref(ref)
        scorer = scorers[name]
    except (KeyError, ValueError):
        raise AutoscorerError(
            ErrorCode.SCORER_NOT_FOUND,
            f"no scorer named {ref!r}",
            stage=Stage.SCORING,
            details={"scorer": ref, "available": sorted(scorers)},
        ) from None
    loaded = version(scorer)
    if pinned is not None and loaded != pinned:
        raise version_not_loaded(name, pinned, loaded)
    return scorer


def version_not_loaded(name: str, pinned: str, loaded: str) -> AutoscorerError:
    """SCORER_NOT_FOUND for a spec pinning a version of ``name`` that is not the loaded one."""
    return AutoscorerError(
        ErrorCode.SCORER_NOT_FOUND,
        f"scorer {name!r} is loaded at version {loaded}, not the pinned {pinned}",
        stage=Stage.SCORING,
        details={"scorer": name, "version": pinned, "loaded_version": loaded},
    )


class ScorerInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    task_type: str
    description: str
    expected_files: tuple[str, ...]
    primary_metric: str
    higher_is_better: bool = True
    params_schema: dict[str, Any]
    source: str = "builtin"
    source_sha256: str | None = None
    """sha256 of the module file defining the scorer, taken when it was loaded (provenance)"""
    source_files: tuple[ModuleDigest, ...] = ()
    """sha256 of every module of its package the scorer uses (provenance)"""


class ScoreFn(Protocol[P]):  # type: ignore[misc]
    def __call__(self, ws: Workspace, params: P, /) -> Result: ...


@dataclass(frozen=True)
class ScorerDef(Generic[P]):
    """A registered scorer: metadata, its params model and the function."""

    info: ScorerInfo
    params_model: type[P]
    fn: Callable[[Workspace, P], Result] = field(repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    def parse_params(self, params: Mapping[str, Any]) -> P:
        try:
            return self.params_model.model_validate(dict(params))
        except ValidationError as exc:
            raise validation_error(
                ErrorCode.BAD_PARAMS,
                f"params do not fit scorer {self.info.name}",
                scorer=self.info.name,
                errors=_brief_errors(exc),
                error_count=exc.error_count(),
            ) from exc

    def score(self, ws: Workspace, params: Mapping[str, Any]) -> Result:
        """Validate params, check expected files, run the scorer, check and stamp its result.

        Every way of scoring (CLI, scorer service, gateway) comes through here, so this is where
        a result with a NaN or infinite number becomes SCORE_ERROR (the scorer's bug).
        """
        parsed = self.parse_params(params)
        for relative in self.info.expected_files:
            _require(ws, relative)
        result = _checked_result(self.info.name, self.fn(ws, parsed))
        result.versioning.setdefault("scorer", self.info.name)
        result.versioning.setdefault("version", self.info.version)
        return result

    def with_source(self, source: str) -> ScorerDef[P]:
        """This scorer as loaded from ``source``, with the sha256 of its module file now."""
        update = {
            "source": source,
            "source_sha256": source_sha256(self.fn),
            "source_files": tuple(source_files(self.fn)),
        }
        info = self.info.model_copy(update=update)
        return ScorerDef(info, self.params_model, self.fn)


def _brief_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """The first validation errors, without the input and with bounded text: params are
    untrusted and may be large or deep (docs/ERRORS.md: errors never echo unbounded input)."""
    return [
        {
            "loc": [str(part)[:100] for part in error["loc"][:10]],
            "msg": error["msg"][:200],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_context=False)[:20]
    ]


MAX_DEPTH = 32
"""How deep a result's numbers may nest (per-class tables are two levels)."""


def _require(ws: Workspace, relative: str) -> None:
    """MISSING_FILE, the organiser's for ``input/`` (ground truth), else the participant's."""
    if not (ws.root / relative).is_file():
        raise data_error(
            ErrorCode.MISSING_FILE,
            f"required file {relative} is missing",
            file=relative,
            path=relative,
        )


def nonfinite_values(result: Result) -> list[str]:
    """Dotted paths of the numbers in a result that are NaN or infinite (or nested too deep)."""
    sections = {
        "summary": result.summary,
        "metrics": result.metrics,
        "timing": result.timing,
        "resources": result.resources,
    }
    return [path for path, value in _numbers(sections, "", 0) if not _finite(value)]


def _numbers(value: object, path: str, depth: int) -> Iterator[tuple[str, object]]:
    if depth > MAX_DEPTH:
        yield path, math.nan  # a table this deep is no metric: refuse it like a NaN
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        yield path, value


def _finite(value: object) -> bool:
    try:
        return math.isfinite(value)  # type: ignore[arg-type]
    except (TypeError, OverflowError, ValueError):
        return False


def _checked_result(name: str, result: object) -> Result:
    """The scorer's result, validated again (a scorer may have changed it after building it),
    or SCORE_ERROR: no Result, a NaN or infinite number, or values the model does not allow."""
    if not isinstance(result, Result):
        raise scoring_error(
            ErrorCode.SCORE_ERROR,
            f"scorer {name} returned {type(result).__name__}, not a Result",
            scorer=name,
        )
    bad = nonfinite_values(result)
    if bad:
        shown = ", ".join(p[:200] for p in bad[:5])
        raise scoring_error(
            ErrorCode.SCORE_ERROR,
            f"scorer {name} returned {len(bad)} non-finite value(s) (NaN or infinity): {shown}",
            scorer=name,
            count=len(bad),
            paths=[p[:200] for p in bad[:5]],
        )
    try:
        return Result.model_validate(
            {field: getattr(result, field) for field in Result.model_fields}
        )
    except ValidationError as exc:
        where = [".".join(str(part) for part in e["loc"])[:200] for e in exc.errors()[:5]]
        raise scoring_error(
            ErrorCode.SCORE_ERROR,
            f"scorer {name} returned values a Result does not allow at {', '.join(where)}",
            scorer=name,
            count=exc.error_count(),
            paths=where,
        ) from exc


def register(
    name: str,
    *,
    version: str,
    task_type: str,
    description: str,
    expected_files: tuple[str, ...],
    primary_metric: str,
    higher_is_better: bool = True,
    params: type[P] = NoParams,  # type: ignore[assignment]
) -> Callable[[Callable[[Workspace, P], Result]], ScorerDef[P]]:
    """Declare a scorer. The registry, not this decorator, owns name uniqueness."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"scorer name {name!r} must be letters, digits, '_' or '-'")

    def wrap(fn: Callable[[Workspace, P], Result]) -> ScorerDef[P]:
        info = ScorerInfo(
            name=name,
            version=version,
            task_type=task_type,
            description=description,
            expected_files=expected_files,
            primary_metric=primary_metric,
            higher_is_better=higher_is_better,
            params_schema=params.model_json_schema(),
        )
        return ScorerDef(info, params, fn)

    return wrap
