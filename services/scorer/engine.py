"""Score one workspace: pick the scorer, run it, time it, write ``output/result.json``.

This is the one boundary where scoring failures become a ``Result`` with a standard error:
``AutoscorerError`` keeps its code; anything else a scorer raises is SCORE_ERROR (the scorer,
not the participant, is at fault).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from services.scorer.registry import ScorerRegistry
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.files import atomic_write_text
from shared.models import JobSpec, Result
from shared.workspace import Workspace

log = logging.getLogger(__name__)


def _spec_or_none(ws: Workspace, scorer_override: str | None) -> JobSpec | None:
    """meta.json is optional when the scorer is named explicitly."""
    if scorer_override is not None and not ws.meta_path.exists():
        return None
    return ws.load_spec()


def score_workspace(
    registry: ScorerRegistry,
    ws: Workspace,
    *,
    scorer: str | None = None,
    params: Mapping[str, Any] | None = None,
    write: bool = True,
) -> Result:
    """Score ``ws`` and (by default) write ``output/result.json``; never raises for bad input."""
    started = time.perf_counter()
    name = scorer
    try:
        spec = _spec_or_none(ws, scorer)
        name = scorer or (spec.scorer if spec else None)
        assert name is not None  # _spec_or_none returns a spec whenever scorer is None
        chosen_params = dict(params) if params is not None else (dict(spec.params) if spec else {})
        result = _run_scorer(registry, ws, name, chosen_params)
    except AutoscorerError as exc:
        result = Result(error=exc.to_info())
    result.timing["score_s"] = round(time.perf_counter() - started, 6)
    if name:
        result.versioning.setdefault("scorer", name)
    if write:
        try:
            atomic_write_text(ws.result_path, result.model_dump_json(indent=2))
        except OSError as exc:  # the result still travels (event, CLI output); say so in logs
            log.warning("could not write %s: %s", ws.result_path, exc.strerror)
    return result


def _run_scorer(
    registry: ScorerRegistry, ws: Workspace, name: str, params: dict[str, Any]
) -> Result:
    scorer = registry.get(name)
    try:
        return scorer.score(ws, params)
    except AutoscorerError:
        raise
    except Exception as exc:  # the boundary for scorer bugs
        log.exception("scorer %s crashed", name)
        raise AutoscorerError(
            ErrorCode.SCORE_ERROR,
            f"scorer {name} failed: {type(exc).__name__}: {exc}",
            stage=Stage.SCORING,
            details={"scorer": name, "exception": type(exc).__name__},
        ) from exc
