"""Regression plots: predicted against true values, and residuals (against predicted, histogram).

Scatter plots draw at most :data:`MAX_POINTS` points, a seeded uniform sample of the rows when
there are more (the title says so): drawing ten million markers would cost more than the scoring.
The residual histogram uses every row.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.scorer.builtin.plots.figures import Plotter, draw
from shared.models import Artifact
from shared.workspace import Workspace

MAX_POINTS = 20_000
MAX_BINS = 60

FloatArray = npt.NDArray[np.float64]


def _sample(n: int) -> tuple[npt.NDArray[np.int64] | slice, str]:
    if n <= MAX_POINTS:
        return slice(None), f"all {n} rows"
    chosen = np.sort(np.random.default_rng(0).choice(n, MAX_POINTS, replace=False))
    return chosen, f"a random {MAX_POINTS} of {n} rows"


def plot_regression(ws: Workspace, y_true: FloatArray, y_pred: FloatArray) -> dict[str, Artifact]:
    return draw(ws, lambda plotter: _draw(plotter, y_true, y_pred))


def _draw(plotter: Plotter, y_true: FloatArray, y_pred: FloatArray) -> None:
    rows, shown = _sample(len(y_true))
    true, pred = y_true[rows], y_pred[rows]
    alpha = 0.6 if len(true) <= 2000 else 0.25

    figure = plotter.figure(6.0, 6.0)
    axes = figure.add_subplot()
    axes.plot(true, pred, linestyle="none", marker=".", markersize=3, alpha=alpha)
    low = float(min(np.min(y_true), np.min(y_pred)))
    high = float(max(np.max(y_true), np.max(y_pred)))
    axes.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = true")
    axes.set_xlabel("true value")
    axes.set_ylabel("predicted value")
    axes.set_title(f"Predicted against true\n({shown})")
    axes.legend(loc="upper left", fontsize=8)
    plotter.save(figure, "pred_vs_true", f"predicted against true values ({shown})")

    residual = y_pred - y_true
    figure = plotter.figure(11.0, 4.5)
    left, right = figure.subplots(1, 2)
    left.plot(pred, residual[rows], linestyle="none", marker=".", markersize=3, alpha=alpha)
    left.axhline(0.0, color="black", linewidth=1)
    left.set_xlabel("predicted value")
    left.set_ylabel("residual (predicted - true)")
    left.set_title(f"Residuals against predicted\n({shown})")
    counts, edges = np.histogram(residual, bins=int(np.clip(np.sqrt(len(residual)), 10, MAX_BINS)))
    right.stairs(counts, edges, fill=True)
    right.set_xlabel("residual (predicted - true)")
    right.set_ylabel("rows")
    right.set_title(f"Residual histogram\n(all {len(residual)} rows)")
    plotter.save(figure, "residuals", f"residuals against predicted values ({shown}) and histogram")
