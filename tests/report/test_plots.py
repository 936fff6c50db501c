"""Plots as artifacts: each built-in scorer writes its PNGs to output/artifacts/ on the examples,
result.json lists them with the right size and sha256, and ``plots: false`` writes none."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from services.scorer.builtin.plots.classification import (
    FULL_LIMIT,
    TOP_N,
    ClassTable,
    plot_classification,
)
from services.scorer.builtin.plots.regression import MAX_POINTS, plot_regression
from services.scorer.registry import ScorerRegistry
from shared.models import Result
from shared.workspace import Workspace

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = {
    "classification": {"confusion_counts", "confusion_normalized", "per_class_prf"},
    "regression": {"pred_vs_true", "residuals"},
    "detection": {"pr_iou50", "pr_iou75", "ap_by_size"},
}
Scored = Callable[..., tuple[Workspace, Result]]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (the first chunk, by the PNG standard)."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_png(ws: Workspace, relative: str, size: int, sha256: str) -> tuple[int, int]:
    data = (ws.root / relative).read_bytes()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == sha256
    width, height = png_size(data)
    assert width > 100 and height > 100
    assert data.endswith(b"IEND\xaeB`\x82")  # complete, not cut short
    return width, height


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_scorer_writes_its_plots_with_sha256(scored: Scored, name: str) -> None:
    ws, result = scored(name)
    assert result.ok, result.error
    on_disk = json.loads(ws.result_path.read_text())["artifacts"]
    plots = {key: value for key, value in on_disk.items() if value["media_type"] == "image/png"}
    assert set(plots) == PLOTS[name]
    for key, artifact in plots.items():
        assert artifact["path"] == f"output/artifacts/{key}.png"
        assert artifact["description"]
        check_png(ws, artifact["path"], artifact["size"], artifact["sha256"])
    assert "artifacts_s" in result.timing


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_plots_false_writes_no_plot(scored: Scored, name: str) -> None:
    ws, result = scored(name, {"plots": False})
    assert result.ok, result.error
    assert not any(a.media_type == "image/png" for a in result.artifacts.values())
    assert not list(ws.root.glob("output/artifacts/*.png"))


def test_plots_default_on_and_the_param_is_in_the_schema(registry: ScorerRegistry) -> None:
    for name in (
        "classification_f1",
        "classification_accuracy",
        "regression_rmse",
        "detection_map",
    ):
        schema = registry.get(name).info.params_schema
        assert schema["properties"]["plots"]["default"] is True


def test_many_classes_show_the_largest_and_fold_the_rest(tmp_path: Path) -> None:
    """Past the full-view limit the heatmaps show the TOP_N largest classes plus "(other)"."""
    rng = np.random.default_rng(1)
    k, n = 1500, 60_000
    y_true = rng.integers(0, k, n).astype(np.int64)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n)).astype(np.int64)
    support = np.bincount(y_true, minlength=k).astype(np.int64)
    scores = rng.random(k)
    table = ClassTable(
        [f"class-{i}" for i in range(k)], y_true, y_pred, scores, scores, scores, support
    )
    artifacts = plot_classification(Workspace(tmp_path), table)
    counts = artifacts["confusion_counts"]
    assert f"the {TOP_N} largest of {k} classes" in counts.description
    width, height = check_png(Workspace(tmp_path), counts.path, counts.size, counts.sha256)
    assert max(width, height) < 2500  # bounded whatever the number of labels


def test_regression_scatter_is_sampled_past_the_point_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    y_true = rng.normal(size=MAX_POINTS * 3)
    artifacts = plot_regression(Workspace(tmp_path), y_true, y_true + rng.normal(size=len(y_true)))
    shown = artifacts["pred_vs_true"].description
    assert f"a random {MAX_POINTS} of {MAX_POINTS * 3} rows" in shown


def test_importing_the_scorers_does_not_import_matplotlib() -> None:
    """matplotlib loads on the first plot only (a job with plots: false never pays for it)."""
    code = (
        "import sys; import services.scorer.builtin.classification, "
        "services.scorer.builtin.regression, services.scorer.builtin.detection; "
        "print('matplotlib' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"


def test_labels_are_drawn_as_text_whatever_they_hold(tmp_path: Path) -> None:
    """Labels are data: ``$...$`` is not mathtext, glyphs missing from the font are no error."""
    labels = ["$\\frac{1}{0$", "猫", "<script>alert(1)</script>", "a" * 300]
    y = np.array([0, 1, 2, 3, 0, 1], dtype=np.int64)
    ones = np.ones(4)
    table = ClassTable(labels, y, y[::-1].copy(), ones, ones, ones, np.bincount(y, minlength=4))
    artifacts = plot_classification(Workspace(tmp_path), table)
    assert set(artifacts) == PLOTS["classification"]


def test_a_few_hundred_classes_are_all_shown(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    k, n = FULL_LIMIT, 30_000
    y_true = rng.integers(0, k, n).astype(np.int64)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n)).astype(np.int64)
    scores = rng.random(k)
    table = ClassTable(
        [f"c{i}" for i in range(k)],
        y_true,
        y_pred,
        scores,
        scores,
        scores,
        np.bincount(y_true, minlength=k).astype(np.int64),
    )
    artifacts = plot_classification(Workspace(tmp_path), table)
    normalised = artifacts["confusion_normalized"]
    assert f"all {k} classes" in normalised.description
    width, height = check_png(
        Workspace(tmp_path), normalised.path, normalised.size, normalised.sha256
    )
    assert 1000 < max(width, height) < 2500
