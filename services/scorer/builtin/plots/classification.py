"""Classification plots: the confusion matrix (counts and row-normalised) and per-class P/R/F1.

Up to :data:`FULL_LIMIT` classes the heatmaps show every class (cells shrink, labels thin out past
:data:`LABEL_LIMIT`); beyond it they show the :data:`TOP_N` classes with the most ground-truth rows
plus one "(other)" row and column holding everything else, so the picture stays readable and its
cost bounded whatever the number of labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.scorer.builtin.plots.figures import Plotter, draw
from shared.models import Artifact
from shared.workspace import Workspace

FULL_LIMIT = 300
TOP_N = 30
LABEL_LIMIT = 41
ANNOTATE_LIMIT = 20
BARS_LIMIT = 30
OTHER = "(other)"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ClassTable:
    """Labels in code order; codes of true and predicted labels; per-class scores and support."""

    labels: list[str]
    y_true: IntArray
    y_pred: IntArray
    precision: FloatArray
    recall: FloatArray
    f1: FloatArray
    support: IntArray


def plot_classification(ws: Workspace, table: ClassTable) -> dict[str, Artifact]:
    return draw(ws, lambda plotter: _draw(plotter, table))


def _draw(plotter: Plotter, table: ClassTable) -> None:
    names, matrix, shown = _confusion(table)
    _heatmap(plotter, names, matrix, normalised=False, shown=shown)
    _heatmap(plotter, names, matrix, normalised=True, shown=shown)
    _bars(plotter, table)


def _short(label: str, limit: int = 24) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _confusion(table: ClassTable) -> tuple[list[str], IntArray, str]:
    """The matrix to draw (rows true, columns predicted), its labels and a note on what it shows."""
    k = len(table.labels)
    if k <= FULL_LIMIT:
        keys = table.y_true * k + table.y_pred
        return table.labels, np.bincount(keys, minlength=k * k).reshape(k, k), f"all {k} classes"
    top = np.argsort(-table.support, kind="stable")[:TOP_N]
    slot = np.full(k, TOP_N, dtype=np.int64)  # every other class folds into the last slot
    slot[top] = np.arange(TOP_N)
    n = TOP_N + 1
    keys = slot[table.y_true] * n + slot[table.y_pred]
    matrix = np.bincount(keys, minlength=n * n).reshape(n, n)
    names = [table.labels[i] for i in top.tolist()] + [OTHER]
    return names, matrix, f"the {TOP_N} largest of {k} classes, the rest as {OTHER}"


def _heatmap(
    plotter: Plotter, names: list[str], matrix: IntArray, *, normalised: bool, shown: str
) -> None:
    k = len(names)
    side = min(max(5.0, 0.06 * k + 4.0), 14.0)
    font = 8 if k <= 30 else 6
    label = 0.4 + 0.011 * font * max(len(_short(name)) for name in names)  # inches of text
    figure = plotter.figure(side + label + 1.2, side + label, (label + 0.3, label + 0.3, 0.9, 0.7))
    axes = figure.add_subplot()
    if normalised:
        rows = matrix.sum(axis=1, keepdims=True)
        values = matrix / np.maximum(rows, 1)
        image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        title, name = "Confusion matrix, normalised over true labels", "confusion_normalized"
    else:
        values = matrix.astype(np.float64)
        image = axes.imshow(values, cmap="Blues", interpolation="nearest")
        title, name = "Confusion matrix, counts", "confusion_counts"
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_title(f"{title}\n({shown})")
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    step = max(1, int(np.ceil(k / LABEL_LIMIT)))
    ticks = np.arange(0, k, step)
    axes.set_xticks(ticks, [_short(names[i]) for i in ticks], rotation=90, fontsize=font)
    axes.set_yticks(ticks, [_short(names[i]) for i in ticks], fontsize=font)
    if k <= ANNOTATE_LIMIT:
        threshold = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalised else f"{int(value)}"
            colour = "white" if value > threshold else "black"
            axes.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    plotter.save(figure, name, f"{title.lower()}; rows true, columns predicted ({shown})")


def _bars(plotter: Plotter, table: ClassTable) -> None:
    in_gt = np.flatnonzero(table.support > 0)
    if len(in_gt) > BARS_LIMIT:
        chosen = in_gt[np.argsort(-table.support[in_gt], kind="stable")[:BARS_LIMIT]]
        shown = f"the {BARS_LIMIT} largest of {len(in_gt)} classes"
    else:
        chosen, shown = in_gt, f"all {len(in_gt)} classes"
    chosen = chosen[np.argsort(table.f1[chosen], kind="stable")]  # worst F1 on top
    n = len(chosen)
    text = 0.3 + 0.077 * max((len(_short(table.labels[i], 32)) for i in chosen), default=1)
    figure = plotter.figure(6.5 + text, max(3.0, 0.3 * n + 1.6), (text, 0.9, 0.2, 0.7))
    axes = figure.add_subplot()
    position = np.arange(n)
    height = 0.27
    for offset, values, label in (
        (-height, table.precision, "precision"),
        (0.0, table.recall, "recall"),
        (height, table.f1, "F1"),
    ):
        axes.barh(position + offset, values[chosen], height=height, label=label)
    axes.set_yticks(position, [_short(table.labels[i], 32) for i in chosen.tolist()], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_title(f"Per-class precision, recall and F1, worst F1 first\n({shown})")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3, fontsize=8, frameon=False)
    plotter.save(figure, "per_class_prf", f"per-class precision, recall and F1 ({shown})")
