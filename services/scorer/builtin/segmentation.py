"""``semantic_segmentation``: mIoU, per-class IoU, Dice and pixel accuracy from PNG label masks.

``input/gt/<name>.png`` and ``output/pred/<name>.png`` are single-channel PNGs (8- or 16-bit
greyscale, or a palette image whose indices are the labels) holding one class index per pixel.
Every metric comes from one dataset-wide confusion matrix: for 8-bit masks each image pair is a
single ``np.bincount`` over ``gt << 8 | pred`` (a 256 x 256 joint histogram, which also answers the
range checks and the ignored pixels without masking), otherwise a ``bincount`` over the valid
pixels. Definitions (those of mmsegmentation's ``eval_metrics``) are in docs/SCORERS.md.
"""

from __future__ import annotations

import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.scorer.builtin.classification import _per_class
from shared.errors import ErrorCode, data_error
from shared.models import MetricValue, Result
from shared.scoring import register
from shared.workspace import Workspace

GT_DIR = "input/gt"
PRED_DIR = "output/pred"
MAX_PIXELS = 1 << 26  # per mask (8192 x 8192); a larger PNG is refused before it is decoded
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODES = {
    "L": np.uint8,
    "P": np.uint8,
    "1": np.uint8,
    "I;16": np.uint16,
    "I;16B": np.uint16,
    "I": np.int32,
}  # some Pillow versions open 16-bit greyscale PNGs as 32-bit "I"
EXAMPLES = 5
DECODE_THREADS = min(4, os.cpu_count() or 1)
WINDOW = 64  # image pairs decoded ahead at most

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Mask = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]


class SegmentationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(ge=1, le=65536, description="labels are 0 .. num_classes - 1")
    ignore_index: int | None = Field(
        255, ge=0, le=65535, description="ground-truth value of pixels left out (None: none)"
    )
    class_names: list[str] | None = Field(
        None, description="a name per class for the per-class tables (default: the index)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SegmentationParams:
        if self.ignore_index is not None and self.ignore_index < self.num_classes:
            raise ValueError("ignore_index must not be a class index (>= num_classes)")
        names = self.class_names
        if names is not None and (len(names) != self.num_classes or len(set(names)) != len(names)):
            raise ValueError("class_names needs num_classes distinct names")
        return self

    def keys(self) -> list[str]:
        return self.class_names or [str(c) for c in range(self.num_classes)]


@dataclass(frozen=True, slots=True)
class Confusion:
    """Pixels counted by (true class, predicted class), over every image."""

    matrix: IntArray  # (K, K): rows ground truth, columns prediction
    n_images: int
    n_ignored: int


def mask_names(ws: Workspace, relative: str) -> list[str]:
    """The ``*.png`` files directly in a mask directory, sorted; MISSING_FILE if it is absent."""
    folder = ws.root / relative
    if not folder.is_dir():
        missing = f"directory {relative}/ is missing"
        raise data_error(ErrorCode.MISSING_FILE, missing, file=relative, path=relative)
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png" and p.is_file())


def paired_names(ws: Workspace) -> list[str]:
    """Mask names present on both sides; MISMATCH naming the files one side lacks."""
    gt, pred = mask_names(ws, GT_DIR), mask_names(ws, PRED_DIR)
    if not gt:
        raise data_error(ErrorCode.BAD_FORMAT, f"{GT_DIR}/ has no .png mask", file=GT_DIR)
    if gt != pred:
        missing = sorted(set(gt) - set(pred))
        extra = sorted(set(pred) - set(gt))
        raise data_error(
            ErrorCode.MISMATCH,
            f"{PRED_DIR}/ must hold one mask per ground-truth mask: {len(missing)} missing "
            f"(e.g. {missing[:EXAMPLES]}), {len(extra)} without ground truth "
            f"(e.g. {extra[:EXAMPLES]})",
            file=PRED_DIR,
            missing=missing[:EXAMPLES],
            missing_count=len(missing),
            extra=extra[:EXAMPLES],
            extra_count=len(extra),
        )
    return gt


def read_mask(path: Path, relative: str) -> Mask:
    """One single-channel PNG as a 2-D array of labels (uint8, or uint16 for 16-bit PNGs)."""
    _refuse_oversized(path, relative)
    try:
        with Image.open(path, formats=["PNG"]) as image:
            mode = image.mode
            if mode not in MODES:
                raise data_error(
                    ErrorCode.BAD_FORMAT,
                    f"{relative} is a {mode} image; a label mask is a single-channel PNG "
                    "(8- or 16-bit greyscale, or palette indices)",
                    file=relative,
                    mode=mode,
                )
            array = np.asarray(image, dtype=MODES[mode])
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise data_error(
            ErrorCode.PARSE_ERROR, f"{relative} is not a readable PNG: {exc}", file=relative
        ) from exc
    if mode == "I":
        if array.size and (int(array.min()) < 0 or int(array.max()) > 65535):
            raise data_error(
                ErrorCode.BAD_FORMAT, f"{relative} has values outside 0..65535", file=relative
            )
        array = array.astype(np.uint16)
    mask: Mask = array
    return mask


def _refuse_oversized(path: Path, relative: str) -> None:
    """BAD_FORMAT for a PNG whose header declares more than MAX_PIXELS, read before Pillow
    sees the file (so its decompression-bomb warning, process-wide state, never fires)."""
    with path.open("rb") as handle:
        head = handle.read(24)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        if width * height > MAX_PIXELS:
            raise data_error(
                ErrorCode.BAD_FORMAT,
                f"{relative} has {width}x{height} pixels, over {MAX_PIXELS}",
                file=relative,
                size=[width, height],
            )


def _out_of_range(values: npt.NDArray[np.bool_], relative: str, what: str, limit: str) -> Exception:
    bad = np.flatnonzero(values)
    return data_error(
        ErrorCode.BAD_FORMAT,
        f"{relative} has {what} values outside {limit}, e.g. {bad[:EXAMPLES].tolist()}",
        file=relative,
        values=bad[:EXAMPLES].tolist(),
    )


class Accumulator:
    """Adds image pairs into the confusion matrix, checking every value against the params."""

    def __init__(self, params: SegmentationParams) -> None:
        self.k = params.num_classes
        self.ignore = params.ignore_index
        self.joint = np.zeros(1 << 16, dtype=np.int64)  # 8-bit pairs: gt << 8 | pred
        self.matrix = np.zeros((self.k, self.k), dtype=np.int64)
        self.n_ignored = 0
        self.n_images = 0
        gt_ok = np.arange(1 << 16) < self.k
        if self.ignore is not None:
            gt_ok[self.ignore] = True
        self.gt_ok = gt_ok

    def add(self, gt: Mask, pred: Mask, name: str) -> None:
        gt_file, pred_file = f"{GT_DIR}/{name}", f"{PRED_DIR}/{name}"
        if gt.shape != pred.shape:
            raise data_error(
                ErrorCode.MISMATCH,
                f"{pred_file} is {pred.shape[1]}x{pred.shape[0]} pixels, its ground truth "
                f"{gt.shape[1]}x{gt.shape[0]}",
                file=pred_file,
                size=[pred.shape[1], pred.shape[0]],
                expected=[gt.shape[1], gt.shape[0]],
            )
        self.n_images += 1
        if gt.dtype == np.uint8 and pred.dtype == np.uint8:
            self._add_8bit(gt, pred, gt_file, pred_file)
        else:
            self._add_wide(gt, pred, gt_file, pred_file)

    def _add_8bit(self, gt: Mask, pred: Mask, gt_file: str, pred_file: str) -> None:
        key = gt.astype(np.intp)  # bincount works on intp: cast once, shift in place
        key <<= 8
        key |= pred
        joint = np.bincount(key.ravel(), minlength=1 << 16)
        if int(gt.max()) >= self.k:  # a SIMD max first: the histogram is read only if needed
            rows = joint.reshape(256, 256).sum(axis=1) > 0
            if np.any(rows & ~self.gt_ok[:256]):
                raise _out_of_range(rows & ~self.gt_ok[:256], gt_file, "label", self._gt_range())
        if int(pred.max()) >= self.k:
            columns = joint.reshape(256, 256).sum(axis=0) > 0
            raise _out_of_range(
                columns & (np.arange(256) >= self.k), pred_file, "label", f"0..{self.k - 1}"
            )
        self.joint += joint

    def _add_wide(self, gt: Mask, pred: Mask, gt_file: str, pred_file: str) -> None:
        truth = gt.astype(np.int64).ravel()
        guess = pred.astype(np.int64).ravel()
        seen = np.bincount(truth, minlength=1 << 16) > 0
        if np.any(seen & ~self.gt_ok):
            raise _out_of_range(seen & ~self.gt_ok, gt_file, "label", self._gt_range())
        if int(guess.max()) >= self.k:
            guessed = np.bincount(guess, minlength=1 << 16) > 0
            raise _out_of_range(
                guessed & (np.arange(1 << 16) >= self.k), pred_file, "label", f"0..{self.k - 1}"
            )
        valid = truth < self.k
        self.n_ignored += int(len(truth) - np.count_nonzero(valid))
        pairs = np.bincount(truth[valid] * self.k + guess[valid], minlength=self.k * self.k)
        self.matrix += pairs.reshape(self.k, self.k)

    def _gt_range(self) -> str:
        extra = "" if self.ignore is None else f" and ignore_index {self.ignore}"
        return f"0..{self.k - 1}{extra}"

    def result(self) -> Confusion:
        joint = self.joint.reshape(256, 256)
        n = min(self.k, 256)
        matrix = self.matrix.copy()
        matrix[:n, :n] += joint[:n, :n]
        ignored = self.n_ignored + int(joint[n:].sum())
        return Confusion(matrix=matrix, n_images=self.n_images, n_ignored=ignored)


def read_pair(ws: Workspace, name: str) -> tuple[Mask, Mask]:
    gt = read_mask(ws.root / GT_DIR / name, f"{GT_DIR}/{name}")
    return gt, read_mask(ws.root / PRED_DIR / name, f"{PRED_DIR}/{name}")


def confusion(ws: Workspace, params: SegmentationParams) -> Confusion:
    """Masks are decoded by a few threads (Pillow decodes without the GIL), a window at a time
    so memory stays bounded, and added in name order, so the first bad file is always the same."""
    accumulator = Accumulator(params)
    names = paired_names(ws)
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for start in range(0, len(names), WINDOW):
            window = names[start : start + WINDOW]
            for name, (gt, pred) in zip(
                window, pool.map(lambda n: read_pair(ws, n), window), strict=True
            ):
                accumulator.add(gt, pred, name)
    return accumulator.result()


def segmentation_metrics(counts: Confusion, keys: list[str]) -> dict[str, MetricValue]:
    """The metrics of docs/SCORERS.md; a class absent from both ground truth and prediction
    (union 0) has no IoU or Dice and is left out of every mean and table."""
    matrix = counts.matrix
    total = int(matrix.sum())
    if total == 0:
        raise data_error(ErrorCode.BAD_FORMAT, f"{GT_DIR}/: every pixel is ignored", file=GT_DIR)
    tp = np.diag(matrix).astype(np.float64)
    in_gt = matrix.sum(axis=1).astype(np.float64)
    in_pred = matrix.sum(axis=0).astype(np.float64)
    union = in_gt + in_pred - tp
    present = union > 0
    safe = np.where(present, union, 1.0)
    iou = tp / safe
    dice = 2 * tp / np.where(present, in_gt + in_pred, 1.0)
    has_gt = in_gt > 0
    accuracy = tp / np.where(has_gt, in_gt, 1.0)
    frequency = in_gt / total
    return {
        "mIoU": float(np.mean(iou[present])),
        "mDice": float(np.mean(dice[present])),
        "pixel_accuracy": float(tp.sum() / total),
        "mean_accuracy": float(np.mean(accuracy[has_gt])),
        "fwIoU": float(np.sum(frequency[present] * iou[present])),
        "iou_per_class": _per_class(keys, iou, present),
        "dice_per_class": _per_class(keys, dice, present),
        "accuracy_per_class": _per_class(keys, accuracy, has_gt),
        "n_images": float(counts.n_images),
        "n_pixels": float(total),
        "n_ignored_pixels": float(counts.n_ignored),
        "n_classes_present": float(np.count_nonzero(present)),
    }


@register(
    "semantic_segmentation",
    version="1.0.0",
    task_type="segmentation",
    description="Semantic segmentation from PNG label masks: mIoU (primary), per-class IoU, "
    "Dice, pixel and mean class accuracy over the dataset-wide confusion matrix.",
    expected_files=(),
    primary_metric="mIoU",
    params=SegmentationParams,
)
def semantic_segmentation(ws: Workspace, params: SegmentationParams) -> Result:
    started = time.perf_counter()
    counts = confusion(ws, params)
    read_s = time.perf_counter() - started
    metrics = segmentation_metrics(counts, params.keys())
    miou = metrics["mIoU"]
    assert isinstance(miou, float)
    summary: dict[str, Any] = {
        "mIoU": miou,
        "score": miou,
        "pixel_accuracy": metrics["pixel_accuracy"],
    }
    return Result(
        summary=summary,
        metrics=metrics,
        timing={"read_s": read_s, "metrics_s": time.perf_counter() - started - read_s},
    )
