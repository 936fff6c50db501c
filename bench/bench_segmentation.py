"""Benchmark ``semantic_segmentation`` against the straightforward numpy definition.

Run ``python -m bench.bench_segmentation`` (300 image pairs of 512 x 512, 21 classes, VOC-like
ignore borders) or ``--images 50``; best of ``--repeat`` interleaved runs. The reference,
:func:`reference`, is how the metrics are usually written: per image, per class, boolean masks
for ground truth and prediction, their intersection and union summed (mmsegmentation's
``intersect_and_union`` written with masks). Both sides read the same PNG files with Pillow, so
one ratio is end to end (the reference's reading timed on its own); the other compares the
counting alone on already decoded masks. Values agree to 1e-9.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.scorer.builtin.segmentation import (
    Accumulator,
    SegmentationParams,
    segmentation_metrics,
    semantic_segmentation,
)
from shared.workspace import Workspace


def reference(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore_index: int | None
) -> dict[str, float]:
    """mIoU, mDice, pixel accuracy, mean accuracy as docs/SCORERS.md defines them, per-class
    boolean masks per image (the tests check the scorer against this too)."""
    inter, union, area_gt, area_pred = (np.zeros(num_classes) for _ in range(4))
    correct, total = 0, 0
    for gt, pred in pairs:
        valid = gt != ignore_index if ignore_index is not None else np.ones(gt.shape, bool)
        for c in range(num_classes):
            g, p = (gt == c) & valid, (pred == c) & valid
            inter[c] += np.count_nonzero(g & p)
            union[c] += np.count_nonzero(g | p)
            area_gt[c] += np.count_nonzero(g)
            area_pred[c] += np.count_nonzero(p)
        correct += int(np.count_nonzero((gt == pred) & valid))
        total += int(np.count_nonzero(valid))
    present, has_gt = union > 0, area_gt > 0
    iou = inter[present] / union[present]
    return {
        "mIoU": float(iou.mean()),
        "mDice": float((2 * inter[present] / (area_gt + area_pred)[present]).mean()),
        "pixel_accuracy": correct / total,
        "mean_accuracy": float((inter[has_gt] / area_gt[has_gt]).mean()),
        "fwIoU": float((area_gt[present] / total * iou).sum()),
    }


def make(root: Path, images: int, size: int, classes: int, seed: int) -> None:
    """Blocky random label maps with 255 borders; predictions are the truth with noise."""
    rng = np.random.default_rng(seed)
    (root / "input" / "gt").mkdir(parents=True)
    (root / "output" / "pred").mkdir(parents=True)
    for i in range(images):
        blocks = rng.integers(0, classes, size=(size // 32, size // 32), dtype=np.uint8)
        gt = np.kron(blocks, np.ones((32, 32), dtype=np.uint8))
        pred = gt.copy()
        noise = rng.random(gt.shape) < 0.1
        pred[noise] = rng.integers(0, classes, size=int(noise.sum()), dtype=np.uint8)
        gt[::32, :] = 255
        Image.fromarray(gt).save(root / "input" / "gt" / f"{i:05d}.png")
        Image.fromarray(pred).save(root / "output" / "pred" / f"{i:05d}.png")


def read_pairs(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    names = sorted(p.name for p in (root / "input" / "gt").glob("*.png"))
    return [
        (
            np.asarray(Image.open(root / "input" / "gt" / n)),
            np.asarray(Image.open(root / "output" / "pred" / n)),
        )
        for n in names
    ]


def accumulate(pairs: list[tuple[np.ndarray, np.ndarray]], params: dict[str, Any]) -> None:
    """Our counting alone on already decoded masks (what the reference loop times)."""
    counter = Accumulator(SegmentationParams.model_validate(params))
    for i, (gt, pred) in enumerate(pairs):
        counter.add(gt, pred, str(i))
    segmentation_metrics(counter.result(), [str(c) for c in range(counter.k)])


def main() -> None:
    parser = argparse.ArgumentParser()
    for name, default in (
        ("images", 300),
        ("size", 512),
        ("classes", 21),
        ("seed", 0),
        ("repeat", 3),
    ):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    params: dict[str, Any] = {"num_classes": args.classes, "ignore_index": 255}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make(root, args.images, args.size, args.classes, args.seed)
        ref_s = read_s = ours_s = counts_s = float("inf")
        for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
            started = time.perf_counter()
            pairs = read_pairs(root)
            read_s = min(read_s, time.perf_counter() - started)
            started = time.perf_counter()
            ref = reference(pairs, args.classes, 255)
            ref_s = min(ref_s, time.perf_counter() - started)
            started = time.perf_counter()
            accumulate(pairs, params)
            counts_s = min(counts_s, time.perf_counter() - started)
            del pairs
            started = time.perf_counter()
            result = semantic_segmentation.score(Workspace.at(root), params)
            ours_s = min(ours_s, time.perf_counter() - started)
    diff = max(
        abs(float(result.metrics[name]) - value)  # type: ignore[arg-type]
        for name, value in ref.items()
    )
    print(f"{args.images} image pairs of {args.size}x{args.size}, {args.classes} classes")
    print(
        f"reference: read {read_s:.2f} s + per-class masks {ref_s:.2f} s; ours (incl. reading) "
        f"{ours_s:.2f} s; ratio end to end {ours_s / (read_s + ref_s):.3f}; on decoded masks "
        f"ours {counts_s:.2f} s, ratio {counts_s / ref_s:.3f}; max abs diff {diff:.1e}"
    )
    assert diff <= 1e-9


if __name__ == "__main__":
    main()
