"""Workspaces for the report and plot tests: the repository's examples, with their predictions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.scorer.engine import score_workspace
from services.scorer.registry import ScorerRegistry
from shared.models import Result
from shared.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def registry() -> ScorerRegistry:
    return ScorerRegistry.with_builtins()


@pytest.fixture
def example(tmp_path: Path) -> Callable[[str], Workspace]:
    """A copy of ``examples/<name>`` whose participant program has run (its own predict.py, run
    by this interpreter from the workspace, as the local backend would), so output/ holds its
    predictions."""

    def make(name: str) -> Workspace:
        root = tmp_path / name
        shutil.copytree(EXAMPLES / name, root, ignore=shutil.ignore_patterns("output", "logs"))
        subprocess.run(
            [sys.executable, "submission/predict.py"], cwd=root, check=True, capture_output=True
        )
        return Workspace.at(root)

    return make


@pytest.fixture
def scored(
    example: Callable[[str], Workspace], registry: ScorerRegistry
) -> Callable[..., tuple[Workspace, Result]]:
    """Score an example with its meta.json's scorer (``params`` override it), writing
    output/result.json as the scorer service does."""

    def run(name: str, params: dict[str, object] | None = None) -> tuple[Workspace, Result]:
        ws = example(name)
        return ws, score_workspace(registry, ws, params=params)

    return run
