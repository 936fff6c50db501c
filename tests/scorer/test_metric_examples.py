"""The example workspaces of the probability, top-k, ordinal, multilabel and RMSLE scorers work:
their participant program runs (as the local backend runs it: ``python3 submission/predict.py``
from the workspace root) and its predictions score as meta.json says, with a sensible score."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.scorer.registry import ScorerRegistry
from shared.provenance import source_files
from shared.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("probabilities", 0.0, 1.2),  # log loss; 1.0986 is a uniform guess over 3 classes
        ("topk", 0.7, 1.0),
        ("ordinal", 0.7, 1.0),
        ("multilabel", 0.7, 1.0),
        ("rmsle", 0.0, 0.4),
    ],
)
def test_example_runs_and_scores(tmp_path: Path, name: str, low: float, high: float) -> None:
    ws = tmp_path / name
    shutil.copytree(EXAMPLES / name, ws, ignore=shutil.ignore_patterns("output", "logs"))
    subprocess.run(
        [sys.executable, "submission/predict.py"],
        cwd=ws,
        check=True,
        capture_output=True,
        timeout=60,
    )
    meta = json.loads((ws / "meta.json").read_text())
    scorer = ScorerRegistry.with_builtins().get(meta["scorer"])
    result = scorer.score(Workspace.at(ws), meta["params"])
    assert low <= result.summary["score"] <= high


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("roc_auc", "probabilities"),
        ("brier_score", "probabilities"),
        ("cohen_kappa", "ordinal"),
        ("hamming_loss", "multilabel"),
        ("regression_mape", "regression"),
    ],
)
def test_variant_scorers_name_their_own_module_in_provenance(name: str, module: str) -> None:
    """Scorers made by ``variants.variant`` must hash the module that computes their metrics,
    not only variants.py: a change there changes their scores."""
    fn = ScorerRegistry.with_builtins().get(name).fn
    assert fn.__name__ == name
    assert f"services.scorer.builtin.{module}" in [m.module for m in source_files(fn)]
