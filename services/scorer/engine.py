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
from shared.limits import hidden_globs
from shared.models import DEFAULT_GROUND_TRUTH, JobSpec, Result
from shared.provenance import Provenance, Submission, build_provenance, local_submission
from shared.report import write_report_quietly
from shared.scoring import ScorerDef
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
    submission: Submission | None = None,
    spec: JobSpec | None = None,
) -> Result:
    """Score ``ws`` and (by default) write ``output/result.json``; never raises for bad input.

    ``spec``: the job's spec as its event carries it; it wins over the workspace's meta.json,
    which is then not read (docs/ARCHITECTURE.md, "One source of truth per job"). Without it,
    ``scorer``/``params`` or else meta.json name the scorer.

    Every result whose scorer was found carries its provenance (``shared.provenance``);
    ``submission`` says who submitted the job and when (default: the local user, no time).
    """
    started = time.perf_counter()
    name = scorer
    chosen_params: dict[str, Any] = {}
    found: ScorerDef[Any] | None = None
    try:
        spec = spec if spec is not None else _spec_or_none(ws, scorer)
        name = scorer or (spec.scorer if spec else None)
        assert name is not None  # _spec_or_none returns a spec whenever scorer is None
        chosen_params = dict(params) if params is not None else (dict(spec.params) if spec else {})
        found = registry.get(name)
        result = _run_scorer(found, ws, chosen_params)
    except AutoscorerError as exc:
        result = Result(error=exc.to_info())
    result.timing["score_s"] = round(time.perf_counter() - started, 6)
    if name:
        result.versioning.setdefault("scorer", name)
    if found is not None and name is not None:
        result.provenance = _provenance(
            ws, found, ref=name, params=chosen_params, spec=spec, submission=submission
        )
        result.timing["provenance_s"] = round(
            time.perf_counter() - started - result.timing["score_s"], 6
        )
    if write:
        try:
            atomic_write_text(ws.result_path, result.model_dump_json(indent=2))
        except OSError as exc:  # the result still travels (event, CLI output); say so in logs
            log.warning("could not write %s: %s", ws.result_path, exc.strerror)
        else:
            write_report_quietly(ws, result)  # output/report.html (shared.report)
    return result


def _provenance(
    ws: Workspace,
    scorer: ScorerDef[Any],
    *,
    ref: str,
    params: dict[str, Any],
    spec: JobSpec | None,
    submission: Submission | None,
) -> Provenance | None:
    """The result's provenance; a failure to build it is logged, never the job's failure."""
    try:
        return build_provenance(
            ws,
            scorer.info,
            ref=ref,
            params=params,
            ground_truth_globs=hidden_globs(spec) if spec else list(DEFAULT_GROUND_TRUTH),
            job_id=spec.job_id if spec and "job_id" in spec.model_fields_set else None,
            submission=submission or local_submission(),
        )
    except (OSError, ValueError) as exc:
        log.warning("could not record the provenance of %s: %r", ws.root, exc)
        return None


def _run_scorer(scorer: ScorerDef[Any], ws: Workspace, params: dict[str, Any]) -> Result:
    name = scorer.name
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
