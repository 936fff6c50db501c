"""Detection plots from the COCO evaluation's precision array (no second evaluation).

``CocoEvaluation.precision`` is (T, R, K, A, M): IoU threshold, the 101 recall points, category,
area range, max detections; -1 where a category has no ground truth in that setting. The curves
read area ``all`` at the last ``max_dets`` (as ``AP50``/``AP75`` do): the mean over categories at
each recall point, and the :data:`WORST` categories with the lowest AP at that IoU.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.scorer.builtin.coco.evaluate import CocoEvaluation
from services.scorer.builtin.coco.params import coco_recall_thresholds
from services.scorer.builtin.plots.figures import Plotter, draw
from shared.models import Artifact
from shared.workspace import Workspace

WORST = 5
CURVE_IOUS = ((0.5, "pr_iou50"), (0.75, "pr_iou75"))

FloatArray = npt.NDArray[np.float64]


def _index(values: tuple[float, ...] | tuple[str, ...], wanted: float | str) -> int | None:
    for i, value in enumerate(values):
        if isinstance(wanted, str) and value == wanted:
            return i
        if isinstance(wanted, float) and isinstance(value, float) and abs(value - wanted) < 1e-9:
            return i
    return None


def _mean_valid(values: FloatArray, axis: int) -> FloatArray:
    """Mean over ``axis`` of the entries > -1 (pycocotools' rule); -1 where none is."""
    valid = values > -1
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    result: FloatArray = np.where(count > 0, total / np.maximum(count, 1), -1.0)
    return result


def plot_detection(ws: Workspace, ev: CocoEvaluation) -> dict[str, Artifact]:
    return draw(ws, lambda plotter: _draw(plotter, ev))


def _draw(plotter: Plotter, ev: CocoEvaluation) -> None:
    area = _index(ev.params.area_labels, "all")
    if area is not None:
        for iou, name in CURVE_IOUS:
            t = _index(ev.params.iou_thresholds, iou)
            if t is not None:
                _curves(plotter, ev, ev.precision[t, :, :, area, -1], iou, name)
    _sizes(plotter, ev)


def _curves(
    plotter: Plotter, ev: CocoEvaluation, precision: FloatArray, iou: float, name: str
) -> None:
    """``precision`` is (R, K) for one IoU threshold."""
    recall = coco_recall_thresholds()
    ap = _mean_valid(precision, axis=0)  # per category
    has_gt = np.flatnonzero(ap > -1)
    figure = plotter.figure(7.0, 5.5)
    axes = figure.add_subplot()
    worst = has_gt[np.argsort(ap[has_gt], kind="stable")[:WORST]]
    for k in worst.tolist():
        label = f"{ev.category_keys[k][:28]} (AP {ap[k]:.3f})"
        axes.plot(recall, precision[:, k], linewidth=1.2, alpha=0.8, label=label)
    if len(has_gt):
        overall = _mean_valid(precision[:, has_gt], axis=1)
        mean_ap = float(np.mean(ap[has_gt]))
        axes.plot(
            recall,
            overall,
            color="black",
            linewidth=2.5,
            label=f"all categories (AP {mean_ap:.3f})",
        )
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    shown = f"mean of {len(has_gt)} categories and the {len(worst)} with the lowest AP"
    axes.set_title(f"Precision-recall at IoU {iou:g}\n({shown})")
    if len(has_gt):
        axes.legend(loc="lower left", fontsize=7)
    plotter.save(figure, name, f"precision-recall curves at IoU {iou:g}: {shown}")


def _sizes(plotter: Plotter, ev: CocoEvaluation) -> None:
    """AP@[IoUs] (and AP@0.5 when 0.5 is a threshold) per area range, at the last max_dets."""
    labels = ev.params.area_labels
    series = [("AP (all IoU thresholds)", ev.precision[..., -1])]
    t50 = _index(ev.params.iou_thresholds, 0.5)
    if t50 is not None:
        series.append(("AP at IoU 0.5", ev.precision[t50 : t50 + 1, ..., -1]))
    figure = plotter.figure(7.0, 4.5)
    axes = figure.add_subplot()
    position = np.arange(len(labels))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        flat = values.reshape(-1, len(labels))  # (T*R*K, A)
        ap = _mean_valid(flat, axis=0)
        shown = np.where(ap > -1, ap, 0.0)
        bars = axes.bar(position + (i - (len(series) - 1) / 2) * width, shown, width, label=label)
        axes.bar_label(bars, [f"{v:.3f}" if v > -1 else "n/a" for v in ap.tolist()], fontsize=7)
    axes.set_xticks(position, [label[:20] for label in labels])
    axes.set_ylim(0.0, 1.05)
    axes.set_xlabel("object size (area range)")
    axes.set_ylabel("AP")
    axes.set_title("AP by object size (n/a: no ground truth of that size)")
    axes.legend(loc="upper right", fontsize=8)
    plotter.save(figure, "ap_by_size", "AP per area range (object size)")
