"""Scorers that share one metric set and differ only in the primary metric.

``roc_auc`` and ``log_loss`` read the same files and compute the same numbers; what differs is the
metric in the summary and whether higher is better. ``variant`` registers one such scorer around
a ``score(ws, params, primary)`` function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from shared.models import Result
from shared.scoring import ScorerDef, register
from shared.workspace import Workspace

P = TypeVar("P", bound=BaseModel)


def variant(
    score: Callable[[Workspace, P, str], Result],
    params: type[P],
    *,
    name: str,
    primary: str,
    task_type: str,
    description: str,
    expected_files: tuple[str, ...],
    higher_is_better: bool = True,
) -> ScorerDef[P]:
    """The scorer ``name``: ``score(ws, params, primary)`` under ``@register``, version 1.0.0."""

    @functools.wraps(score)  # __wrapped__: provenance hashes the module defining ``score``
    def fn(ws: Workspace, parsed: P) -> Result:
        return score(ws, parsed, primary)

    fn.__name__ = fn.__qualname__ = name
    return register(
        name,
        version="1.0.0",
        task_type=task_type,
        description=description,
        expected_files=expected_files,
        primary_metric=primary,
        higher_is_better=higher_is_better,
        params=params,
    )(fn)
